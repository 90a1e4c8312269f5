"""Drift trigger: when the server's drift detector fires, request a retrain, with guard rails.

Reads what the server writes (serving/core.py, serving/logs.py) in its log directory
(default `<home>/serving-logs` for a local registry):
  drift*.jsonl        {"ts", "version", "is_drift", "p_vals", "drifted", "rows", ...} per window
  predictions*.jsonl  {"ts", "request_id", "version", "rows": [{feature: value}], "predictions"}
  feedback*.jsonl     {"ts", "request_id", "version", "matched", "truth": [...], ...}

Decision, each time `check()` runs (a poll of `cd4ml drift-retrain`):
  1. drift events newer than the last request (none -> "no drift");
  2. cooldown: no request within `cooldown_s` of the previous one;
  3. debounce: a burst of drift windows is one trigger; wait until `debounce_s` have passed since
     the first drift window of the burst, so one request covers it;
  4. enough new labelled rows: feedback truth joined to a logged prediction (by request id), newer
     than the last request, at least `min_rows`;
then the retrain runs (local pipeline on the latest span of the data root) or is submitted to
KFP / Vertex (`--submit JOB`), and the request is recorded in ML Metadata as an execution of type
`cd4ml.RetrainRequest` (trigger, drift window, drifted features, labelled rows, outcome, run).
The labelled rows are exported next to the request (`<home>/labelled/<ts>.csv`) for audit and for
building the next span; they lack the raw columns the pipeline needs (`day`, `casual`,
`registered`), so they are not fed to the pipeline as a span by themselves.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import glob
import json
import os
from typing import Callable, Dict, Iterable, List, Optional

from pipelines.config import PipelineConfig

REQUEST_TYPE = "cd4ml.RetrainRequest"


def default_log_dir(config: PipelineConfig) -> str:
    # Same rule as serving.core.default_log_dir (which imports TensorFlow).
    if "://" in config.registry:
        return os.path.abspath("serving-logs")
    return os.path.join(os.path.dirname(os.path.abspath(config.registry.rstrip("/"))), "serving-logs")


def read_jsonl(log_dir: str, name: str) -> Iterable[Dict]:
    """Every line of <name>.jsonl and its rotated files, oldest file first; torn lines skipped."""
    rotated = sorted(p for p in glob.glob(os.path.join(log_dir, f"{name}.*.jsonl")))
    current = os.path.join(log_dir, f"{name}.jsonl")
    for path in rotated + ([current] if os.path.exists(current) else []):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue


def _ts(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


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
    labelled_file: str = ""


class DriftRetrainer:
    def __init__(self, config: PipelineConfig, log_dir: Optional[str] = None,
                 cooldown_s: Optional[float] = None, min_rows: Optional[int] = None,
                 debounce_s: float = 30.0, submit_job: Optional[str] = None,
                 progress: Callable[[str], None] = print, run_pipeline: Optional[Callable] = None,
                 now: Callable[[], datetime.datetime] = _now):
        self.config = config
        self.log_dir = log_dir or default_log_dir(config)
        self.cooldown_s = config.retrain_cooldown_s if cooldown_s is None else cooldown_s
        self.min_rows = config.retrain_min_rows if min_rows is None else min_rows
        self.debounce_s = debounce_s
        self.submit_job = submit_job
        self.progress = progress
        self.run_pipeline = run_pipeline
        self.now = now

    # --- state in MLMD ---------------------------------------------------------------------------

    def _store(self):
        from ml_metadata.proto import metadata_store_pb2 as pb

        from cd4ml import metadata

        store = metadata.open_store(self.config.metadata_path)
        ex_type = pb.ExecutionType(name=REQUEST_TYPE)
        for name in ("trigger", "requested_at", "drift_ts", "drift_version", "drifted", "outcome",
                     "run_id", "version", "reason", "labelled_file"):
            ex_type.properties[name] = pb.STRING
        ex_type.properties["labelled_rows"] = pb.INT
        type_id = store.put_execution_type(ex_type, can_add_fields=True)
        return store, type_id, pb

    def requests(self) -> List[Dict]:
        if not os.path.exists(self.config.metadata_path):
            return []
        store, _, _ = self._store()
        out = []
        for ex in sorted(store.get_executions_by_type(REQUEST_TYPE), key=lambda e: e.id):
            row = {k: getattr(v, v.WhichOneof("value")) for k, v in ex.properties.items()}
            out.append(dict(row, id=ex.id))
        return out

    # --- the decision ----------------------------------------------------------------------------

    def labelled_rows(self, since: Optional[datetime.datetime]) -> List[Dict]:
        """Feedback truth joined to the logged request rows, newer than `since`."""
        feedback = [f for f in read_jsonl(self.log_dir, "feedback")
                    if f.get("request_id") and not f.get("shadow") and (since is None or _ts(f["ts"]) > since)]
        if not feedback:
            return []
        wanted = {f["request_id"] for f in feedback}
        requests = {p["request_id"]: p for p in read_jsonl(self.log_dir, "predictions")
                    if p.get("request_id") in wanted}
        rows = []
        for f in feedback:
            logged = requests.get(f["request_id"])
            if not logged or len(logged.get("rows", [])) != len(f.get("truth", [])):
                continue
            for features, truth, predicted in zip(logged["rows"], f["truth"], logged.get("predictions", [])):
                rows.append(dict(features, bikers=truth, predicted=predicted, version=logged.get("version"),
                                 ts=f["ts"]))
        return rows

    def decide(self) -> Decision:
        previous = self.requests()
        last = previous[-1] if previous else None
        last_at = _ts(last["requested_at"]) if last and last.get("requested_at") else None
        last_drift = _ts(last["drift_ts"]) if last and last.get("drift_ts") else None
        pending = [d for d in read_jsonl(self.log_dir, "drift")
                   if d.get("is_drift") and (last_drift is None or _ts(d["ts"]) > last_drift)]
        if not pending:
            return Decision("wait", "no drift reported since the last retrain request")
        latest = pending[-1]
        now = self.now()
        if last_at is not None and (now - last_at).total_seconds() < self.cooldown_s:
            left = self.cooldown_s - (now - last_at).total_seconds()
            return Decision("wait", f"cooldown: last retrain request {last_at:%H:%M:%S}, {left:.0f} s left",
                            latest, drift_windows=len(pending))
        first = _ts(pending[0]["ts"])
        if (now - first).total_seconds() < self.debounce_s:
            return Decision("wait", f"debounce: drift first seen {(now - first).total_seconds():.0f} s ago, "
                            f"waiting {self.debounce_s:.0f} s for the burst to settle", latest,
                            drift_windows=len(pending))
        labelled = len(self.labelled_rows(last_at))
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
        if decision.action != "retrain" or dry_run:
            return Outcome(decision)
        self.progress(f"retrain requested: {decision.why}")
        requested_at = self.now()
        previous = self.requests()
        since = _ts(previous[-1]["requested_at"]) if previous and previous[-1].get("requested_at") else None
        outcome = Outcome(decision, labelled_file=self._export(self.labelled_rows(since), requested_at))
        # Record the request before acting: a crash mid-run must not make the next poll retrain again.
        store, type_id, pb = self._store()
        ex = pb.Execution(type_id=type_id, last_known_state=pb.Execution.RUNNING)
        props = {"trigger": "drift", "requested_at": requested_at.isoformat(),
                 "drift_ts": decision.drift["ts"], "drift_version": str(decision.drift.get("version", "")),
                 "drifted": ",".join(decision.drift.get("drifted", [])), "reason": decision.why,
                 "labelled_file": outcome.labelled_file}
        for k, v in props.items():
            ex.properties[k].string_value = v
        ex.properties["labelled_rows"].int_value = decision.labelled_rows
        ex.id, _, _ = store.put_execution(ex, [], [])
        outcome.execution_id = ex.id
        try:
            self._act(outcome)
        except Exception as exc:  # noqa: BLE001 - recorded, and the watcher keeps going
            outcome.outcome = f"error: {type(exc).__name__}: {exc}"
        ex = store.get_executions_by_id([ex.id])[0]
        ex.properties["outcome"].string_value = outcome.outcome
        ex.properties["run_id"].string_value = outcome.run_id
        ex.properties["version"].string_value = outcome.version
        ex.last_known_state = pb.Execution.FAILED if outcome.outcome.startswith("error") else pb.Execution.COMPLETE
        store.put_execution(ex, [], [])
        self.progress(f"retrain {outcome.outcome}" + (f": version {outcome.version}" if outcome.version else "")
                      + (f" (run {outcome.run_id})" if outcome.run_id else ""))
        return outcome

    def _act(self, outcome: Outcome):
        if self.submit_job:
            from pipelines import submit

            result = submit.submit(self.submit_job, self.config, reason="drift", progress=self.progress)
            outcome.outcome, outcome.run_id = "submitted", result.run_id
            return
        from pipelines import local_runner

        config = dataclasses.replace(self.config, span=None)
        result = (self.run_pipeline or local_runner.run)(config, progress=self.progress)
        outcome.run_id, outcome.version = result.run_id, result.pushed_version if result.new_push else ""
        outcome.outcome = {local_runner.OK: "trained", local_runner.NOT_BLESSED: "not_blessed",
                           local_runner.VALIDATION_FAILED: "validation_failed"}.get(result.exit_code, "error")
        if result.exit_code == local_runner.OK and not result.new_push:
            outcome.outcome = "trained (nothing new: latest span unchanged)"

    def _export(self, rows: List[Dict], at: datetime.datetime) -> str:
        if not rows:
            return ""
        directory = os.path.join(self.config.home, "labelled")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"labelled-{at:%Y%m%dT%H%M%S}.csv")
        columns = list(rows[0].keys())
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        return path
