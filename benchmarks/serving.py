"""Serving benchmark: in-process SavedModel call, a trivial model behind seldon-core-microservice,
and our server (validation, detectors, prediction log on), at 1 and 100 rows per request, with 1
and several concurrent clients. Writes benchmarks/results/serving.json.

    .venv/bin/python benchmarks/serving.py [--registry DIR] [--requests N] [--clients 1,4]

Target (issue 3): our single-row p50 <= 1.3 x (trivial Seldon p50 + in-process p50). Everything is
localhost and bounded by request counts, so a run takes a minute or two on a 2-core machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Callable, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import requests  # noqa: E402

from components import features  # noqa: E402
from pipelines.config import PipelineConfig  # noqa: E402
from serving import registry as reg  # noqa: E402
from serving.launch import running  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results", "serving.json")


def summarize(latencies_s: List[float], wall_s: float) -> Dict[str, float]:
    ms = np.asarray(latencies_s) * 1e3
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "req_per_s": round(len(ms) / wall_s, 1)}


def measure(call: Callable[[], None], n: int, clients: int, warmup: int = 20) -> Dict[str, float]:
    for _ in range(warmup):
        call()

    def worker(count):
        out = []
        for _ in range(count):
            t = time.perf_counter()
            call()
            out.append(time.perf_counter() - t)
        return out

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(worker, [n // clients] * clients))
    return summarize([x for part in parts for x in part], time.perf_counter() - started)


def http_call(url: str, payload: Dict) -> Callable[[], None]:
    body = json.dumps(payload)
    headers = {"Content-Type": "application/json"}
    sessions = {}

    def call():
        import threading
        session = sessions.setdefault(threading.get_ident(), requests.Session())
        r = session.post(url, data=body, headers=headers, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
    return call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=PipelineConfig.from_env().registry)
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    parser.add_argument("--clients", default="1,4")
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]

    version, _ = reg.target(args.registry)
    if not version:
        print(f"benchmark: no complete version under {args.registry}; run `cd4ml run` first", file=sys.stderr)
        return 1
    from serving.version import LoadedVersion

    model = LoadedVersion(args.registry, version)
    with open(os.path.join(args.registry, version, "holdout.jsonl")) as fh:
        sample = [json.loads(line)["features"] for line in fh]
    rows = {1: sample[:1], 100: (sample * (100 // len(sample) + 1))[:100]}
    names = features.FEATURE_NAMES
    payloads = {n: {"data": {"names": names, "ndarray": [[r[k] for k in names] for r in rs]}}
                for n, rs in rows.items()}

    result = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "version": version, "detectors": model.detectors is not None,
              "requests_per_measurement": args.requests, "in_process": {}, "trivial_seldon": {},
              "cd4ml_server": {}}
    print(f"benchmark: version {version} (detectors: {model.detectors is not None})", flush=True)
    for n, rs in rows.items():
        # The raw-feature signature our server calls, and the tf.Example one (stack-notes floor).
        result["in_process"][f"{n}_rows"] = {"serving_raw": measure(lambda rs=rs: model.predict(rs), args.requests, 1)}
        print(f"  in-process {n} rows: {result['in_process'][f'{n}_rows']}", flush=True)

    with tempfile.TemporaryDirectory() as logs:
        for key, kwargs in (("trivial_seldon", {"model_class": "benchmarks.trivial_model.TrivialModel"}),
                            ("cd4ml_server", {"poll_seconds": 5})):
            with running(args.registry, os.path.join(logs, key), **kwargs) as srv:
                for n, payload in payloads.items():
                    for c in clients:
                        figures = measure(http_call(srv.predict_url, payload), args.requests, c)
                        result[key][f"{n}_rows_{c}_clients"] = figures
                        print(f"  {key} {n} rows, {c} clients: {figures}", flush=True)

    floor = (result["trivial_seldon"]["1_rows_1_clients"]["p50_ms"]
             + result["in_process"]["1_rows"]["serving_raw"]["p50_ms"])
    ours = result["cd4ml_server"]["1_rows_1_clients"]["p50_ms"]
    result["single_row_p50_ratio"] = {"ours_ms": ours, "trivial_seldon_plus_in_process_ms": round(floor, 3),
                                      "ratio": round(ours / floor, 3), "target": 1.3,
                                      "met": ours / floor <= 1.3}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result["single_row_p50_ratio"]), f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
