"""TFX's Kubeflow V2 container entrypoint, measured: what the compiled job's tasks run.

`python -m pipelines.measured_executor ARGS` runs `tfx.orchestration.kubeflow.v2.container
.kubeflow_v2_run_executor ARGS` in this process under a usage meter (pipelines/usage.py), then
adds what the task used (CPU and wall seconds, peak resident memory, MB read and written) to the
metadata of each output artifact in the ExecutorOutput it wrote, under contract.USAGE_METADATA.
A launcher copies that metadata into the cluster's ML Metadata with the artifact, so a run on
Kubeflow or Vertex AI records what each pod used, measured inside the pod (a container runtime's
own figures include its own overhead; Kubernetes keeps none after the pod is gone).
"""

from __future__ import annotations

import json
import runpy
import sys
from typing import List

from cd4ml.contract import USAGE_METADATA
from pipelines import usage

ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"


def output_file(argv: List[str]) -> str:
    """Where the entrypoint writes its ExecutorOutput (from the ExecutorInput it was given)."""
    executor_input = json.loads(argv[argv.index("--json_serialized_invocation_args") + 1])
    return executor_input["outputs"]["outputFile"]


def add_usage(path: str, used: dict):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.dsl.io import fileio

    if not fileio.exists(path):
        return
    written = pipeline_spec_pb2.ExecutorOutput()
    with fileio.open(path, "r") as fh:
        json_format.Parse(fh.read(), written, ignore_unknown_fields=True)
    for listed in written.artifacts.values():
        for artifact in listed.artifacts:
            artifact.metadata[USAGE_METADATA] = used
    with fileio.open(path, "w") as fh:
        fh.write(json_format.MessageToJson(written))


def main(argv: List[str]) -> int:
    code = 0
    with usage.Meter() as meter:
        sys.argv = [ENTRYPOINT, *argv]
        try:
            runpy.run_module(ENTRYPOINT, run_name="__main__", alter_sys=True)
        except SystemExit as exc:  # absl's app.run always exits
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if code == 0:
        add_usage(output_file(argv), meter.usage.as_dict())
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
