"""A soak of the V2 server: `--minutes` (10) of `--clients` (16) threads mixing REST JSON infer,
REST binary infer (tritonclient.http's defaults), gRPC infer (tritonclient.grpc), feedback,
explain, metrics scrapes and bad requests, while a new version is pushed and hot-loaded every
minute and a bandit experiment starts (minute 3) and ends (minute 6). Not in `make test`.

Measured: every valid request answered (0 failures wanted), every answer naming a version of the
registry, bad requests refused with a 4xx, and the server's resident memory, threads and open files
sampled every 10 s: memory at the end against minute 2 (within 10 % wanted), threads and files not
growing. Writes benchmarks/results/soak.json.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--clients 16] [--registry R]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from benchmarks import results_file  # noqa: E402
from cd4ml.contract import MANIFEST, MODEL_NAME  # noqa: E402
from components import features  # noqa: E402
from serving.launch import running  # noqa: E402
from serving.request import v2_inputs  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "soak.json")
NUMPY = {"INT64": np.int64, "FP32": np.float32, "BYTES": np.object_}
MIX = [("rest_json", 40), ("rest_binary", 12), ("grpc", 12), ("feedback", 16), ("explain", 2), ("metrics", 3),
       ("bad", 15)]


def push_copy(registry: str, source: str) -> str:
    """A new version (a copy of `source`), MANIFEST last, as the pusher writes one."""
    name = str(max(int(v) for v in os.listdir(registry) if v.isdigit()) + 1)
    shutil.copytree(os.path.join(registry, source), os.path.join(registry, name),
                    ignore=shutil.ignore_patterns(MANIFEST, "APPROVAL.json"))
    shutil.copyfile(os.path.join(registry, source, MANIFEST), os.path.join(registry, name, MANIFEST))
    return name


def process_stats(server) -> dict:
    """Threads and open files of the server's process group."""
    threads = files = 0
    for pid in server.pids():
        try:
            with open(f"/proc/{pid}/status") as fh:
                threads += next(int(line.split()[1]) for line in fh if line.startswith("Threads:"))
            files += len(os.listdir(f"/proc/{pid}/fd"))
        except (OSError, StopIteration, ValueError):
            continue
    return {"threads": threads, "open_files": files}


class Soak:
    def __init__(self, server, registry: str, rows, clients: int):
        import tritonclient.grpc as grpcclient
        import tritonclient.http as httpclient

        self.server, self.registry, self.rows, self.clients = server, registry, rows, clients
        self.http = threading.local()
        self.grpc_client = grpcclient
        self.http_client = httpclient
        self.counts = collections.Counter()
        self.retried = 0  # metrics scrapes sent again after a stale keep-alive connection
        self.failures = collections.Counter()
        self.first_failures = []
        self.versions_seen = collections.Counter()
        self.answered = []  # (request_id, predictions) for feedback
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def _session(self):
        if not hasattr(self.http, "session"):
            self.http.session = requests.Session()
            self.http.triton = self.http_client.InferenceServerClient(self.server.url[len("http://"):])
            self.http.grpc = self.grpc_client.InferenceServerClient(f"127.0.0.1:{self.server.grpc_port}")
        return self.http

    def fail(self, kind: str, what: str):
        with self.lock:
            self.failures[kind] += 1
            if len(self.first_failures) < 10:
                self.first_failures.append(f"{kind}: {what[:200]}")

    def one(self, kind: str):
        s = self._session()
        batch = random.sample(self.rows, random.choice((1, 1, 1, 5, 20)))
        if kind == "rest_json":
            reply = s.session.post(self.server.predict_url, json={"inputs": v2_inputs(batch)}, timeout=60)
            if reply.status_code != 200:
                return self.fail(kind, reply.text)
            body = reply.json()
            self.seen(body["model_version"])
            with self.lock:
                self.answered.append((body["parameters"]["request_id"], len(batch)))
                del self.answered[:-2000]
        elif kind in ("rest_binary", "grpc"):
            client = self.http_client if kind == "rest_binary" else self.grpc_client
            inputs = []
            for f in features.FEATURES:
                tensor = client.InferInput(f.name, [len(batch)], f.types.v2)
                tensor.set_data_from_numpy(np.array([r[f.name] for r in batch], dtype=NUMPY[f.types.v2]))
                inputs.append(tensor)
            result = (s.triton if kind == "rest_binary" else s.grpc).infer(MODEL_NAME, inputs)
            response = result.get_response() if kind == "rest_binary" else result.get_response(as_json=True)
            self.seen(response["model_version"])
        elif kind == "feedback":
            with self.lock:
                known = random.choice(self.answered) if self.answered else None
            if known is None:
                return
            reply = s.session.post(self.server.feedback_url, timeout=60,
                                   json={"request_id": known[0], "truth": [100.0] * known[1]})
            if reply.status_code != 200:
                return self.fail(kind, reply.text)
        elif kind == "explain":
            reply = s.session.post(self.server.explain_url, json={"inputs": v2_inputs(batch[:1])}, timeout=60)
            if reply.status_code != 200:
                return self.fail(kind, reply.text)
            self.seen(reply.json()["model_version"])
        elif kind == "metrics":
            try:
                reply = s.session.get(self.server.metrics_url, timeout=60)
            except requests.ConnectionError:
                # The scrape went out on a pooled keep-alive connection just as the server closed it
                # for idling (uvicorn: after 5 s): both soaks before this retry lost one scrape so.
                # A scraper retries an idempotent GET then (Prometheus's Go client does); counted.
                with self.lock:
                    self.retried += 1
                reply = s.session.get(self.server.metrics_url, timeout=60)
            if reply.status_code != 200:
                return self.fail(kind, "metrics scrape failed")
        else:  # bad: a category the model never saw; must be refused with a 4xx, never answered
            bad = [dict(batch[0], weathersit="sandstorm")]
            reply = s.session.post(self.server.predict_url, json={"inputs": v2_inputs(bad)}, timeout=60)
            if not 400 <= reply.status_code < 500:
                return self.fail(kind, f"{reply.status_code} {reply.text}")
        with self.lock:
            self.counts[kind] += 1

    def seen(self, version: str):
        with self.lock:
            self.versions_seen[version] += 1

    def client(self, seed: int):
        random.seed(seed)
        kinds, weights = zip(*MIX)
        while not self.stop.is_set():
            kind = random.choices(kinds, weights)[0]
            try:
                self.one(kind)
            except Exception as err:  # noqa: BLE001 - a failed valid request is what the soak counts
                self.fail(kind, f"{type(err).__name__}: {err}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--registry", help="a registry whose newest version is copied (default: train span 1)")
    args = parser.parse_args(argv)
    from benchmarks.fuzz import _trained_registry
    from cd4ml import experiment

    work = tempfile.mkdtemp(prefix="cd4ml-soak-")
    source_registry = args.registry or _trained_registry()
    registry = os.path.join(work, "registry")
    newest = max((v for v in os.listdir(source_registry) if v.isdigit()), key=int)
    shutil.copytree(os.path.join(source_registry, newest), os.path.join(registry, "1000"))
    with open(os.path.join(registry, "1000", "holdout.jsonl")) as fh:
        rows = [json.loads(line)["features"] for line in fh]
    samples, events = [], []
    with running(registry, os.path.join(work, "logs"), protocol="v2", poll_seconds=5) as server:
        soak = Soak(server, registry, rows, args.clients)
        threads = [threading.Thread(target=soak.client, args=(i,), daemon=True) for i in range(args.clients)]
        started = time.monotonic()
        for t in threads:
            t.start()
        minute, exp_started = 0, False
        while time.monotonic() - started < args.minutes * 60:
            time.sleep(10)
            elapsed = time.monotonic() - started
            samples.append({"t_s": round(elapsed), "rss_mb": server.resident_mb(), **process_stats(server),
                            "requests": sum(soak.counts.values())})
            print(json.dumps(samples[-1]), flush=True)
            if int(elapsed // 60) > minute:
                minute = int(elapsed // 60)
                pushed = push_copy(registry, "1000")
                events.append({"t_s": round(elapsed), "pushed": pushed})
                if minute == 3 and not exp_started:
                    # the version first served against the one pushed just now
                    exp = experiment.start(registry, ["1000"], min_feedback=10 ** 9, reason="soak")
                    events.append({"t_s": round(elapsed), "experiment_started": exp.id})
                    exp_started = True
                if minute == 6 and exp_started:
                    done = experiment.conclude(registry, os.path.join(work, "logs"), force_stop=True, reason="soak")
                    events.append({"t_s": round(elapsed), "experiment_ended": done["action"]})
        soak.stop.set()
        for t in threads:
            t.join(timeout=60)
        seconds = time.monotonic() - started
    versions = set(v for v in os.listdir(registry) if v.isdigit())
    at_2 = next((s for s in samples if s["t_s"] >= 120), samples[0])
    end = samples[-1]
    valid = sum(n for k, n in soak.counts.items() if k != "bad")
    doc = {"minutes": round(seconds / 60, 2), "clients": args.clients, "requests": dict(soak.counts),
           "valid_requests": valid, "requests_per_s": round(sum(soak.counts.values()) / seconds, 1),
           "failed": dict(soak.failures), "first_failures": soak.first_failures,
           "metrics_scrapes_retried_on_a_closed_keep_alive_connection": soak.retried,
           "answers_naming_a_registry_version": sum(n for v, n in soak.versions_seen.items() if v in versions),
           "answers_naming_something_else": sum(n for v, n in soak.versions_seen.items() if v not in versions),
           "versions_answered": len(soak.versions_seen), "events": events,
           "memory_mb": {"minute_2": at_2["rss_mb"], "end": end["rss_mb"],
                         "end_over_minute_2": round(end["rss_mb"] / at_2["rss_mb"], 3)},
           "threads": {"minute_2": at_2["threads"], "end": end["threads"]},
           "open_files": {"minute_2": at_2["open_files"], "end": end["open_files"]}, "samples": samples}
    results_file.write(RESULTS, doc, echo=False)
    print(json.dumps({k: v for k, v in doc.items() if k != "samples"}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not soak.failures and doc["memory_mb"]["end_over_minute_2"] <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
