"""A local pipeline run as the command layer wants it: the run, then its HTML report.

`pipelines.local_runner.run` runs the pipeline and reads the outcome back from ML Metadata; it
knows nothing of reports. Everything that runs the pipeline for a person (`cd4ml run`, the drop
and drift triggers, the demo) goes through `run_and_report`, so every run leaves the same report.
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
    return result
