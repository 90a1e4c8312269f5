"""The schedules file (schedules.yaml, pipelines/schedules.py) run here by `cd4ml watch --schedules`:
at each poll, every entry whose cron matches the current minute (UTC) runs once: a `train` entry
runs the pipeline on its span (the latest unless given), a `batch` entry scores its input with
`cd4ml predict`'s pipeline. The minute each entry last ran is kept in <home>/schedules/fired.json,
so a restart within the minute does not run it twice, and a watcher that was down does not catch
up (as KFP's recurring runs with no_catchup)."""

from __future__ import annotations

import datetime
import json
import os
from typing import Callable, Dict, List, Optional, Sequence

from cd4ml.runner import run_and_report
from pipelines import schedules
from pipelines.config import PipelineConfig


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class LocalSchedule:
    def __init__(self, config: PipelineConfig, entries: Sequence[schedules.Schedule],
                 now: Callable[[], datetime.datetime] = _now, run_pipeline: Callable = run_and_report,
                 progress: Callable[[str], None] = print):
        self.config, self.entries, self.now = config, list(entries), now
        self.run_pipeline, self.progress = run_pipeline, progress
        self.state_path = os.path.join(config.home, "schedules", "fired.json")

    def _fired(self) -> Dict[str, str]:
        try:
            with open(self.state_path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def _mark(self, name: str, minute: str):
        fired = dict(self._fired(), **{name: minute})
        os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
        with open(self.state_path + ".tmp", "w") as fh:
            json.dump(fired, fh, indent=2, sort_keys=True)
        os.replace(self.state_path + ".tmp", self.state_path)

    def run_due(self) -> List[Dict[str, object]]:
        """Run each entry due this minute that has not run in it; what each did."""
        at = self.now().astimezone(datetime.timezone.utc)
        minute = at.strftime("%Y-%m-%dT%H:%M")
        done = []
        for entry in self.entries:
            if not schedules.due(entry.cron, at) or self._fired().get(entry.name) == minute:
                continue
            self._mark(entry.name, minute)  # first: a crash mid-run must not run it again this minute
            self.progress(f"schedule {entry.name} ({entry.cron}): {entry.why}")
            done.append({"name": entry.name, "minute": minute, **self._run(entry, at)})
        return done

    def _run(self, entry: schedules.Schedule, at: datetime.datetime) -> Dict[str, object]:
        import dataclasses

        if entry.job == "train":
            span: Optional[int] = None if entry.span == "latest" else int(entry.span)
            result = self.run_pipeline(dataclasses.replace(self.config, span=span), progress=self.progress)
            return {"run_id": result.run_id, "status": result.status, "version": result.pushed_version}
        from pipelines import batch

        output = entry.output.replace("{date}", at.strftime("%Y-%m-%d"))
        try:
            result = batch.predict(self.config.registry, entry.input, output, version=entry.version or None,
                                   data_root=self.config.data_root, progress=self.progress)
        except (ValueError, OSError) as exc:
            self.progress(f"  schedule {entry.name}: not scored: {exc}")
            return {"status": "error", "error": str(exc)}
        self.progress(result.summary())
        return {"status": "ok", "scored": result.scored, "rejected": result.rejected}
