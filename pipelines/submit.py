"""Start a run of the compiled pipeline job on Kubeflow Pipelines (kfp client) or Vertex AI.

No TensorFlow here: the compiled job (`cd4ml compile`) is plain JSON, and a run only chooses its
runtime parameter values (span, thresholds; see kubeflow_runner.parameter_values). `cd4ml submit`,
`cd4ml watch --submit`, drift retrains and the Cloud Function all call `submit(...)`.

Auth follows each platform's usual way:
- KFP: the kfp client's own (KF_PIPELINES_* variables, IAP client ids, ~/.config/kfp/context.json),
  plus a bearer token from `--token-file` / KFP_TOKEN_FILE or KFP_TOKEN when given;
- Vertex AI: application default credentials (`gcloud auth application-default login`, or the
  service account of the workload).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import sys
import tempfile
from typing import Callable, Dict, Optional, Tuple

from pipelines import kubeflow_runner

FINAL_STATES = ("succeeded", "failed", "skipped", "error", "canceled", "cancelled")


@dataclasses.dataclass
class Submission:
    platform: str            # "kfp" or "vertex"
    run_id: str
    run_name: str
    url: str = ""
    pipeline_id: str = ""
    version_id: str = ""
    experiment_id: str = ""
    parameters: Dict[str, str] = dataclasses.field(default_factory=dict)
    state: str = "submitted"

    @property
    def succeeded(self) -> bool:
        return self.state.lower() == "succeeded"


def run_name(pipeline_name: str, commit: str, reason: str = "", now: Optional[datetime.datetime] = None) -> str:
    """`<pipeline>-<commit>-<reason>-<UTC timestamp>`: a run says which code it ran and why."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    parts = [pipeline_name, commit or "unknown"] + ([reason] if reason else []) + [now.strftime("%Y%m%d-%H%M%S")]
    return kubeflow_runner.label_value("-".join(parts))


def read_token(token_file: Optional[str] = None) -> Optional[str]:
    token_file = token_file or os.environ.get("KFP_TOKEN_FILE")
    if token_file:
        with open(os.path.expanduser(token_file)) as fh:
            return fh.read().strip() or None
    return os.environ.get("KFP_TOKEN") or None


@dataclasses.dataclass
class RunRequest:
    """One run of a compiled job: what to start and how to follow it, whatever the platform."""

    job_path: str
    job: Dict                      # the compiled PipelineJob JSON (kubeflow_runner.load_job)
    name: str                      # run_name(...)
    parameters: Dict[str, str]     # runtime parameter values (kubeflow_runner.parameter_values)
    wait: bool = False
    timeout: float = 3600
    progress: Callable[[str], None] = print

    @property
    def pipeline_name(self) -> str:
        return self.job.get("displayName") or self.job["pipelineSpec"]["pipelineInfo"]["name"]

    @property
    def pipeline_root(self) -> Optional[str]:
        return self.job.get("runtimeConfig", {}).get("gcsOutputDirectory")


def submit_kfp(request: RunRequest, host: str, experiment: str, token: Optional[str] = None) -> Submission:
    import kfp

    with contextlib.redirect_stdout(sys.stderr):  # the kfp client prints links on stdout
        client = kfp.Client(host=host, existing_token=token)
        exp = client.create_experiment(name=experiment)
        pipeline_id, version_id = _upload(client, request)
        values = dict(_compiled_defaults(request.job))
        values.update(request.parameters)
        run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=request.name, params=values,
                                  pipeline_id=pipeline_id, version_id=version_id,
                                  pipeline_root=request.pipeline_root)
        result = Submission("kfp", run.run_id, request.name, url=f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
                            pipeline_id=pipeline_id, version_id=version_id, experiment_id=exp.experiment_id,
                            parameters=values, state=str(run.state or "submitted"))
        request.progress(f"submitted run {request.name} ({run.run_id}) to {host}, experiment {experiment}")
        if request.wait:
            final = client.wait_for_run_completion(run.run_id, timeout=request.timeout, sleep_duration=5)
            result.state = str(final.state)
            request.progress(f"run {request.name}: {result.state}")
    return result


def _upload(client, request: RunRequest) -> Tuple[str, str]:
    """(pipeline id, version id): the pipeline on first upload, else a new version of it."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        # KFP takes the PipelineSpec (the IR YAML), not Vertex's PipelineJob wrapper.
        package = os.path.join(tmp, "pipeline.yaml")
        with open(package, "w") as fh:
            yaml.safe_dump(request.job["pipelineSpec"], fh, sort_keys=True)
        pipeline_id = client.get_pipeline_id(request.pipeline_name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(package, pipeline_name=request.pipeline_name,
                                              description="cd4ml bike-demand pipeline")
            versions = client.list_pipeline_versions(pipeline.pipeline_id, sort_by="created_at desc", page_size=1)
            return pipeline.pipeline_id, versions.pipeline_versions[0].pipeline_version_id
        version = client.upload_pipeline_version(package, pipeline_version_name=request.name,
                                                 pipeline_id=pipeline_id)
        return pipeline_id, version.pipeline_version_id


def _compiled_defaults(job: Dict) -> Dict[str, str]:
    values = job.get("runtimeConfig", {}).get("parameterValues", {})
    if values:
        return dict(values)
    return {k: v.get("stringValue", "") for k, v in job.get("runtimeConfig", {}).get("parameters", {}).items()}


def submit_vertex(request: RunRequest, project: str, region: str) -> Submission:
    try:
        from google.cloud import aiplatform
    except ImportError as exc:  # pragma: no cover - installed in the pipeline environment
        raise RuntimeError("Vertex AI submit needs google-cloud-aiplatform in the environment") from exc
    aiplatform.init(project=project, location=region)
    pipeline_job = aiplatform.PipelineJob(
        display_name=request.name, template_path=request.job_path, job_id=request.name.replace("_", "-"),
        pipeline_root=request.pipeline_root, parameter_values=request.parameters,
        labels=request.job.get("labels", {}), enable_caching=None)
    pipeline_job.submit()
    try:
        url = pipeline_job._dashboard_uri()  # private in aiplatform; only a convenience link
    except Exception:  # noqa: BLE001 - a missing link must not fail a submitted run
        url = ""
    result = Submission("vertex", pipeline_job.resource_name, request.name, url=url, parameters=request.parameters)
    request.progress(f"submitted Vertex AI pipeline job {request.name} in {project}/{region}")
    if request.wait:
        pipeline_job.wait()
        result.state = pipeline_job.state.name.replace("PIPELINE_STATE_", "").lower()
        request.progress(f"run {request.name}: {result.state}")
    return result


def submit(job_path: str, config, span: Optional[int] = None, reason: str = "",
           mae_bound: Optional[float] = None, wait: bool = False, token: Optional[str] = None,
           timeout: float = 3600, commit: Optional[str] = None,
           progress: Callable[[str], None] = print) -> Submission:
    """Submit the compiled job at `job_path` with config's KFP host, or to Vertex AI without one."""
    job = kubeflow_runner.load_job(job_path)
    commit = commit or job.get("labels", {}).get("cd4ml-git-commit") or "unknown"
    request = RunRequest(job_path, job, run_name(job.get("displayName") or config.pipeline_name, commit, reason),
                         kubeflow_runner.job_values(job, span=span, mae_bound=mae_bound),
                         wait=wait, timeout=timeout, progress=progress)
    if config.kfp_host:
        return submit_kfp(request, config.kfp_host, config.kfp_experiment,
                          token=token if token is not None else read_token())
    if config.gcp_project:
        return submit_vertex(request, config.gcp_project, config.gcp_region)
    raise ValueError("nowhere to submit: set CD4ML_KFP_HOST (Kubeflow Pipelines endpoint, or --host) "
                     "or CD4ML_GCP_PROJECT (Vertex AI Pipelines, or --project)")


def as_json(submission: Submission) -> str:
    return json.dumps(dataclasses.asdict(submission), indent=2, sort_keys=True)
