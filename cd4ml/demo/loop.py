"""The whole loop on one machine, timed: `cd4ml demo` and benchmarks/loop.py run this.

  1. start a local bucket (gcp-storage-emulator, in this process) and a fresh project home
  2. train on span 1 (the real pipeline)          -> version A
  3. serve it (the Open Inference Protocol server, MLServer from .venv-v2; or Seldon v1)
  4. send span-2 traffic (every other day of Jul-Dec, with event times) and its feedback
                                                   -> the server's drift detector fires
  5. live MAE of A on the span-2 days held out of the traffic
  6. the drift trigger: harvest the labelled traffic into span 2, retrain on the window of spans
     2 and 1, validate, bless, push              -> version B (no file was dropped)
  7. the server answers with B without a restart (hot load); live MAE of B on the held-out days
  8. the data-drop path too: drop the published Jul-Dec file into the bucket; the watcher makes
     it span 3 and runs the pipeline           -> version C, hot-loaded
  9. roll back (answers with B), roll forward (answers with C again)
 10. guarded rollout: version A (winter only) is pushed again by mistake, guarded; it starts as a
     canary on a share of the Jul-Dec traffic, its live MAE guard rolls it back (or its outlier-rate
     guard, when that crosses its bound first: its own detectors, fitted on winter, flag most
     Jul-Dec rows), the server stops routing to it within a second, and a local webhook receiver
     gets the alert naming the guard
 11. print the timeline; stop the server and the emulator: nothing is left running
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import glob
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional

from cd4ml import alerts, promotion, rollout, storage
from cd4ml.contract import DRIFT_LOG, EVENT_TIME, MAE, MODEL_NAME, OVERALL_SLICE, default_log_dir, read_jsonl
from cd4ml.demo.json_server import LocalJsonServer
from cd4ml.runner import run_and_report
from cd4ml.triggers import drop
from cd4ml.triggers.drift import DriftRetrainer
from components import features
from pipelines import local_runner
from pipelines.config import REPO_ROOT, PipelineConfig
from serving.launch import Microservice
from serving.request import v2_inputs

SPAN_DATA = os.path.join(REPO_ROOT, "data", "bikeshare")
BUCKET = "cd4ml-demo"


@dataclasses.dataclass
class Step:
    name: str
    start: float
    seconds: float
    detail: str = ""


class Timeline:
    def __init__(self, progress: Callable[[str], None] = print):
        self.t0 = time.monotonic()
        self.steps: List[Step] = []
        self.progress = progress

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        began = time.monotonic()
        step = Step(name, began - self.t0, 0.0)
        self.progress(f"[{began - self.t0:7.1f} s] {name} ...")
        try:
            yield step
        except BaseException as exc:
            step.detail = f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise
        finally:
            step.seconds = time.monotonic() - began
            self.steps.append(step)
            self.progress(f"[{time.monotonic() - self.t0:7.1f} s] {name}: {step.detail or 'done'} "
                          f"({step.seconds:.1f} s)")

    def format(self) -> str:
        lines = ["timeline:"]
        for s in self.steps:
            lines.append(f"  {s.start:7.1f} s  +{s.seconds:6.1f} s  {s.name}" + (f"  ({s.detail})" if s.detail else ""))
        lines.append(f"  total {time.monotonic() - self.t0:.1f} s")
        return "\n".join(lines)

    def as_dict(self) -> Dict:
        return {"steps": [dataclasses.asdict(s) for s in self.steps], "total_s": time.monotonic() - self.t0}


class Server(Microservice):
    """The real server (serving.launch) and the client calls the demo makes, in either protocol.

    Answers are normalised to {"version", "request_id", "predictions"}.
    """

    def __init__(self, registry: str, log_dir: str, protocol: str = "v2", **kwargs):
        super().__init__(registry, log_dir, protocol=protocol, **kwargs)

    def predict(self, rows: List[Dict], event_times: Optional[List[str]] = None) -> Dict:
        import requests

        if self.protocol == "v2":
            reply = requests.post(self.predict_url, json={"inputs": v2_inputs(rows, event_times=event_times)},
                                  timeout=30)
            reply.raise_for_status()
            body = reply.json()
            return {"version": body["model_version"], "request_id": body["parameters"]["request_id"],
                    "predictions": body["outputs"][0]["data"]}
        names = features.FEATURE_NAMES + ([EVENT_TIME] if event_times else [])
        values = [dict(r, **({EVENT_TIME: t} if event_times else {})) for r, t in
                  zip(rows, event_times or [None] * len(rows))]
        body = {"data": {"names": names, "ndarray": [[v[n] for n in names] for v in values]}}
        reply = requests.post(self.predict_url, json=body, timeout=30)
        reply.raise_for_status()
        answer = reply.json()
        return {"version": answer["meta"]["tags"]["model_version"], "request_id": answer["meta"]["tags"]["request_id"],
                "predictions": answer["data"]["ndarray"]}

    def feedback(self, answer: Dict, truth: List[float]):
        import requests

        if self.protocol == "v2":
            body = {"request_id": answer["request_id"], "truth": truth}
        else:  # Seldon's shape: the response's tags (the server joins by request id) and the truth
            body = {"response": {"meta": {"tags": {"request_id": answer["request_id"],
                                                   "model_version": answer["version"]}},
                                 "data": {"ndarray": answer["predictions"]}},
                    "truth": {"data": {"ndarray": truth}}}
        reply = requests.post(self.feedback_url, json=body, timeout=30)
        if reply.status_code != 200:
            raise RuntimeError(f"feedback refused ({reply.status_code}): {reply.text[:300]}")

    def version(self, row: Dict) -> str:
        return self.predict([row])["version"]

    def experiment(self) -> Dict:
        """The experiment (or canary) the server routes by now; {} when none."""
        import requests

        reply = requests.get(f"{self.url}/v2/models/{MODEL_NAME}/experiment", timeout=30)
        reply.raise_for_status()
        return reply.json()

    def wait_for_version(self, version: str, row: Dict, timeout: float = 120) -> float:
        """Seconds until a request is answered by `version` (requests keep flowing meanwhile)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.version(row) == version:
                return time.monotonic() - began
            time.sleep(0.1)
        raise RuntimeError(f"the server still answers with {self.version(row)} after {timeout:.0f} s, not {version}")


def typed_rows(path: str) -> List[Dict]:
    """Raw CSV rows with each column in its schema type, the label included."""
    with open(path, newline="") as fh:
        return [features.parse_row(row) for row in csv.DictReader(fh)]


@dataclasses.dataclass
class LoopSettings:
    """What one run of the loop uses; the defaults are the demo's."""

    home: Optional[str] = None            # a fresh temporary home when None (removed unless keep)
    traffic_every: int = 2                # every n-th day of span 2 is sent (one request a day), the rest held out
    epochs: Optional[int] = None          # trainer epochs (None: the configured default)
    keep: bool = False
    data_dir: str = SPAN_DATA             # holds span-1/ and span-2/
    protocol: str = "v2"                  # the server's protocol: v2 (MLServer) or seldon
    server_class: type = Server           # Server, or a test double of it


class Loop:
    """The loop's steps, in order, each timed on the timeline (see the module docstring)."""

    def __init__(self, settings: LoopSettings, config: PipelineConfig, timeline: Timeline):
        self.s = settings
        self.config = config
        self.timeline = timeline
        self.log_dir = default_log_dir(config.registry)
        self.out: Dict = {"home": config.home}
        self.server = None
        self.client = None

    def start_bucket(self, emulator: str):
        with self.timeline.step("local bucket (gcp-storage-emulator)") as s:
            self.client = storage.client()
            storage.ensure_bucket(BUCKET, self.client)
            s.detail = f"gs://{BUCKET} at {emulator}"

    def train_first(self) -> str:
        with self.timeline.step("train on span 1 (Jan-Jun)") as s:
            first = run_and_report(dataclasses.replace(self.config, span=1), progress=_quiet)
            if first.exit_code != local_runner.OK or not first.pushed_version:
                raise RuntimeError(local_runner.format_summary(first))
            mae = first.metrics.get(OVERALL_SLICE, {}).get(MAE)
            s.detail = f"version {first.pushed_version}, eval MAE {mae:.1f}" if mae else first.pushed_version
        return first.pushed_version

    def start_server(self) -> Dict:
        with self.timeline.step("start the server") as s:
            self.server = self.s.server_class(self.config.registry, self.log_dir, protocol=self.s.protocol)
            self.server.wait_ready()
            probe = _features(typed_rows(_csv(self.s.data_dir, 1))[0])
            s.detail = (f"{self.s.protocol} protocol at {self.server.url} answers with version "
                        f"{self.server.version(probe)}")
        return probe

    def send_traffic(self):
        with self.timeline.step("span-2 traffic with feedback") as s:
            days = span_days(typed_rows(_csv(self.s.data_dir, 2)))
            sent = list(days)[::self.s.traffic_every]
            self.held_out = {d: rows for d, rows in days.items() if d not in sent}
            for day in sent:
                rows = days[day]
                answer = self.server.predict([_features(r) for r in rows], event_times=[_event_time(day)] * len(rows))
                self.server.feedback(answer, [float(r[features.LABEL_KEY]) for r in rows])
            drift = _wait_for_drift(self.log_dir)
            self.drift_seen = time.monotonic()
            s.detail = (f"{sum(len(days[d]) for d in sent)} rows of {len(sent)} days; drift "
                        f"{'YES' if drift and drift['is_drift'] else 'no'}"
                        + (f" on {', '.join(drift['drifted'][:5])}" if drift and drift.get("drifted") else ""))
            self.out["drift"] = drift

    def live_mae(self, when: str) -> Dict:
        """MAE of what the server answers on the held-out span-2 days (sent without feedback, so
        the harvest never takes them)."""
        with self.timeline.step(f"live MAE on the held-out span-2 days ({when})") as s:
            errors, versions = [], set()
            for day, rows in self.held_out.items():
                answer = self.server.predict([_features(r) for r in rows], event_times=[_event_time(day)] * len(rows))
                versions.add(answer["version"])
                errors += [abs(p - float(r[features.LABEL_KEY])) for p, r in zip(answer["predictions"], rows)]
            result = {"version": ", ".join(sorted(versions)), "mae": sum(errors) / len(errors), "rows": len(errors)}
            s.detail = f"version {result['version']}: MAE {result['mae']:.1f} over {len(errors)} rows"
        self.out.setdefault("live_mae", {})[when] = result
        return result

    def drift_retrain(self, probe: Dict) -> str:
        with self.timeline.step("drift trigger: harvest the labelled traffic, retrain on the window") as s:
            outcome = DriftRetrainer(self.config, log_dir=self.log_dir, min_rows=200, debounce_s=0, cooldown_s=0,
                                     progress=_quiet).check()
            if not outcome.version:
                raise RuntimeError(f"the drift retrain did not push a version: {outcome.decision.why}; "
                                   f"{outcome.outcome}")
            s.detail = (f"{outcome.decision.why} -> harvested span {outcome.harvest_span}, trained on spans "
                        f"{', '.join(map(str, outcome.window))} -> version {outcome.version}")
            self.out["drift_retrain"] = dataclasses.asdict(outcome)
        with self.timeline.step("server hot-loads the retrained version") as s:
            seconds = self.server.wait_for_version(outcome.version, probe)
            s.detail = f"answering with {outcome.version} {seconds:.1f} s after the push"
        self.out["drift_to_answer_s"] = time.monotonic() - self.drift_seen
        return outcome.version

    def drop_and_retrain(self, probe: Dict) -> str:
        handler = drop.make_handler(self.config, f"gs://{BUCKET}", "incoming/", client=self.client, progress=_quiet)
        drop_started = time.monotonic()
        with self.timeline.step("drop the Jul-Dec file into the bucket") as s:
            uri, generation = storage.upload(_csv(self.s.data_dir, 2), BUCKET, "incoming/", name="jul-dec.csv",
                                             gcs=self.client)
            s.detail = f"{uri}#{generation}"
        with self.timeline.step("watcher: new span, retrain, validate, bless, push") as s:
            results = handler.poll_once()
            if not results or results[0].outcome != drop.TRAINED or not results[0].version:
                raise RuntimeError(f"the drop did not produce a new version: {[r.line() for r in results]}")
            second = results[0].version
            s.detail = f"span {results[0].span} -> version {second} (run {results[0].run_id})"
        with self.timeline.step("server hot-loads the new version") as s:
            seconds = self.server.wait_for_version(second, probe)
            s.detail = f"answering with {second} {seconds:.1f} s after the push"
        self.out["drop_to_answer_s"] = time.monotonic() - drop_started
        self.out["drops"] = handler.ledger.history()
        return second

    def guarded_rollout(self, serving: str, winter: str):
        """A mistaken push of the winter-only model, caught on live traffic by its guard."""
        config = dataclasses.replace(self.config, rollout="guarded")
        with AlertReceiver() as hook, _alerts_to(hook, self.config.home):
            with self.timeline.step("guarded rollout: the winter-only model pushed again, as a canary") as s:
                bad = _push_again(self.config.registry, winter)
                started = rollout.step(config, self.log_dir)
                s.detail = f"version {bad} (a copy of {winter}): {started.line()}"
            with self.timeline.step("Jul-Dec traffic with feedback until a guard decides") as s:
                done, sent = None, 0
                while done is None or done.action == "waiting":
                    for day, rows in list(self.held_out.items())[sent % len(self.held_out):][:5]:
                        answer = self.server.predict([_features(r) for r in rows],
                                                     event_times=[_event_time(day)] * len(rows))
                        self.server.feedback(answer, [float(r[features.LABEL_KEY]) for r in rows])
                        sent += 1
                    done = rollout.step(config, self.log_dir)
                    if sent > 40 * len(self.held_out):
                        raise RuntimeError(f"no rollout decision after {sent} requests: {done.line()}")
                s.detail = f"{done.action} after {sent} requests: {done.why}"
                decided = time.monotonic()
            with self.timeline.step("the server stops routing to it; the alert arrives") as s:
                while self.server.experiment():
                    if time.monotonic() - decided > 30:
                        raise RuntimeError("the server still routes to the rolled-back canary")
                    time.sleep(0.02)
                seconds = time.monotonic() - decided
                alerts.alerter(self.config.home).flush(30)
                received = [a for a in hook.received if a["kind"] == "rolled_back"]
                s.detail = (f"only {serving} answers {seconds:.2f} s after the decision; the receiver got "
                            + (f"'{received[0]['summary'][:90]}...'" if received else "no alert"))
        self.out["guarded_rollout"] = {"version": bad, "action": done.action, "guard": done.guard,
                                       "evidence": done.evidence, "seconds_to_stop_routing": seconds,
                                       "alerts": hook.received}

    def roll_back_and_forward(self, second: str, probe: Dict):
        with self.timeline.step("roll back") as s:
            d = promotion.rollback(self.config.registry, "demo: roll back", self.config.metadata_path)
            seconds = self.server.wait_for_version(d.version, probe)
            s.detail = f"{d.previous} -> {d.version}, answering in {seconds:.1f} s (MLMD execution {d.execution_id})"
        with self.timeline.step("roll forward") as s:
            promotion.unpin(self.config.registry, "demo: roll forward", self.config.metadata_path)
            seconds = self.server.wait_for_version(second, probe)
            s.detail = f"-> {second}, answering in {seconds:.1f} s"


def _prepare_home(settings: LoopSettings) -> PipelineConfig:
    home = settings.home or tempfile.mkdtemp(prefix="cd4ml-loop-")
    if os.path.exists(os.path.join(home, "data")):
        raise RuntimeError(f"{home} already holds a demo; give a fresh --home")
    data_root = os.path.join(home, "data")
    os.makedirs(data_root)
    shutil.copytree(os.path.join(settings.data_dir, "span-1"), os.path.join(data_root, "span-1"))
    overrides = {"epochs": settings.epochs} if settings.epochs else {}
    return PipelineConfig.from_env(home=home, data_root=data_root, **overrides)


def run_loop(settings: Optional[LoopSettings] = None, progress: Callable[[str], None] = print) -> Dict:
    """Run the loop; returns {"timeline": ..., "versions": ..., "drop_to_answer_s": ..., "drops": ...}."""
    settings = settings or LoopSettings()
    config = _prepare_home(settings)
    loop = Loop(settings, config, Timeline(progress))
    try:
        with storage.local_emulator() as emulator:
            loop.start_bucket(emulator)
            first = loop.train_first()
            probe = loop.start_server()
            loop.send_traffic()
            loop.live_mae("before")
            harvested = loop.drift_retrain(probe)
            loop.live_mae("after")
            dropped = loop.drop_and_retrain(probe)
            loop.roll_back_and_forward(dropped, probe)
            loop.out["versions"] = [first, harvested, dropped]
            if settings.protocol == "v2":  # (the Seldon v1 wrapper shows no experiment to wait on)
                loop.guarded_rollout(dropped, first)
    finally:
        if loop.server is not None:
            loop.server.stop()
        if settings.home is None and not settings.keep:
            shutil.rmtree(config.home, ignore_errors=True)
    loop.out["timeline"] = loop.timeline.as_dict()
    loop.out["timeline_text"] = loop.timeline.format()
    return loop.out


class AlertReceiver(LocalJsonServer):
    """A local webhook receiver for the demo's alerts (cd4ml/alerts.py): keeps what it is sent."""

    def __init__(self):
        super().__init__()
        self.received: List[Dict] = []

    def handle(self, method, path, query, body, headers):
        self.received.append(json.loads(body))
        return 200, {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/cd4ml-alerts"


@contextlib.contextmanager
def _alerts_to(hook: AlertReceiver, home: str):
    """Alerts to the demo's receiver only, for the block (a user's own sinks are left alone)."""
    path = os.path.join(home, "demo-alerts.json")
    with open(path, "w") as fh:
        json.dump({"sinks": [{"type": "webhook", "name": "demo-receiver", "url": hook.url}]}, fh)
    saved = os.environ.get("CD4ML_ALERTS")
    os.environ["CD4ML_ALERTS"] = path
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("CD4ML_ALERTS", None)
        else:
            os.environ["CD4ML_ALERTS"] = saved


def _push_again(registry: str, version: str) -> str:
    """A copy of `version` as the newest version, pushed under CD4ML_ROLLOUT=guarded (MANIFEST last,
    as the pusher writes it)."""
    from cd4ml.contract import GUARDED, MANIFEST

    name = str(max(int(time.time()), *(int(v) + 1 for v in os.listdir(registry) if v.isdigit())))
    shutil.copytree(os.path.join(registry, version), os.path.join(registry, name),
                    ignore=shutil.ignore_patterns(MANIFEST, "APPROVAL.json"))
    with open(os.path.join(registry, version, MANIFEST)) as fh:
        manifest = json.load(fh)
    with open(os.path.join(registry, name, MANIFEST), "w") as fh:
        json.dump(dict(manifest, version=name, rollout=GUARDED), fh, indent=2, sort_keys=True)
    return name


def _quiet(_line: str):
    pass


def _csv(data_dir: str, span: int) -> str:
    return sorted(glob.glob(os.path.join(data_dir, f"span-{span}", "*.csv")))[0]


def _features(row: Dict) -> Dict:
    return {n: row[n] for n in features.FEATURE_NAMES}


def span_days(rows: List[Dict]) -> Dict[int, List[Dict]]:
    """A span's rows by day of the year, in day order."""
    days: Dict[int, List[Dict]] = {}
    for row in rows:
        days.setdefault(int(row["day"]), []).append(row)
    return dict(sorted(days.items()))


def _event_time(day: int) -> str:
    """The date of a day of 2011 (the data's year), as a client would send it."""
    return (datetime.date(2011, 1, 1) + datetime.timedelta(days=day - 1)).isoformat()


def _wait_for_drift(log_dir: str, timeout: float = 60) -> Optional[Dict]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        entries = list(read_jsonl(log_dir, DRIFT_LOG))
        if entries:
            last = entries[-1]
            if any(e.get("is_drift") for e in entries):
                return next(e for e in reversed(entries) if e.get("is_drift"))
        time.sleep(0.5)
    return last


def summary_json(result: Dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "timeline_text"}, indent=2, default=str)
