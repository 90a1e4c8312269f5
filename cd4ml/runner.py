"""A local pipeline run as the command layer wants it: the run, then its HTML report.

`pipelines.local_runner.run` runs the pipeline and reads the outcome back from ML Metadata; it
knows nothing of reports. Everything that runs the pipeline for a person (`cd4ml run`, the drop
and drift triggers, the demo) goes through `run_and_report`, so every run leaves the same report,
and raises the same alerts (cd4ml/alerts.py): run failed, data refused, not blessed,
explainability check failed, approval pending.
"""

from __future__ import annotations

from typing import Callable, Optional

from pipelines import local_runner
from pipelines.config import PipelineConfig


def run_and_report(config: PipelineConfig, progress: Callable[[str], None] = print,
                   run_id: Optional[str] = None) -> local_runner.RunResult:
    from cd4ml.report import write_run_report

    result = local_runner.run(config, progress=progress, run_id=run_id)
    if result.run_dir:  # a run that never started (no such span) has no folder and no report
        write_run_report(result, config.metadata_path)  # <run dir>/report.html; logs a warning on failure
        alert(config, result)
    return result


def alert(config: PipelineConfig, result: local_runner.RunResult):
    """The alert a run's outcome calls for, if any."""
    from cd4ml import alerts

    report = f"{result.run_dir}/report.html"
    if result.exit_code == local_runner.ERROR:
        alerts.notify(config.home, "run_failed", f"run {result.run_id}", f"run {result.run_id} failed on span "
                      f"{result.span}: {result.error}", span=result.span, report=report)
    elif result.exit_code == local_runner.VALIDATION_FAILED:
        from components.validation_gate import format_report  # TFX is loaded by now

        alerts.notify(config.home, "data_refused", f"span {result.span}",
                      f"span {result.span} was refused by the validation gate; nothing was trained and the "
                      f"serving model is unchanged", report=format_report(result.problems) if result.problems
                      else result.error, run=result.run_id, run_report=report)
    elif result.exit_code == local_runner.NOT_BLESSED:
        kind = "explainability_failed" if result.explainable is False else "not_blessed"
        alerts.notify(config.home, kind, f"run {result.run_id}", result.blessing, span=result.span, report=report)
    elif result.new_push:
        from cd4ml.contract import PENDING
        from components import registry

        if registry.approval(config.registry, result.pushed_version) == PENDING:
            alerts.notify(config.home, "approval_pending", f"version {result.pushed_version}",
                          f"version {result.pushed_version} is blessed and waits for approval: "
                          f"`cd4ml approve {result.pushed_version}`", span=result.span, report=report)
