"""Harvest: labelled serving traffic becomes the next span of the data lake.

The server logs every answered request (rows, predictions, the time it was served and, when the
client sent one, each row's event time) and every piece of feedback (truth by request id), from
every worker and replica into one log store (cd4ml/logstore.py: a folder, or a gs:// prefix on a
cluster). A harvest joins the two by request id and writes the rows it has not harvested before
as `span-N/harvest.csv`, a normal span in the published format, with `HARVEST.json` beside it
(which logs, which versions answered, rows, requests, time range, what was left out and why).
The pipeline then validates it with the same gate as a dropped file.

Columns production cannot know: `casual` and `registered` (they add up to the label) are left out
of the file; the curated schema marks them optional (components/features.py).

The split group (`split_group`, what the train/eval split hashes on) is chosen per row:
- the event day (`day-<day of year>`, as in the published files) when the client sent the event
  time: all hours of one day share their weather, so they must stay on one side;
- otherwise the request (`request-<id>`): traffic comes in bursts (a replay, a backfill, a test
  sends thousands of rows in a minute), so the serving day would put a whole burst on one side of
  the split. A request is what a client batched together (typically one day's hours), so rows
  that belong together stay together and a burst of many requests still lands on both sides.
`day` is the event day when known, else the day the row was served.

Nothing is dropped silently. Feedback without a matching prediction, truth of the wrong length,
NaN or non-numeric truth, torn log lines (a crash mid-write), repeated feedback, requests
harvested before: each is counted and reported, never raises. Rows whose values break the
curated schema (a version with a wider domain answered them, a truth that is not a count) are
counted and *kept*, so the validation gate quarantines the span with its report rather than the
harvest quietly reshaping the data. Harvesting twice never duplicates a row: the request ids of
every harvest are kept in a ledger beside the logs (`harvested/span-N.json`) and each harvest is
recorded in ML Metadata (cd4ml.Harvest).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import io
import json
import math
import os
import shutil
from typing import Callable, Dict, List, Optional, Tuple

from cd4ml import alerts
from cd4ml.contract import FEEDBACK_LOG, HARVEST_PROVENANCE, PREDICTIONS_LOG, default_log_dir, parse_ts
from cd4ml.logstore import LogStore, ReadStats
from components import features
from pipelines import spans
from pipelines.config import PipelineConfig
from serving.request import rule_of

HARVEST_FILE = "harvest.csv"
LEDGER_FOLDER = "harvested"
# The harvested file's columns: the published ones production can know, then the split group.
COLUMNS = [c for c in features.RAW_COLUMNS if not features.feature(c).optional] + [features.SPLIT_KEY]
PROBLEMS = {
    "unmatched_feedback": "feedback whose request id matches no logged prediction",
    "wrong_length": "feedback whose truth has another length than the request's rows",
    "bad_truth": "truth values that are not finite numbers (NaN, infinity, text, null)",
    "torn_lines": "log lines that are not JSON (a crash mid-write)",
    "repeated_feedback": "feedback for a request that already had feedback (the first one is used)",
    "already_harvested": "labelled requests harvested before (skipped)",
    "bad_event_time": "event times that are not ISO 8601 (the serving day is used)",
}


@dataclasses.dataclass
class Report:
    """What a harvest saw, kept, and left out (with counts), written into HARVEST.json."""

    log_source: str
    sources: List[str] = dataclasses.field(default_factory=list)
    requests: int = 0
    rows: int = 0
    versions: Dict[str, int] = dataclasses.field(default_factory=dict)
    first_served: str = ""
    last_served: str = ""
    event_days: Tuple[int, int] = (0, 0)
    split_keys: Dict[str, int] = dataclasses.field(default_factory=dict)  # "event day"/"request" -> rows
    problems: Dict[str, int] = dataclasses.field(default_factory=dict)
    outside_schema: Dict[str, int] = dataclasses.field(default_factory=dict)  # rule -> rows
    request_ids: List[str] = dataclasses.field(default_factory=list)

    def count(self, problem: str, n: int = 1):
        if n:
            self.problems[problem] = self.problems.get(problem, 0) + n

    def lines(self) -> List[str]:
        out = [f"{self.rows} labelled rows from {self.requests} requests in {len(self.sources)} log file(s) "
               f"at {self.log_source}"]
        if self.rows:
            out.append(f"  served {self.first_served} .. {self.last_served}; answered by "
                       + ", ".join(f"{v} ({n} rows)" for v, n in sorted(self.versions.items())))
            out.append("  split groups: " + ", ".join(f"{k} ({n} rows)" for k, n in sorted(self.split_keys.items())))
        for key, n in sorted(self.problems.items()):
            out.append(f"  left out: {n} {PROBLEMS[key]}")
        for rule, n in sorted(self.outside_schema.items()):
            out.append(f"  kept for the validation gate: {n} rows break the curated schema ({rule})")
        return out

    def as_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Harvest:
    """A harvest written (or, on a dry run, what it would write)."""

    report: Report
    span: Optional[int] = None
    span_dir: str = ""
    ledger: str = ""
    execution_id: Optional[int] = None
    rows: List[Dict[str, object]] = dataclasses.field(default_factory=list)

    def line(self) -> str:
        where = f"span {self.span} at {self.span_dir}" if self.span else "nothing written"
        return f"harvest: {self.report.rows} rows, {self.report.requests} requests -> {where}"


def _truth_ok(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _event_day(value) -> Optional[int]:
    if not value:
        return None
    try:
        return parse_ts(value if "T" in value else value + "T00:00:00").timetuple().tm_yday
    except (TypeError, ValueError):
        return None


def _cell(value) -> object:
    """Integral floats as ints (JSON truth 31.0 is the count 31), everything else as it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class Harvester:
    def __init__(self, config: PipelineConfig, log_dir: Optional[str] = None,
                 progress: Callable[[str], None] = print, logs: Optional[LogStore] = None):
        self.config = config
        self.log_dir = log_dir or default_log_dir(config.registry)
        self.logs = logs or LogStore(self.log_dir)
        self.progress = progress

    # --- reading ------------------------------------------------------------------------------
    def harvested_ids(self) -> set:
        return {rid for _, doc in self.logs.documents(LEDGER_FOLDER) for rid in doc.get("request_ids", [])}

    def collect(self) -> Harvest:
        """Join predictions and feedback; the rows not harvested before, and the report."""
        report = Report(log_source=self.log_dir)
        stats = ReadStats()
        done = self.harvested_ids()
        feedback: "collections.OrderedDict[str, Dict]" = collections.OrderedDict()
        for record in self.logs.read(FEEDBACK_LOG, stats):
            rid = record.get("request_id")
            if record.get("shadow") or not rid:
                continue  # a shadow's score repeats the champion's truth; no id: nothing to join
            if rid in feedback:
                report.count("repeated_feedback")
                continue
            feedback[rid] = record
        answered = {}
        for record in self.logs.read(PREDICTIONS_LOG, stats):
            rid = record.get("request_id")
            if rid in feedback:
                answered[rid] = record
        report.sources, report.problems["torn_lines"] = sorted(set(stats.sources)), stats.torn_lines
        rows: List[Dict[str, object]] = []
        served: List[str] = []
        event_days: List[int] = []
        for rid, fb in feedback.items():
            if rid in done:
                report.count("already_harvested")
                continue
            logged = answered.get(rid)
            if logged is None:
                report.count("unmatched_feedback")
                continue
            truth, logged_rows = fb.get("truth"), logged.get("rows") or []
            if not isinstance(truth, list) or len(truth) != len(logged_rows):
                report.count("wrong_length")
                continue
            kept = self._rows(rid, logged, truth, report, event_days)
            if kept:
                rows.extend(kept)
                served.append(logged.get("ts", ""))
                report.requests += 1
                report.request_ids.append(rid)
                version = str(logged.get("version", ""))
                report.versions[version] = report.versions.get(version, 0) + len(kept)
        report.problems = {k: v for k, v in report.problems.items() if v}
        report.rows = len(rows)
        served = sorted(s for s in served if s)
        report.first_served, report.last_served = (served[0], served[-1]) if served else ("", "")
        report.event_days = (min(event_days), max(event_days)) if event_days else (0, 0)
        return Harvest(report=report, rows=rows)

    def _rows(self, rid: str, logged: Dict, truth: List, report: Report, event_days: List[int]) -> List[Dict]:
        times = logged.get("event_times") or [None] * len(truth)
        served_day = _event_day(logged.get("ts", "")) or 1
        out = []
        for row, value, when in zip(logged["rows"], truth, times):
            if not _truth_ok(value):
                report.count("bad_truth")
                continue
            day = _event_day(when)
            if when and day is None:
                report.count("bad_event_time")
            item = {name: row.get(name) for name in features.FEATURE_NAMES}
            item[features.LABEL_KEY] = _cell(value)
            item["day"] = day or served_day
            item[features.SPLIT_KEY] = features.day_group(day) if day else f"request-{rid}"
            kind = "event day" if day else "request"
            report.split_keys[kind] = report.split_keys.get(kind, 0) + 1
            if day:
                event_days.append(day)
            for f in (*features.FEATURES, features.LABEL):
                problem = f.check(item[f.name]) if item[f.name] is not None else f"feature '{f.name}': missing"
                if problem:
                    rule = problem.split(": ", 1)[0] + ": " + rule_of(problem)
                    report.outside_schema[rule] = report.outside_schema.get(rule, 0) + 1
                    break
            out.append(item)
        return out

    # --- writing ------------------------------------------------------------------------------
    def next_span(self) -> int:
        from cd4ml import storage
        from cd4ml.mlmd import records, store

        recorded = (records.spans_used(store.open_store(self.config.metadata_path))
                    if store.exists(self.config.metadata_path) else [])
        return storage.next_span(self.config.data_root, recorded, self.logs.client if self.remote_data else None)

    @property
    def remote_data(self) -> bool:
        return self.config.data_root.startswith("gs://")

    def harvest(self, dry_run: bool = False) -> Harvest:
        """Collect, then (unless a dry run, or nothing is new) write the span, the ledger and the
        ML Metadata record. The ledger is written before the span is trained on, so a crash in
        training never makes the next harvest take the same rows again."""
        result = self.collect()
        for line in result.report.lines():
            self.progress(line)
        if dry_run or not result.rows:
            return result
        result.span = self.next_span()
        # One document, in two places: with the span (its provenance in the lake) and beside the
        # logs (the ledger: it outlives a quarantined span and is where the next harvest looks).
        doc = dict(result.report.as_dict(), span=result.span,
                   harvested_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        result.span_dir = self._write_span(result, json.dumps(doc, indent=1, sort_keys=True))
        result.ledger = self.logs.put_document(LEDGER_FOLDER, f"span-{result.span}.json", doc)
        result.execution_id = self._record(result)
        self.progress(result.line())
        return result

    def _csv(self, rows: List[Dict[str, object]]) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def _write_span(self, result: Harvest, provenance: str) -> str:
        if self.remote_data:
            bucket_name, root = self.config.data_root[len("gs://"):].partition("/")[::2]
            prefix = "/".join(p for p in (root.strip("/"), f"span-{result.span}") if p)
            bucket = self.logs.client.bucket(bucket_name)
            bucket.blob(f"{prefix}/{HARVEST_PROVENANCE}").upload_from_string(provenance,
                                                                             content_type="application/json")
            bucket.blob(f"{prefix}/{HARVEST_FILE}").upload_from_string(self._csv(result.rows), content_type="text/csv")
            return f"gs://{bucket_name}/{prefix}"
        target = spans.span_dir(self.config.data_root, result.span)
        staging = os.path.join(self.config.data_root, f".span-{result.span}.harvest")
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        with open(os.path.join(staging, HARVEST_FILE), "w", newline="") as fh:
            fh.write(self._csv(result.rows))
        with open(os.path.join(staging, HARVEST_PROVENANCE), "w") as fh:
            fh.write(provenance)
        os.replace(staging, target)  # the span appears whole or not at all
        return target

    def _record(self, result: Harvest) -> int:
        from cd4ml.mlmd import records, store

        report = result.report
        return records.put(store.open_store(self.config.metadata_path), records.HARVEST, {
            "log_source": self.log_dir, "data_root": self.config.data_root, "span_dir": result.span_dir,
            "ledger": result.ledger, "first_served": report.first_served, "last_served": report.last_served,
            "versions": json.dumps(report.versions, sort_keys=True),
            "problems": json.dumps(dict(report.problems, **{f"outside schema: {k}": v
                                                            for k, v in report.outside_schema.items()}),
                                   sort_keys=True),
            "span": result.span, "rows": report.rows, "requests": report.requests, "outcome": "harvested"},
            name=f"{self.config.data_root}#span-{result.span}", context_name=self.log_dir)

    def train(self, result: Harvest, run_pipeline: Callable) -> Tuple[object, str]:
        """Run the pipeline on the harvested span (the window ends there; on the latest span when
        nothing was harvested), record the outcome, quarantine the span if the gate refused it.
        Returns (the run, its outcome in words)."""
        from pipelines import local_runner

        run = run_pipeline(dataclasses.replace(self.config, span=result.span), progress=self.progress)
        outcome = {local_runner.OK: "trained", local_runner.NOT_BLESSED: "not_blessed",
                   local_runner.VALIDATION_FAILED: "validation_failed"}.get(run.exit_code, "error")
        if run.exit_code == local_runner.OK and not run.new_push:
            outcome = "trained (nothing new: latest span unchanged)"
        if not result.span:
            return run, outcome
        if run.exit_code == local_runner.VALIDATION_FAILED:
            from components.validation_gate import format_report  # TFX is loaded by now

            report = format_report(run.problems) if run.problems else run.error
            where = self.quarantine(result, report, run_dir=run.run_dir)
            self.finish(result, "quarantined", run, quarantine=where, detail=report)
            return run, f"quarantined (harvested span {result.span} failed validation; serving model unchanged)"
        self.finish(result, outcome, run, detail=run.error)
        return run, outcome

    def finish(self, result: Harvest, outcome: str, run=None, quarantine: str = "", detail: str = ""):
        """Record what became of a harvested span (trained, not blessed, quarantined, error)."""
        from cd4ml.mlmd import records, store

        records.update(store.open_store(self.config.metadata_path), records.HARVEST, result.execution_id, {
            "outcome": outcome, "run_id": getattr(run, "run_id", ""),
            "version": getattr(run, "pushed_version", "") if getattr(run, "new_push", False) else "",
            "quarantine": quarantine, "detail": detail[:4000]},
            records.FAILED if outcome in ("quarantined", "error") else records.COMPLETE)

    def quarantine(self, result: Harvest, report_text: str, run_dir: str = "") -> str:
        """Take a span the gate refused out of the data lake, with its report; the model serving
        now keeps serving, and the rows stay harvested (the ledger) so they are not taken again."""
        if self.remote_data:
            return ""  # on a cluster the run failed before training; the span stays for inspection
        where = os.path.join(self.config.home, "quarantine", f"harvest-span-{result.span}")
        shutil.rmtree(where, ignore_errors=True)
        os.makedirs(os.path.dirname(where), exist_ok=True)
        shutil.move(result.span_dir, where)
        with open(os.path.join(where, "report.txt"), "w") as fh:
            fh.write(f"harvested span {result.span} from {self.log_dir}\n{report_text}\n"
                     + (f"run report: {run_dir}\n" if run_dir else ""))
        self.progress(f"  quarantined harvested span {result.span} at {where}: "
                      + " | ".join(report_text.splitlines()[:3]))
        alerts.notify(self.config.home, "harvest_quarantined", f"harvested span {result.span}",
                      f"the production traffic harvested as span {result.span} failed validation and was "
                      f"quarantined; the serving model is unchanged", report=report_text, quarantine=where,
                      run_report=run_dir or None)
        return where
