"""Drift trigger: when the server's drift detector fires, request a retrain, with guard rails.

Reads what the server writes (serving/telemetry.py, serving/logs.py) in its log directory
(default `<home>/serving-logs` for a local registry):
  drift*.jsonl        {"ts", "version", "is_drift", "p_vals", "drifted", "rows", ...} per window
  predictions*.jsonl  {"ts", "request_id", "version", "rows": [{feature: value}], "predictions"}
  feedback*.jsonl     {"ts", "request_id", "version", "matched", "truth": [...], ...}

Decision, each time `check()` runs (a poll of `cd4ml drift-retrain`):
  1. drift events newer than the last request (none -> "no drift");
  2. cooldown: no request within `cooldown_s` of the previous one;
  3. debounce: a burst of drift windows is one trigger; wait until `debounce_s` have passed since
     the first drift window of the burst, so one request covers it;
  4. enough new labelled rows: feedback truth joined to a logged prediction (by request id) and
     not harvested yet, at least `min_rows` (the rows the harvest below would take);
then the new labelled rows are harvested into the next span of the data lake
(cd4ml/triggers/harvest.py) and the retrain runs on it: locally, the pipeline on the harvested
span, which trains on the window of recent spans ending there (components/window.py); or
submitted to KFP / Vertex (`--submit JOB`) with that span. A harvested span the validation gate
refuses is quarantined with its report and the serving model stays. The request is recorded in ML
Metadata as a `cd4ml.RetrainRequest` (cd4ml.mlmd.records: trigger, drift window, drifted
features, labelled rows, the harvested span, the training window, outcome, run), the harvest as a
`cd4ml.Harvest`; with `notify` set, the request is also sent to GitHub as a repository_dispatch
(cd4ml/triggers/dispatch.py), which `.github/workflows/retrain.yml` listens for.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Callable, Dict, List, Optional

from cd4ml import alerts
from cd4ml.contract import DRIFT_LOG, default_log_dir, parse_ts
from cd4ml.logstore import read_records
from cd4ml.runner import run_and_report
from cd4ml.triggers.harvest import Harvester
from pipelines.config import PipelineConfig


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclasses.dataclass
class Decision:
    action: str                # "retrain" or "wait"
    why: str
    drift: Optional[Dict] = None
    labelled_rows: int = 0
    drift_windows: int = 0


@dataclasses.dataclass
class Outcome:
    decision: Decision
    outcome: str = ""          # trained / not_blessed / validation_failed / error / submitted
    run_id: str = ""
    version: str = ""
    execution_id: Optional[int] = None
    harvest_span: Optional[int] = None
    window: List[int] = dataclasses.field(default_factory=list)
    dispatched: str = ""


class DriftRetrainer:
    def __init__(self, config: PipelineConfig, log_dir: Optional[str] = None,
                 cooldown_s: Optional[float] = None, min_rows: Optional[int] = None,
                 debounce_s: float = 30.0, submit_job: Optional[str] = None,
                 progress: Callable[[str], None] = print, run_pipeline: Callable = run_and_report,
                 now: Callable[[], datetime.datetime] = _now, notify=None):
        self.config = config
        self.log_dir = log_dir or default_log_dir(config.registry)
        self.cooldown_s = config.retrain_cooldown_s if cooldown_s is None else cooldown_s
        self.min_rows = config.retrain_min_rows if min_rows is None else min_rows
        self.debounce_s = debounce_s
        self.submit_job = submit_job
        self.progress = progress
        self.run_pipeline = run_pipeline
        self.now = now
        self.notify = notify  # a dispatch.GitHubDispatch, or None
        self.harvester = Harvester(config, self.log_dir, progress=progress)

    # --- state in MLMD ---------------------------------------------------------------------------

    def _store(self):
        from cd4ml.mlmd import store

        return store.open_store(self.config.metadata_path)

    def requests(self) -> List[Dict]:
        from cd4ml.mlmd import records, store

        if not store.exists(self.config.metadata_path):
            return []
        return records.read(self._store(), records.RETRAIN_REQUEST)

    # --- the decision ----------------------------------------------------------------------------

    def decide(self) -> Decision:
        previous = self.requests()
        last = previous[-1] if previous else None
        last_at = parse_ts(last["requested_at"]) if last and last.get("requested_at") else None
        last_drift = parse_ts(last["drift_ts"]) if last and last.get("drift_ts") else None
        pending = [d for d in read_records(self.log_dir, DRIFT_LOG)
                   if d.get("is_drift") and (last_drift is None or parse_ts(d["ts"]) > last_drift)]
        if not pending:
            return Decision("wait", "no drift reported since the last retrain request")
        latest = pending[-1]
        now = self.now()
        if last_at is not None and (now - last_at).total_seconds() < self.cooldown_s:
            left = self.cooldown_s - (now - last_at).total_seconds()
            return Decision("wait", f"cooldown: last retrain request {last_at:%H:%M:%S}, {left:.0f} s left",
                            latest, drift_windows=len(pending))
        first = parse_ts(pending[0]["ts"])
        if (now - first).total_seconds() < self.debounce_s:
            return Decision("wait", f"debounce: drift first seen {(now - first).total_seconds():.0f} s ago, "
                            f"waiting {self.debounce_s:.0f} s for the burst to settle", latest,
                            drift_windows=len(pending))
        labelled = self.harvester.collect().report.rows  # what the retrain would harvest and train on
        if labelled < self.min_rows:
            return Decision("wait", f"drift on {', '.join(latest.get('drifted', [])) or 'the window'}, but only "
                            f"{labelled} new labelled rows (need {self.min_rows})", latest, labelled,
                            len(pending))
        return Decision("retrain", f"drift in {len(pending)} window(s) (features: "
                        f"{', '.join(latest.get('drifted', [])) or '-'}), {labelled} new labelled rows",
                        latest, labelled, len(pending))

    # --- acting ----------------------------------------------------------------------------------

    def check(self, dry_run: bool = False) -> Outcome:
        decision = self.decide()
        if decision.action != "retrain":
            if decision.drift:  # seen, not acted on yet: once per drift report (alerts deduplicate)
                alerts.notify(self.config.home, "drift_detected", f"drift at {decision.drift.get('ts')}",
                              f"drift on version {decision.drift.get('version', '?')}: "
                              f"{', '.join(decision.drift.get('drifted', [])) or 'the window'}; {decision.why}",
                              windows=decision.drift_windows)
            return Outcome(decision)
        if dry_run:
            self.progress(f"would retrain: {decision.why}; the harvest would take:")
            self.harvester.harvest(dry_run=True)
            return Outcome(decision)
        self.progress(f"retrain requested: {decision.why}")
        alerts.notify(self.config.home, "retrain_requested", f"drift at {decision.drift.get('ts')}",
                      f"retrain requested on version {decision.drift.get('version', '?')}: {decision.why}",
                      labelled_rows=decision.labelled_rows)
        requested_at = self.now()
        outcome = Outcome(decision)
        # Record the request before acting: a crash mid-run must not make the next poll retrain again.
        from cd4ml.mlmd import records

        store = self._store()
        outcome.execution_id = records.put(store, records.RETRAIN_REQUEST, {
            "trigger": "drift", "requested_at": requested_at.isoformat(), "drift_ts": decision.drift["ts"],
            "drift_version": str(decision.drift.get("version", "")),
            "drifted": ",".join(decision.drift.get("drifted", [])), "reason": decision.why,
            "labelled_rows": decision.labelled_rows},
            state=records.RUNNING)
        try:
            self._act(outcome)
        except Exception as exc:  # noqa: BLE001 - recorded, and the watcher keeps going
            outcome.outcome = f"error: {type(exc).__name__}: {exc}"
        failed = outcome.outcome.startswith("error")
        records.update(store, records.RETRAIN_REQUEST, outcome.execution_id,
                       {"outcome": outcome.outcome, "run_id": outcome.run_id, "version": outcome.version,
                        "harvest_span": outcome.harvest_span, "window": ",".join(map(str, outcome.window))},
                       records.FAILED if failed else records.COMPLETE)
        self.progress(f"retrain {outcome.outcome}" + (f": version {outcome.version}" if outcome.version else "")
                      + (f" (run {outcome.run_id})" if outcome.run_id else ""))
        return outcome

    def _act(self, outcome: Outcome):
        harvest = self.harvester.harvest()
        outcome.harvest_span = harvest.span
        if self.notify is not None:  # GitHub compiles and submits (retrain.yml)
            drifted = ",".join(outcome.decision.drift.get("drifted", []))
            outcome.dispatched = self.notify.send("drift", {
                "span": harvest.span, "reason": f"drift on {drifted or 'the window'} "
                                                f"(version {outcome.decision.drift.get('version', '?')})"})
            self.progress(f"  {outcome.dispatched}")
            outcome.outcome = "dispatched"
            if harvest.span:
                self.harvester.finish(harvest, "dispatched", detail=outcome.dispatched)
            return
        if self.submit_job:
            from pipelines import submit

            result = submit.submit(self.submit_job, self.config, span=harvest.span, reason="drift",
                                   progress=self.progress)
            outcome.outcome, outcome.run_id = "submitted", result.run_id
            if harvest.span:
                self.harvester.finish(harvest, "submitted", detail=f"run {result.run_id}")
            return
        # On the harvested span (the window ends there), else on the latest span there is.
        run, outcome.outcome = self.harvester.train(harvest, self.run_pipeline)
        outcome.run_id, outcome.version = run.run_id, run.pushed_version if run.new_push else ""
        outcome.window = run.window or ([run.span] if run.span else [])
