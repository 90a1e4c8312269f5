"""Run the pipeline on this machine: LocalDagRunner, Beam in-process, MLMD in SQLite.

`run(config)` returns a RunResult read back from ML Metadata (what ran, what was cached, metrics,
blessing, the pushed version), so the summary reports what was recorded rather than what we hoped
happened. The command layer adds the HTML report (cd4ml.runner.run_and_report).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import os
import sys
import time
from typing import Callable, Dict, List, Optional

from pipelines.config import PipelineConfig
from pipelines import spans, usage

OK, ERROR, VALIDATION_FAILED, NOT_BLESSED = 0, 1, 2, 3
STATUS = {OK: "ok", ERROR: "error", VALIDATION_FAILED: "validation failed", NOT_BLESSED: "not blessed"}


@dataclasses.dataclass
class RunResult:
    run_id: str
    exit_code: int
    span: Optional[int] = None
    window: List[int] = dataclasses.field(default_factory=list)  # the spans trained on, newest first
    hyperparameters: Dict[str, object] = dataclasses.field(default_factory=dict)  # mlmd.runs.hyperparameters_of
    rows: int = 0
    seconds: float = 0.0
    steps: List[Dict[str, object]] = dataclasses.field(default_factory=list)
    metrics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    blessed: Optional[bool] = None
    blessing: str = ""
    explainable: Optional[bool] = None  # False: blessed by the Evaluator, stopped by the explainability check
    pushed_version: str = ""
    pushed_path: str = ""
    new_push: bool = False
    problems: List[Dict[str, str]] = dataclasses.field(default_factory=list)
    error: str = ""
    run_dir: str = ""

    @property
    def status(self) -> str:
        return STATUS[self.exit_code]

    @property
    def cached(self) -> List[str]:
        return [s["node"] for s in self.steps if s["state"] == "cached"]

    @property
    def ran(self) -> List[str]:
        return [s["node"] for s in self.steps if s["state"] == "ran"]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self) | {"status": self.status}, indent=2, default=str)


@contextlib.contextmanager
def _progress(total: int, emit: Callable[[str], None], usages: Dict[int, Dict[str, float]]):
    """Report each component as LocalDagRunner launches it (it runs them one after another), and
    measure what each one that ran used (pipelines/usage.py) into `usages` by execution id.

    Wraps Launcher.launch for the duration of one run: log records are no use here, because
    TensorFlow and Beam lower the absl logger's level partway through the pipeline.
    """
    from tfx.orchestration.portable import launcher

    original = launcher.Launcher.launch
    index = [0]

    def launch(self):
        index[0] += 1
        node = self._pipeline_node.node_info.id
        emit(f"  [{index[0]:2d}/{total}] {node} ...")
        began = time.monotonic()
        with usage.Meter() as meter:
            try:
                info = original(self)
            finally:
                emit(f"  [{index[0]:2d}/{total}] {node} finished in {time.monotonic() - began:.1f} s")
        if info is not None and info.execution_id is not None:  # None: answered from the cache
            usages[info.execution_id] = meter.usage.as_dict()
        return info

    launcher.Launcher.launch = launch
    try:
        yield
    finally:
        launcher.Launcher.launch = original


def new_run_id() -> str:
    return datetime.datetime.now().strftime("%Y%m%dT%H%M%S.%f")


def run(config: PipelineConfig, progress: Callable[[str], None] = print,
        run_id: Optional[str] = None) -> RunResult:
    """Run the pipeline once; never raises for bad data or a failed component (see exit_code)."""
    started = time.monotonic()
    run_id = run_id or new_run_id()
    result = RunResult(run_id=run_id, exit_code=ERROR)
    try:
        result.span = spans.resolve_span(config.data_root, config.span)
    except spans.NoSuchSpan as exc:  # nothing to run on: no run, so no run folder or report either
        result.error = str(exc)
        result.seconds = round(time.monotonic() - started, 2)
        return result
    result.run_dir = os.path.join(config.runs_dir, run_id)
    os.makedirs(result.run_dir, exist_ok=True)
    try:
        result.rows = spans.check_span(config.data_root, result.span)
    except spans.SpanError as exc:
        result.exit_code = VALIDATION_FAILED
        result.problems = [{"split": "-", "feature": "-", "rule": "span files", "description": str(exc)}]
        result.error = str(exc)
        return _finish(result, started)
    config = dataclasses.replace(config, span=result.span)
    progress(f"cd4ml run {run_id}: span {result.span} ({result.rows} rows) from {config.data_root}")

    # TensorFlow and TFX load here, not at import: `cd4ml --help` stays instant.
    from tfx.dsl.compiler import compiler
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from tfx.orchestration.portable import runtime_parameter_utils

    from cd4ml import mlmd
    from components.validation_gate import DataValidationError
    from pipelines.pipeline import create_pipeline
    from pipelines.run_state import run_parameters

    os.makedirs(config.home, exist_ok=True)
    # TFX's Beam executors parse sys.argv + beam args as absl flags: the host's own flags (pytest's
    # or our CLI's `-v`) must not reach them.
    saved_argv, sys.argv = sys.argv, sys.argv[:1]
    usages: Dict[int, Dict[str, float]] = {}
    try:
        pipeline = create_pipeline(config, mlmd.connection_config(config.metadata_path))
        ir = compiler.Compiler().compile(pipeline)
        runtime_parameter_utils.substitute_runtime_parameter(
            ir, {"pipeline-run-id": run_id, **run_parameters(config.registry, result.span)})
        with _progress(len(ir.nodes), progress, usages):
            LocalDagRunner().run_with_ir(ir)
        result.exit_code = OK
    except DataValidationError as exc:
        result.exit_code = VALIDATION_FAILED
        result.problems = exc.problems
        result.error = str(exc)
    except Exception as exc:  # a component failed: recorded in MLMD, reported, never swallowed silently
        result.exit_code = ERROR
        result.error = f"{type(exc).__name__}: {exc}"
        logging.getLogger(__name__).debug("pipeline failed", exc_info=True)
    finally:
        sys.argv = saved_argv
        mlmd.record_usage(mlmd.open_store(config.metadata_path), usages)
    _read_back(config, result)
    if result.new_push and result.pushed_path:  # the card of the version it pushed says what it cost
        from components import model_card
        from components.files import write_text

        doc = mlmd.provenance(mlmd.open_store(config.metadata_path), result.pushed_version)
        model_card.record_usage(result.pushed_path, result.run_id, doc["summary"]["usage"] if doc else {}, write_text)
    return _finish(result, started)


def _read_back(config: PipelineConfig, result: RunResult):
    """Fill the result from what ML Metadata recorded for this run."""
    from cd4ml import mlmd
    from components import evaluation

    run = mlmd.get_run(mlmd.open_store(config.metadata_path), result.run_id)
    if run is None:  # stopped before the first component
        return
    result.steps = [{"node": s.node, "state": s.state, "seconds": round(s.seconds, 2)} for s in run.steps]
    evaluator = next((s for s in run.steps if s.node == "Evaluator"), None)
    if evaluator and evaluator.state in ("ran", "cached") and evaluator.outputs.get("evaluation"):
        summary = evaluation.summarize(evaluator.outputs["evaluation"][0].uri)
        result.metrics = summary["slices"]
        result.blessed = summary["blessed"]
        result.blessing = evaluation.explain(summary)
        if result.exit_code == OK and not result.blessed:
            result.exit_code = NOT_BLESSED
    result.explainable = run.explainable
    if run.explainable is False:  # blessed by the Evaluator, stopped by the explainability check
        result.blessed = False
        result.blessing = f"not pushed: the explainability check failed: {run.explain_reason}"
        if result.exit_code == OK:
            result.exit_code = NOT_BLESSED
    result.pushed_version, result.pushed_path, result.new_push = run.pushed_version, run.pushed_path, run.new_push
    result.window = run.window
    result.hyperparameters = run.hyperparameters


def _finish(result: RunResult, started: float) -> RunResult:
    result.seconds = round(time.monotonic() - started, 2)
    with open(os.path.join(result.run_dir, "summary.json"), "w") as fh:
        fh.write(result.to_json())
    if result.problems:
        from components.validation_gate import format_report
        with open(os.path.join(result.run_dir, "validation_report.txt"), "w") as fh:
            fh.write(format_report(result.problems) + "\n")
    return result


def describe_hyperparameters(hp: Dict[str, object]) -> str:
    """One line: which hyperparameters the Trainer used and where they came from."""
    values = ", ".join(f"{k} {v}" for k, v in sorted((hp.get("values") or {}).items()))
    if hp.get("source") == "tuned":
        return f"tuned in this run ({values})"
    if hp.get("source") == "reused":
        return f"the latest tuned, from run {hp.get('run_id')} ({values}); `cd4ml run --tune` searches again"
    return "the configured defaults (no tuned hyperparameters recorded; `cd4ml run --tune` searches)"


def format_summary(result: RunResult) -> str:
    if not result.run_dir:
        return f"cd4ml run: not started: {result.error}"
    lines = [f"run {result.run_id}: {result.status} in {result.seconds:.1f} s (span {result.span}, "
             f"{result.rows} rows)"]
    if len(result.window) > 1:
        lines.append(f"  trained on spans {', '.join(map(str, result.window))} "
                     f"(the window ending at span {result.span})")
    if result.steps:
        lines.append(f"  components: {len(result.ran)} ran, {len(result.cached)} cached"
                     + (f" ({', '.join(result.cached)})" if result.cached and result.ran else ""))
        if result.steps and not result.ran:
            lines.append("  nothing changed since the last run: every component came from the cache")
    if result.hyperparameters:
        lines.append(f"  hyperparameters: {describe_hyperparameters(result.hyperparameters)}")
    overall = result.metrics.get("overall")
    if overall:
        lines.append("  eval: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(overall.items())))
    if result.blessing:
        lines.append(f"  {result.blessing}")
    if result.problems:
        from components.validation_gate import format_report
        lines.extend("  " + line for line in format_report(result.problems).splitlines())
        lines.append("  nothing was trained or pushed; the serving model is unchanged")
    if result.pushed_version:
        state = "pushed" if result.new_push else "already pushed (no new version)"
        lines.append(f"  model {state}: version {result.pushed_version} at {result.pushed_path}")
    elif result.exit_code in (OK, NOT_BLESSED) and result.steps:
        lines.append("  no model pushed")
    if result.error and not result.problems:
        lines.append(f"  error: {result.error}")
    lines.append(f"  report: {result.run_dir}")
    return "\n".join(lines)
