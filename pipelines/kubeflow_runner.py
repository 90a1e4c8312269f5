"""Compile the same `create_pipeline(config)` into a KFP v2 pipeline job (KubeflowV2DagRunner).

The output is the PipelineJob JSON (`displayName`, `labels`, `pipelineSpec`, `runtimeConfig`) that
Vertex AI Pipelines and Kubeflow Pipelines v2 run. What differs from the laptop comes from config:

- the image (`CD4ML_IMAGE`), which carries this repository on its PYTHONPATH;
- a `gs://` pipeline root, data root and registry (a local path would be a path on *this* machine,
  which no pod can read: refused with a clear message);
- Beam arguments (`CD4ML_BEAM_ARGS`, or `dataflow_beam_args(config)` for Dataflow);
- runtime parameters, so one compiled spec serves every run: `range_config` (which span
  CsvExampleGen reads), `eval_config` (the blessing thresholds) and the registry's state
  (`serving_state`, `hyperparameters_state`: pipelines/run_state.py). Their defaults
  come from config; `parameter_values(...)` builds per-run values without TensorFlow (submit,
  the Cloud Function).

The graph is the local runner's, whole: no resolver (open-source KFP has no resolver executor), and
CsvExampleGen needs no driver (its executor resolves the span: components/example_gen.py). TFX
still compiles its driver as a `lifecycle.preCacheCheck` hook, which Vertex AI runs and
open-source KFP ignores; both ingest the same span.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from typing import Callable, Dict, List, Optional

from cd4ml.contract import MAE
from components.evaluation import metric_name
from pipelines import batch_job
from pipelines.config import PipelineConfig
from pipelines.run_state import RUN_PARAMETERS

RANGE_CONFIG = "range_config"
EVAL_CONFIG = "eval_config"


class ClusterConfigError(ValueError):
    """The configuration cannot run on a cluster (e.g. a local pipeline root)."""


def check_cluster_config(config: PipelineConfig):
    problems = []
    for field, env in (("pipeline_root", "CD4ML_PIPELINE_ROOT"), ("data_root", "CD4ML_DATA_ROOT"),
                       ("registry", "CD4ML_REGISTRY")):
        value = getattr(config, field)
        if not value.startswith("gs://"):
            problems.append(f"{field} is {value!r}, a path on this machine that no Kubeflow pod can "
                            f"read; set {env}=gs://BUCKET/... (or --{field.replace('_', '-')})")
    if problems:
        raise ClusterConfigError("cannot compile for Kubeflow:\n  " + "\n  ".join(problems))


def dataflow_beam_args(config: PipelineConfig) -> str:
    """Beam arguments that run TFX's Beam-based components on Dataflow with the pipeline image."""
    if not config.gcp_project:
        raise ClusterConfigError("Dataflow needs a project: set CD4ML_GCP_PROJECT (or --project)")
    return " ".join([
        "--runner=DataflowRunner",
        f"--project={config.gcp_project}",
        f"--region={config.gcp_region}",
        f"--temp_location={config.pipeline_root.rstrip('/')}/beam-tmp",
        f"--sdk_container_image={config.image}",
        "--experiments=use_runner_v2",
    ])


def git_commit(source_dir: str) -> str:
    """The short commit of the source tree ('unknown' outside git); '-dirty' when it has changes."""
    try:
        commit = subprocess.run(["git", "-C", source_dir, "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", source_dir, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def label_value(text: str) -> str:
    """A value Vertex/KFP accept as a label: lower case, [a-z0-9_-], at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def range_config_json(span: Optional[int]) -> str:
    """CsvExampleGen's RangeConfig as JSON; '' means 'the latest span'."""
    if span is None:
        return ""
    return json.dumps({"staticRange": {"startSpanNumber": int(span), "endSpanNumber": int(span)}})


def _attach_runtime_parameters(pipeline, config: PipelineConfig):
    from google.protobuf import json_format
    from tfx.orchestration import data_types

    by_id = {c.id: c for c in pipeline.components}
    gen = by_id["CsvExampleGen"].exec_properties
    gen[RANGE_CONFIG] = data_types.RuntimeParameter(
        name=RANGE_CONFIG, ptype=str, default=range_config_json(config.span))
    evaluator = by_id["Evaluator"].exec_properties
    current = evaluator[EVAL_CONFIG]  # TFX keeps proto exec properties as JSON strings
    if not isinstance(current, str):
        current = json_format.MessageToJson(current)
    evaluator[EVAL_CONFIG] = data_types.RuntimeParameter(
        name=EVAL_CONFIG, ptype=str, default=json.dumps(json.loads(current), sort_keys=True))


def _component(pipeline, node_id: str):
    return {c.id: c for c in pipeline.components}[node_id]


def set_resources(job: Dict, requests: Dict[str, Dict[str, float]]) -> List[str]:
    """Each task's container requests (cpuRequest in CPUs, memoryRequest in GB) where `requests`
    names its component; returns the tasks it set."""
    spec = job["pipelineSpec"]
    done = []
    for task, body in sorted(spec["root"]["dag"]["tasks"].items()):
        if task in requests:
            label = spec["components"][body["componentRef"]["name"]]["executorLabel"]
            spec["deploymentSpec"]["executors"][label]["container"]["resources"] = dict(requests[task])
            done.append(task)
    return done


def measure_tasks(job: Dict):
    """Every TFX task runs under pipelines/measured_executor.py, which adds what the task used to
    its output artifacts' metadata (the lifecycle hook, a driver, is left as it is)."""
    from pipelines import measured_executor

    for executor in job["pipelineSpec"]["deploymentSpec"]["executors"].values():
        command = executor.get("container", {}).get("command", [])
        if command[-1:] == [measured_executor.ENTRYPOINT]:
            command[-1] = measured_executor.__name__


def compile_pipeline(config: PipelineConfig, output_path: str, commit: Optional[str] = None,
                     requests: Optional[Dict[str, Dict[str, float]]] = None) -> Dict:
    """Write the pipeline job JSON to `output_path` and return it as a dict; `requests`: each
    component's resource requests (set_resources)."""
    check_cluster_config(config)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as kfv2

    from pipelines.pipeline import create_pipeline

    pipeline = create_pipeline(config)
    _attach_runtime_parameters(pipeline, config)
    runner = kfv2.KubeflowV2DagRunner(
        config=kfv2.KubeflowV2DagRunnerConfig(display_name=config.pipeline_name,
                                              default_image=config.image,
                                              use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
        output_filename=os.path.basename(output_path))
    defaults = {name: c.exec_properties[key].default for name, c, key in (
        (RANGE_CONFIG, _component(pipeline, "CsvExampleGen"), RANGE_CONFIG),
        (EVAL_CONFIG, _component(pipeline, "Evaluator"), EVAL_CONFIG))}
    defaults.update({name: "" for name in RUN_PARAMETERS})  # "": the components read the registry as it is
    job = runner.run(pipeline, parameter_values=defaults, write_out=False)
    measure_tasks(job)
    job.setdefault("labels", {})
    job["labels"]["cd4ml-git-commit"] = label_value(commit or git_commit(config.source_dir))
    job["labels"]["cd4ml-pipeline"] = label_value(config.pipeline_name)
    if requests:
        set_resources(job, requests)
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    tmp = output_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(job, fh, indent=2, sort_keys=True)
    os.replace(tmp, output_path)
    return job


# --- per-run values, without TensorFlow (submit, watch, the Cloud Function) -----------------------

def load_job(path: str) -> Dict:
    with open(path) as fh:
        job = json.load(fh)
    if "pipelineSpec" not in job:
        raise ValueError(f"{path}: not a KFP v2 pipeline job (no pipelineSpec); run `cd4ml compile`")
    return job


def default_parameter(job: Dict, name: str) -> str:
    values = job.get("runtimeConfig", {}).get("parameterValues", {})
    if name in values:
        return values[name]
    params = job.get("runtimeConfig", {}).get("parameters", {})
    return params.get(name, {}).get("stringValue", "")


@dataclasses.dataclass
class Roots:
    data_root: str
    registry: str


def _task_constant(job: Dict, task: str, name: str) -> str:
    source = job["pipelineSpec"]["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"]
    value = source.get("constant", source.get("constantValue"))
    return next(iter(value.values())) if isinstance(value, dict) else value


def compiled_roots(job: Dict) -> Roots:
    """The data root and registry the job was compiled with (what its tasks read)."""
    return Roots(_task_constant(job, "CsvExampleGen", "input_base"), _task_constant(job, "ServingBaseline", "registry"))


def job_values(job: Dict, span: Optional[int] = None, mae_bound: Optional[float] = None,
               local: Callable[[str], str] = str) -> Dict[str, str]:
    """One run's parameter values for either compiled job: the training job's (run_values, on the
    roots it was compiled with, mapped through `local`); the batch-scoring job takes its compiled
    defaults (pipelines/batch_job.py)."""
    if batch_job.is_batch_job(job):
        if span is not None or mae_bound is not None:
            raise ValueError("the batch-scoring job takes no --span or --mae-bound; compile it with other "
                             "defaults (cd4ml compile --batch INPUT OUTPUT)")
        return {}
    roots = compiled_roots(job)
    return run_values(job, local(roots.data_root), local(roots.registry), span=span, mae_bound=mae_bound)


def run_values(job: Dict, data_root: str, registry: str, span: Optional[int] = None,
               mae_bound: Optional[float] = None) -> Dict[str, str]:
    """Every runtime parameter of one run: the span (the latest in the data root unless given) and
    the registry's state fixed now, so that KFP's cache answers a task only when what it reads is
    unchanged (pipelines/run_state.py); the thresholds when given."""
    from pipelines import spans
    from pipelines.run_state import run_parameters

    span = spans.resolve_span(data_root, span)
    values = parameter_values(job, span=span, mae_bound=mae_bound)
    values.update(run_parameters(registry, span))
    return values


def parameter_values(job: Dict, span: Optional[int] = None, mae_bound: Optional[float] = None,
                     mae_regression_tolerance: Optional[float] = None) -> Dict[str, str]:
    """Runtime parameter values for one run: the compiled defaults with the given overrides."""
    values: Dict[str, str] = {}
    if span is not None:
        values[RANGE_CONFIG] = range_config_json(span)
    if mae_bound is not None or mae_regression_tolerance is not None:
        eval_config = json.loads(default_parameter(job, EVAL_CONFIG))

        def patch(node):
            # Thresholds may sit on the metric or in per_slice_thresholds; TFX writes proto field
            # names (snake_case), json_format camelCase: accept both.
            if isinstance(node, list):
                for item in node:
                    patch(item)
            if not isinstance(node, dict):
                return
            for key, value in node.items():
                if key in ("value_threshold", "valueThreshold") and mae_bound is not None:
                    value["upper_bound" if "upper_bound" in value else "upperBound"] = float(mae_bound)
                elif key in ("change_threshold", "changeThreshold") and mae_regression_tolerance is not None:
                    value["absolute"] = float(mae_regression_tolerance)
                else:
                    patch(value)

        for spec in eval_config.get("metrics_specs", eval_config.get("metricsSpecs", [])):
            patch([m for m in spec.get("metrics", []) if metric_name(m) == MAE])
        values[EVAL_CONFIG] = json.dumps(eval_config, sort_keys=True)
    return values
