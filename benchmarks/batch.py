"""Batch scoring's throughput: `cd4ml predict` (Beam RunInference) on 1x, 10x and 50x the span-1
rows, against the same rows sent to the V2 server in requests of 100 rows by 8 clients.

    .venv/bin/python benchmarks/batch.py [--factors 1,10,50] [-o benchmarks/results/batch.json]

A version is trained first in a temporary home (`cd4ml run --span 1`). The bigger inputs are span 1
repeated with small noise (benchmarks/scale.py). Each batch run is its own process (a fresh Beam
DirectRunner, the model loaded once), timed end to end with its start-up; the server is started
once and measured after a warm-up. Target: the cost grows no faster than the rows (50x the rows
in at most 50x the 1x time), measured in the same run; the server comparison is informative.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import results_file  # noqa: E402
from benchmarks.scale import factor_args, span1_rows, synthesize  # noqa: E402
from components import features  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results", "batch.json")
CD4ML = [sys.executable, "-m", "cd4ml.cli"]
CLIENTS, ROWS_PER_REQUEST = 8, 100


def train(home: str) -> str:
    """A version to score with: span 1 trained in `home`; its registry."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CD4ML_")}
    out = subprocess.run([*CD4ML, "run", "--home", home, "--span", "1"], cwd=REPO, env=environ,
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"training failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return os.path.join(home, "registry")


def write_csv(path: str, rows: List[Dict[str, object]]):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=features.FEATURE_NAMES, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def batch_seconds(registry: str, path: str, out: str) -> float:
    began = time.monotonic()
    proc = subprocess.run([*CD4ML, "predict", "--registry", registry, path, out], cwd=REPO,
                          capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"cd4ml predict failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return time.monotonic() - began


def server_seconds(url: str, rows: List[Dict[str, object]]) -> float:
    import requests

    from serving.request import v2_inputs

    bodies = [json.dumps({"inputs": v2_inputs(rows[i:i + ROWS_PER_REQUEST])})
              for i in range(0, len(rows), ROWS_PER_REQUEST)]
    session_per_thread = {}

    def send(body: str):
        import threading

        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        answer = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
        answer.raise_for_status()

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, bodies))
    return time.monotonic() - began


def main(argv=None) -> int:
    args, factors = factor_args(argv, __doc__, RESULTS)
    from serving.launch import running

    work = tempfile.mkdtemp(prefix="cd4ml-batch-")
    registry = train(os.path.join(work, "home"))
    base = span1_rows()
    runs = []
    with running(registry, os.path.join(work, "logs"), protocol="v2") as server:
        warm = [features.parse_row(r) for r in base[:ROWS_PER_REQUEST * CLIENTS]]
        server_seconds(server.predict_url, warm)
        for factor in factors:
            rows = synthesize(base, factor)
            path = os.path.join(work, f"rows-{factor}x.csv")
            write_csv(path, rows)
            batch = batch_seconds(registry, path, os.path.join(work, f"out-{factor}x"))
            served = server_seconds(server.predict_url, [{n: r[n] for n in features.FEATURE_NAMES} for r in rows])
            runs.append({"factor": factor, "rows": len(rows), "batch_seconds": round(batch, 2),
                         "batch_rows_per_s": round(len(rows) / batch), "server_seconds": round(served, 2),
                         "server_rows_per_s": round(len(rows) / served),
                         "batch_vs_server": round(served / batch, 2)})
            print(json.dumps(runs[-1]))
    first, last = runs[0], runs[-1]
    growth = (last["batch_seconds"] / first["batch_seconds"]) / (last["rows"] / first["rows"])
    results_file.write(args.output, {
        "what": "cd4ml predict (Beam RunInference, DirectRunner, one process each, start-up included) vs the "
                f"V2 server ({CLIENTS} clients, {ROWS_PER_REQUEST} rows a request), same rows",
        "runs": runs,
        "target": {"rule": "batch cost grows no faster than the rows: time ratio / rows ratio <= 1",
                   "value": round(growth, 3), "met": growth <= 1.0}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
