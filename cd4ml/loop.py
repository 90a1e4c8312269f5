"""The whole loop on one machine, timed: the demo (`cd4ml demo`) and benchmarks/loop.py run this.

  1. start a local bucket (gcp-storage-emulator, in this process) and a fresh project home
  2. train on span 1 (the real pipeline)          -> version A
  3. serve it (seldon-core-microservice from .venv-serving, registry poll every second)
  4. send span-2 traffic with feedback             -> the server's drift detector fires
  5. the drift trigger decides (debounce, cooldown, labelled rows; shown, not acted on: the drop is)
  6. drop span 2 into the bucket; the watcher makes it span 2 and runs the pipeline -> version B
  7. the server answers with B without a restart (hot load)
  8. roll back (answers with A), roll forward (answers with B again)
  9. print the timeline; stop the server and the emulator: nothing is left running
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import tempfile
import time
from typing import Callable, Dict, Iterator, List, Optional

from pipelines.config import REPO_ROOT, PipelineConfig
from serving.launch import Microservice, free_port

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


@contextlib.contextmanager
def local_bucket() -> Iterator[str]:
    """gcp-storage-emulator in this process; STORAGE_EMULATOR_HOST set while it runs."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        server.stop()
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old


class Server(Microservice):
    """The real seldon-core-microservice (serving.launch), plus the client calls the demo makes."""

    def predict(self, rows: List[Dict]) -> Dict:
        import requests

        from components import features

        names = features.FEATURE_NAMES
        body = {"data": {"names": names, "ndarray": [[r[n] for n in names] for r in rows]}}
        response = requests.post(f"{self.url}/api/v1.0/predictions", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def feedback(self, answer: Dict, truth: List[float]):
        import requests

        # Only request id and version go back with the predictions: the server joins by request id.
        tags = {k: answer["meta"]["tags"][k] for k in ("request_id", "model_version")}
        response = {"meta": {"tags": tags}, "data": answer["data"]}
        reply = requests.post(f"{self.url}/api/v1.0/feedback", timeout=30,
                              json={"response": response, "truth": {"data": {"ndarray": truth}}})
        if reply.status_code != 200:
            raise RuntimeError(f"feedback refused ({reply.status_code}): {reply.text[:300]}")

    def version(self, row: Dict) -> str:
        return self.predict([row])["meta"]["tags"]["model_version"]

    def wait_for_version(self, version: str, row: Dict, timeout: float = 120) -> float:
        """Seconds until a request is answered by `version` (requests keep flowing meanwhile)."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            if self.version(row) == version:
                return time.monotonic() - began
            time.sleep(0.1)
        raise RuntimeError(f"the server still answers with {self.version(row)} after {timeout:.0f} s, not {version}")


def typed_rows(path: str) -> List[Dict]:
    """Raw CSV rows with each feature in its schema type, plus the label."""
    from components import features

    casts = {f.name: (int if f.dtype == "int" else float if f.dtype == "float" else str)
             for f in features.all_columns()}
    with open(path, newline="") as fh:
        return [{k: casts[k](v) if k in casts else v for k, v in row.items()} for row in csv.DictReader(fh)]


class InProcessServer(Server):
    """The serving core in this process (same ServingCore as the Seldon class), for tests.

    Speaks the same methods as Server; answers come back in Seldon's response shape.
    """

    def __init__(self, registry: str, log_dir: str, poll_seconds: float = 1.0, drift_window: int = 200):
        from serving.core import ServingCore

        self.core = ServingCore(registry, log_dir=log_dir, poll_seconds=poll_seconds,
                                drift_window=drift_window)
        self.url = "in-process"

    def wait_ready(self, timeout: float = 300):
        self.core.load()

    def predict(self, rows: List[Dict]) -> Dict:
        result = self.core.predict({"jsonData": rows})
        return {"data": {"names": ["predictions"], "ndarray": result.predictions},
                "meta": {"tags": {"model_version": result.version, "request_id": result.request_id}}}

    def feedback(self, answer: Dict, truth: List[float]):
        self.core.feedback(truth, request_id=answer["meta"]["tags"]["request_id"])

    def stop(self):
        self.core.close()


def run_loop(home: Optional[str] = None, progress: Callable[[str], None] = print, traffic_rows: int = 600,
             batch: int = 20, epochs: Optional[int] = None, keep: bool = False, data_dir: str = SPAN_DATA,
             server_class=Server) -> Dict:
    """Run the loop; returns {"timeline": ..., "versions": ..., "drop_to_answer_s": ...}.

    `data_dir` holds span-1/ and span-2/ (the repository's data by default); `server_class` is
    Server (seldon-core-microservice) or InProcessServer (tests).
    """
    from cd4ml import drift_retrain, promotion, triggers
    from pipelines import local_runner

    from components import features

    own_home = home is None
    home = home or tempfile.mkdtemp(prefix="cd4ml-loop-")
    if os.path.exists(os.path.join(home, "data")):
        raise RuntimeError(f"{home} already holds a demo; give a fresh --home")
    data_root = os.path.join(home, "data")
    os.makedirs(data_root)
    shutil.copytree(os.path.join(data_dir, "span-1"), os.path.join(data_root, "span-1"))
    overrides = {"epochs": epochs} if epochs else {}
    config = PipelineConfig.from_env(home=home, data_root=data_root, **overrides)
    timeline = Timeline(progress)
    quiet = lambda _: None  # noqa: E731
    out: Dict = {"home": home}
    server = None
    try:
        with local_bucket() as emulator:
            with timeline.step("local bucket (gcp-storage-emulator)") as s:
                client = triggers.storage_client()
                triggers.ensure_bucket(BUCKET, client)
                s.detail = f"gs://{BUCKET} at {emulator}"
            with timeline.step("train on span 1 (Jan-Jun)") as s:
                first = local_runner.run(dataclasses.replace(config, span=1), progress=quiet)
                if first.exit_code != local_runner.OK or not first.pushed_version:
                    raise RuntimeError(local_runner.format_summary(first))
                mae = first.metrics.get("overall", {}).get("mean_absolute_error")
                s.detail = f"version {first.pushed_version}, eval MAE {mae:.1f}" if mae else first.pushed_version
            log_dir = os.path.join(home, "serving-logs")
            with timeline.step("start the server") as s:
                server = server_class(config.registry, log_dir)
                server.wait_ready()
                probe = _features(typed_rows(_csv(data_dir, 1))[0])
                s.detail = f"{server.url} answers with version {server.version(probe)}"
            with timeline.step("span-2 traffic with feedback") as s:
                rows = typed_rows(_csv(data_dir, 2))
                step = max(1, len(rows) // traffic_rows)
                rows = rows[::step][:traffic_rows]
                for i in range(0, len(rows), batch):
                    chunk = rows[i:i + batch]
                    answer = server.predict([_features(r) for r in chunk])
                    server.feedback(answer, [float(r[features.LABEL_KEY]) for r in chunk])
                drift = _wait_for_drift(log_dir)
                s.detail = (f"{len(rows)} rows"
                            + f"; drift {'YES' if drift and drift['is_drift'] else 'no'}"
                            + (f" on {', '.join(drift['drifted'][:5])}" if drift and drift.get("drifted") else ""))
                out["drift"] = drift
            with timeline.step("drift trigger decision") as s:
                decision = drift_retrain.DriftRetrainer(config, log_dir=log_dir, min_rows=200, debounce_s=0,
                                                        progress=quiet).decide()
                s.detail = f"{decision.action}: {decision.why}"
            handler = triggers.make_handler(config, f"gs://{BUCKET}", "incoming/", client=client, progress=quiet)
            drop_started = time.monotonic()
            with timeline.step("drop span 2 (Jul-Dec) into the bucket") as s:
                uri, generation = triggers.upload(_csv(data_dir, 2), BUCKET,
                                                  "incoming/", name="jul-dec.csv", client=client)
                s.detail = f"{uri}#{generation}"
            with timeline.step("watcher: new span, retrain, validate, bless, push") as s:
                results = handler.poll_once()
                if not results or results[0].outcome != triggers.TRAINED or not results[0].version:
                    raise RuntimeError(f"the drop did not produce a new version: {[r.line() for r in results]}")
                second = results[0].version
                s.detail = f"span {results[0].span} -> version {second} (run {results[0].run_id})"
            with timeline.step("server hot-loads the new version") as s:
                seconds = server.wait_for_version(second, probe)
                s.detail = f"answering with {second} {seconds:.1f} s after the push"
            out["drop_to_answer_s"] = time.monotonic() - drop_started
            with timeline.step("roll back") as s:
                d = promotion.rollback(config.registry, "demo: roll back", config.metadata_path)
                seconds = server.wait_for_version(d.version, probe)
                s.detail = (f"{d.previous} -> {d.version}, answering in {seconds:.1f} s "
                            f"(MLMD execution {d.execution_id})")
            with timeline.step("roll forward") as s:
                d = promotion.unpin(config.registry, "demo: roll forward", config.metadata_path)
                seconds = server.wait_for_version(second, probe)
                s.detail = f"-> {second}, answering in {seconds:.1f} s"
            out["versions"] = [first.pushed_version, second]
            out["drops"] = handler.ledger.records()
    finally:
        if server is not None:
            server.stop()
        if own_home and not keep:
            shutil.rmtree(home, ignore_errors=True)
    out["timeline"] = timeline.as_dict()
    out["timeline_text"] = timeline.format()
    return out


def _csv(data_dir: str, span: int) -> str:
    import glob

    return sorted(glob.glob(os.path.join(data_dir, f"span-{span}", "*.csv")))[0]


def _features(row: Dict) -> Dict:
    from components import features

    return {n: row[n] for n in features.FEATURE_NAMES}


def _wait_for_drift(log_dir: str, timeout: float = 60) -> Optional[Dict]:
    from cd4ml.drift_retrain import read_jsonl

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        entries = list(read_jsonl(log_dir, "drift"))
        if entries:
            last = entries[-1]
            if any(e.get("is_drift") for e in entries):
                return next(e for e in reversed(entries) if e.get("is_drift"))
        time.sleep(0.5)
    return last


def summary_json(result: Dict) -> str:
    return json.dumps({k: v for k, v in result.items() if k != "timeline_text"}, indent=2, default=str)
