"""Batch scoring as a Kubeflow job: `cd4ml predict` in one task of the pipeline image.

`cd4ml compile --batch INPUT OUTPUT` writes a PipelineJob (the same JSON wrapper as the training
job) whose one task runs `python -m cd4ml.cli predict` with the registry the job was compiled for.
Its runtime parameters (`source`, `destination`, `version`, `beam_args`) default to what was
compiled and can be set per run (a KFP recurring run, a Vertex AI schedule); `destination` may hold
`{date}`, the run's UTC date, so a daily schedule writes a new prefix each day. The task's
`summary` artifact is `cd4ml predict --summary`'s JSON: the version, rows scored and rejected, and
what the task used, measured inside it (pipelines/usage.py). Caching is off: the same parameters
on a new day are new rows.

(No `from __future__ import annotations` here: the kfp SDK reads the component's annotations as types.)
"""

import json
import os
import tempfile
from typing import Dict

from pipelines.config import PipelineConfig

JOB_NAME = "cd4ml-batch-scoring"
TASK = "batch-score"
JOB_LABEL = "cd4ml-job"


def is_batch_job(job: Dict) -> bool:
    return job.get("labels", {}).get(JOB_LABEL) == "batch-scoring"


def pipeline_spec(config: PipelineConfig, source: str, destination: str, version: str = "",
                  beam_args: str = "") -> Dict:
    """The KFP v2 PipelineSpec (IR), compiled by the kfp SDK from a container component."""
    import yaml
    from kfp import compiler, dsl

    @dsl.container_component
    def batch_score(source: str, destination: str, version: str, beam_args: str,
                    summary: dsl.Output[dsl.Artifact]):
        return dsl.ContainerSpec(
            image=config.image, command=["python", "-m", "cd4ml.cli", "predict"],
            args=[source, destination, "--registry", config.registry, "--data-root", config.data_root,
                  "--version", version, "--beam-args", beam_args, "--summary", summary.path])

    @dsl.pipeline(name=JOB_NAME, description="score rows with a model version (Beam RunInference)")
    def job(source: str = source, destination: str = destination, version: str = version,
            beam_args: str = beam_args):
        batch_score(source=source, destination=destination, version=version,
                    beam_args=beam_args).set_caching_options(False)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "batch.yaml")
        compiler.Compiler().compile(job, path)
        with open(path) as fh:
            return yaml.safe_load(fh)


def compile_batch_job(config: PipelineConfig, output_path: str, source: str, destination: str,
                      version: str = "", commit: str = "") -> Dict:
    """Write the batch-scoring PipelineJob JSON to `output_path` and return it."""
    from pipelines import kubeflow_runner

    kubeflow_runner.check_cluster_config(config)
    for name, value in (("INPUT", source), ("OUTPUT", destination)):
        if not value.startswith("gs://"):
            raise kubeflow_runner.ClusterConfigError(
                f"{name} is {value!r}, a path on this machine that no Kubeflow pod can read; give a gs:// path")
    spec = pipeline_spec(config, source, destination, version, " ".join(config.beam_pipeline_args))
    defaults = {name: body.get("defaultValue", "")
                for name, body in spec["root"]["inputDefinitions"]["parameters"].items()}
    job = {"displayName": JOB_NAME, "pipelineSpec": spec,
           "labels": {JOB_LABEL: "batch-scoring",
                      "cd4ml-git-commit": kubeflow_runner.label_value(
                          commit or kubeflow_runner.git_commit(config.source_dir))},
           "runtimeConfig": {"gcsOutputDirectory": config.pipeline_root, "parameterValues": defaults}}
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(output_path + ".tmp", "w") as fh:
        json.dump(job, fh, indent=2, sort_keys=True)
    os.replace(output_path + ".tmp", output_path)
    return job
