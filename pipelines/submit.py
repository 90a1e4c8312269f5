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
from typing import Callable, Dict, Optional

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


def submit_kfp(job: Dict, host: str, experiment: str, name: str, parameters: Dict[str, str],
               token: Optional[str] = None, wait: bool = False, timeout: float = 3600,
               progress: Callable[[str], None] = print) -> Submission:
    import kfp
    import yaml

    with contextlib.redirect_stdout(sys.stderr):  # the kfp client prints links on stdout
        return _submit_kfp(kfp, yaml, job, host, experiment, name, parameters, token, wait, timeout,
                           progress)


def _submit_kfp(kfp, yaml, job, host, experiment, name, parameters, token, wait, timeout, progress):
    client = kfp.Client(host=host, existing_token=token)
    exp = client.create_experiment(name=experiment)
    pipeline_name = job.get("displayName") or job["pipelineSpec"]["pipelineInfo"]["name"]
    with tempfile.TemporaryDirectory() as tmp:
        # KFP takes the PipelineSpec (the IR YAML), not Vertex's PipelineJob wrapper.
        package = os.path.join(tmp, "pipeline.yaml")
        with open(package, "w") as fh:
            yaml.safe_dump(job["pipelineSpec"], fh, sort_keys=True)
        pipeline_id = client.get_pipeline_id(pipeline_name)
        if pipeline_id is None:
            pipeline = client.upload_pipeline(package, pipeline_name=pipeline_name,
                                              description="cd4ml bike-demand pipeline")
            pipeline_id = pipeline.pipeline_id
            versions = client.list_pipeline_versions(pipeline_id, sort_by="created_at desc", page_size=1)
            version_id = versions.pipeline_versions[0].pipeline_version_id
        else:
            version = client.upload_pipeline_version(package, pipeline_version_name=name,
                                                     pipeline_id=pipeline_id)
            version_id = version.pipeline_version_id
    values = dict(_compiled_defaults(job))
    values.update(parameters)
    run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=name, params=values,
                              pipeline_id=pipeline_id, version_id=version_id,
                              pipeline_root=job.get("runtimeConfig", {}).get("gcsOutputDirectory"))
    result = Submission("kfp", run.run_id, name, url=f"{host.rstrip('/')}/#/runs/details/{run.run_id}",
                        pipeline_id=pipeline_id, version_id=version_id,
                        experiment_id=exp.experiment_id, parameters=values,
                        state=str(run.state or "submitted"))
    progress(f"submitted run {name} ({run.run_id}) to {host}, experiment {experiment}")
    if wait:
        final = client.wait_for_run_completion(run.run_id, timeout=timeout, sleep_duration=5)
        result.state = str(final.state)
        progress(f"run {name}: {result.state}")
    return result


def _compiled_defaults(job: Dict) -> Dict[str, str]:
    values = job.get("runtimeConfig", {}).get("parameterValues", {})
    if values:
        return dict(values)
    return {k: v.get("stringValue", "") for k, v in job.get("runtimeConfig", {}).get("parameters", {}).items()}


def submit_vertex(job_path: str, job: Dict, project: str, region: str, name: str,
                  parameters: Dict[str, str], wait: bool = False,
                  progress: Callable[[str], None] = print) -> Submission:
    try:
        from google.cloud import aiplatform
    except ImportError as exc:  # pragma: no cover - installed in the pipeline environment
        raise RuntimeError("Vertex AI submit needs google-cloud-aiplatform in the environment") from exc
    aiplatform.init(project=project, location=region)
    pipeline_job = aiplatform.PipelineJob(
        display_name=name, template_path=job_path, job_id=name.replace("_", "-"),
        pipeline_root=job.get("runtimeConfig", {}).get("gcsOutputDirectory"),
        parameter_values=parameters, labels=job.get("labels", {}), enable_caching=None)
    pipeline_job.submit()
    try:
        url = pipeline_job._dashboard_uri()  # private in aiplatform; only a convenience link
    except Exception:  # noqa: BLE001
        url = ""
    result = Submission("vertex", pipeline_job.resource_name, name, url=url, parameters=parameters)
    progress(f"submitted Vertex AI pipeline job {name} in {project}/{region}")
    if wait:
        pipeline_job.wait()
        result.state = pipeline_job.state.name.replace("PIPELINE_STATE_", "").lower()
        progress(f"run {name}: {result.state}")
    return result


def submit(job_path: str, config, span: Optional[int] = None, reason: str = "",
           mae_bound: Optional[float] = None, wait: bool = False, token: Optional[str] = None,
           timeout: float = 3600, commit: Optional[str] = None,
           progress: Callable[[str], None] = print) -> Submission:
    """Submit the compiled job at `job_path` with config's KFP host, or to Vertex AI without one."""
    job = kubeflow_runner.load_job(job_path)
    commit = commit or job.get("labels", {}).get("cd4ml-git-commit") or "unknown"
    name = run_name(config.pipeline_name, commit, reason)
    parameters = kubeflow_runner.parameter_values(job, span=span, mae_bound=mae_bound)
    if config.kfp_host:
        return submit_kfp(job, config.kfp_host, config.kfp_experiment, name, parameters,
                          token=token if token is not None else read_token(), wait=wait,
                          timeout=timeout, progress=progress)
    if config.gcp_project:
        return submit_vertex(job_path, job, config.gcp_project, config.gcp_region, name, parameters,
                             wait=wait, progress=progress)
    raise ValueError("nowhere to submit: set CD4ML_KFP_HOST (Kubeflow Pipelines endpoint, or --host) "
                     "or CD4ML_GCP_PROJECT (Vertex AI Pipelines, or --project)")


def as_json(submission: Submission) -> str:
    return json.dumps(dataclasses.asdict(submission), indent=2, sort_keys=True)
