"""Serving benchmark, both protocols, in one run: the in-process SavedModel call; the Open
Inference Protocol (V2) server (MLServer + our runtime: validation, detectors, prediction log on)
against the same runtime serving a trivial model; the Seldon v1 path against a trivial Seldon
model. 1 and 100 rows per request, 1 and 8 concurrent keep-alive clients; resident memory of
each server. Writes benchmarks/results/serving.json.

    .venv/bin/python benchmarks/serving.py [--registry DIR] [--requests N] [--rounds R] [--clients 1,8]

The servers run side by side and are measured in interleaved rounds (each round gives every
server a slice of the requests, in a rotating order): on a shared machine the load of the moment
then falls on all of them alike, so the ratios compare like with like even when the absolute
figures move between runs. Each figure also gives the server's CPU per request (every thread of
its process group, its socket handling included, read around each slice): what sizes a pod, and
steadier than a latency on a busy machine.

Targets: V2 single-row p50 <= 1.1x the trivial V2 model, V2 throughput with 8 clients >= 0.8x
of it, the V2 path at least as fast as the v1 path (single-row p50), and the same server with two
worker processes (`cd4ml serve --workers 2`: serving/v2_workers.py) at least 1.6x the throughput
of one, with 8 keep-alive connections from wrk (Debian's package; a Python client cannot load
two server processes), in interleaved rounds as the rest. A p50 ratio comes with a 95% interval
from its rounds (ratio_interval): whether it is under a target, or only was this hour. Without a target, our V2
server is also asked (the protocol's `outputs`) for the predictions alone, the one output the
trivial model answers: what the detectors' two outputs cost in the answer. Everything is localhost
and bounded by request counts, so a run takes a few minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import requests  # noqa: E402

from cd4ml.contract import PREDICTIONS  # noqa: E402
from components import features  # noqa: E402
from pipelines.config import PipelineConfig  # noqa: E402
from components import registry as reg  # noqa: E402
from serving.launch import running  # noqa: E402
from serving.request import v2_inputs  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results", "serving.json")
# Our V2 server asked (the protocol's `outputs`) for the predictions alone, as the trivial model answers.
PREDICTIONS_ONLY = "cd4ml_v2_predictions_only"


def summarize(latencies_s: List[float], wall_s: float) -> Dict[str, float]:
    ms = np.asarray(latencies_s) * 1e3
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "req_per_s": round(len(ms) / wall_s, 1)}


def timed(call: Callable[[], None], n: int, clients: int):
    """Latencies of n calls shared by `clients` threads, and the wall time they took."""
    def worker(count):
        out = []
        for _ in range(count):
            t = time.perf_counter()
            call()
            out.append(time.perf_counter() - t)
        return out

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(worker, [max(1, n // clients)] * clients))
    return [x for part in parts for x in part], time.perf_counter() - started


def measure(call: Callable[[], None], n: int, clients: int, warmup: int = 20) -> Dict[str, float]:
    for _ in range(warmup):
        call()
    return summarize(*timed(call, n, clients))


def interleaved(calls: Dict[str, Callable[[], None]], n: int, clients: int, rounds: int,
                warmup: int = 20, cpu: Optional[Dict[str, Callable[[], float]]] = None
                ) -> Tuple[Dict[str, Dict[str, float]], Dict[str, List[List[float]]]]:
    """Each call measured over n requests in `rounds` slices, the calls taking turns (the order
    rotates each round), so every one sees the same moments of the machine's load. `cpu`: key ->
    the CPU seconds its server has used so far (Microservice.cpu_seconds); the key's figures then
    also say what a request cost the server, read around each of its slices. Also each key's
    latencies round by round, for ratio_interval."""
    keys, cpu = list(calls), cpu or {}
    for key in keys:
        for _ in range(warmup):
            calls[key]()
    by_round: Dict[str, List[List[float]]] = {key: [] for key in keys}
    wall, used = dict.fromkeys(keys, 0.0), dict.fromkeys(keys, 0.0)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            before = cpu[key]() if key in cpu else 0.0
            lat, seconds = timed(calls[key], max(1, n // rounds), clients)
            used[key] += cpu[key]() - before if key in cpu else 0.0
            by_round[key].append(lat)
            wall[key] += seconds
    latencies = {key: [x for lat in by_round[key] for x in lat] for key in keys}
    out = {key: summarize(latencies[key], wall[key]) for key in keys}
    for key in cpu:
        out[key]["server_cpu_us_per_request"] = round(used[key] / len(latencies[key]) * 1e6, 1)
    return out, by_round


def ratio_interval(ours: List[List[float]], base: List[List[float]], draws: int = 2000,
                   seed: int = 0) -> Tuple[float, float]:
    """A 95% interval for p50(ours) / p50(base), two servers measured in the same interleaved
    rounds: the rounds are resampled with replacement, each keeping both servers' slices (a round
    is one moment of this shared machine's load, which falls on both alike), and the pooled p50s
    recomputed. It says whether a ratio near a target is on either side of it, or only this hour's."""
    rng = np.random.default_rng(seed)
    ours_arrays, base_arrays = [np.asarray(r) for r in ours], [np.asarray(r) for r in base]
    ratios = []
    for _ in range(draws):
        pick = rng.integers(0, len(ours_arrays), len(ours_arrays))
        ratios.append(np.median(np.concatenate([ours_arrays[i] for i in pick]))
                      / np.median(np.concatenate([base_arrays[i] for i in pick])))
    low, high = np.percentile(ratios, [2.5, 97.5])
    return round(float(low), 3), round(float(high), 3)


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


def wrk(url: str, payload: Dict, seconds: float, connections: int) -> Dict[str, float]:
    """Requests/s and latency of `connections` keep-alive connections for `seconds`, from wrk (C,
    Debian's package). A Python client tops out near 1,000 requests/s (the GIL), below what two
    server processes answer: it cannot show whether a second worker helps."""
    import re
    import subprocess

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"wrk.method = 'POST'\nwrk.body = {json.dumps(json.dumps(payload))}\n"
                     "wrk.headers['Content-Type'] = 'application/json'\n")
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.remove(script.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"{url}: wrk saw refusals:\n{out}")

    def ms(label):
        value, unit = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    requests_done = int(re.search(r"(\d+) requests in", out).group(1))
    return {"requests": requests_done, "seconds": seconds, "p50_ms": ms("50%"), "p99_ms": ms("99%")}


def wrk_interleaved(urls: Dict[str, str], payload: Dict, rounds: int, seconds: float, connections: int):
    totals = {key: {"requests": 0, "seconds": 0.0, "p50_ms": [], "p99_ms": []} for key in urls}
    keys = list(urls)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            figures = wrk(urls[key], payload, seconds, connections)
            totals[key]["requests"] += figures["requests"]
            totals[key]["seconds"] += figures["seconds"]
            totals[key]["p50_ms"].append(figures["p50_ms"])
            totals[key]["p99_ms"].append(figures["p99_ms"])
    return {key: {"requests": t["requests"], "req_per_s": round(t["requests"] / t["seconds"], 1),
                  "p50_ms_median_of_rounds": round(float(np.median(t["p50_ms"])), 3),
                  "p99_ms_median_of_rounds": round(float(np.median(t["p99_ms"])), 3)} for key, t in totals.items()}


def latency_target(ratio: float, interval: Tuple[float, float], target: float) -> Dict[str, object]:
    """A p50 ratio against its upper target: met when its whole 95% interval is at most the target,
    missed when all of it is above, and otherwise undecided (the run cannot tell: one run's
    ratio on either side of the target is this hour's load, not the server)."""
    low, high = interval
    verdict = "met" if high <= target else "missed" if low > target else "undecided"
    return {"ratio": round(ratio, 3), "target": target, "interval_95": [low, high], "verdict": verdict,
            "met": verdict == "met"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=PipelineConfig.from_env().registry)
    parser.add_argument("--requests", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds the requests are split into")
    parser.add_argument("--clients", default="1,8")
    parser.add_argument("--servers", default="trivial_v2,cd4ml_v2,cd4ml_v2_2_workers,trivial_seldon,cd4ml_seldon",
                        help="which servers to measure (a subset is for trying a change; it writes no JSON)")
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
    payloads = {"seldon": {n: {"data": {"names": names, "ndarray": [[r[k] for k in names] for r in rs]}}
                           for n, rs in rows.items()},
                "v2": {n: {"inputs": v2_inputs(rs)} for n, rs in rows.items()}}
    servers = {  # key -> (protocol, Microservice arguments)
        "trivial_v2": ("v2", {"model_class": "benchmarks.trivial_runtime.TrivialRuntime"}),
        "cd4ml_v2": ("v2", {"poll_seconds": 5}),
        "cd4ml_v2_2_workers": ("v2", {"poll_seconds": 5, "workers": 2}),
        "trivial_seldon": ("seldon", {"model_class": "benchmarks.trivial_model.TrivialModel"}),
        "cd4ml_seldon": ("seldon", {"poll_seconds": 5}),
    }
    result = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "version": version, "detectors": model.detectors is not None,
              "requests_per_measurement": args.requests, "interleaved_rounds": args.rounds, "in_process": {},
              **{key: {} for key in servers}, PREDICTIONS_ONLY: {}, "wrk": {}, "resident_mb": {}}
    print(f"benchmark: version {version} (detectors: {model.detectors is not None})", flush=True)
    for n, rs in rows.items():
        result["in_process"][f"{n}_rows"] = {"model_call": measure(lambda rs=rs: model.predict(rs), args.requests, 1)}
        print(f"  in-process {n} rows: {result['in_process'][f'{n}_rows']}", flush=True)

    chosen = args.servers.split(",")
    unknown = sorted(set(chosen) - set(servers))
    if unknown:
        parser.error(f"--servers: unknown {', '.join(unknown)} (choose from {', '.join(servers)})")
    chosen = [key for key in servers if key in chosen]
    with tempfile.TemporaryDirectory() as logs, contextlib.ExitStack() as stack:
        started = {key: stack.enter_context(running(args.registry, os.path.join(logs, key),
                                                    protocol=servers[key][0], **servers[key][1]))
                   for key in chosen}
        print(f"  servers up: {', '.join(chosen)}; {args.rounds} interleaved rounds", flush=True)
        single_row_rounds: Dict[str, List[List[float]]] = {}
        for n in rows:
            for c in clients:
                calls = {key: http_call(srv.predict_url, payloads[servers[key][0]][n]) for key, srv in started.items()}
                if "cd4ml_v2" in started:  # the same server asked for what the trivial model answers
                    calls[PREDICTIONS_ONLY] = http_call(started["cd4ml_v2"].predict_url,
                                                        dict(payloads["v2"][n], outputs=[{"name": PREDICTIONS}]))
                meters = {key: srv.cpu_seconds for key, srv in started.items()}
                if "cd4ml_v2" in started:
                    meters[PREDICTIONS_ONLY] = started["cd4ml_v2"].cpu_seconds
                figures_by_key, by_round = interleaved(calls, args.requests, c, args.rounds, cpu=meters)
                if (n, c) == (1, 1):
                    single_row_rounds = by_round
                    if {"cd4ml_v2", "trivial_v2"} <= set(by_round):  # a subset run's answer too
                        ratio = figures_by_key["cd4ml_v2"]["p50_ms"] / figures_by_key["trivial_v2"]["p50_ms"]
                        low, high = ratio_interval(by_round["cd4ml_v2"], by_round["trivial_v2"])
                        print(f"  single-row p50, ours / trivial: {ratio:.3f} (95% interval {low}-{high})", flush=True)
                for key, figures in figures_by_key.items():
                    result[key][f"{n}_rows_{c}_clients"] = figures
                    print(f"  {key} {n} rows, {c} clients: {figures}", flush=True)
        if {"cd4ml_v2", "cd4ml_v2_2_workers"} <= set(started):
            if shutil.which("wrk") is None:
                print("benchmark: no wrk (apt-get install wrk): the workers comparison is skipped", file=sys.stderr)
            else:
                for n in rows:
                    urls = {key: started[key].predict_url for key in ("cd4ml_v2", "cd4ml_v2_2_workers")}
                    figures = wrk_interleaved(urls, payloads["v2"][n], rounds=6, seconds=5, connections=max(clients))
                    for key, value in figures.items():
                        result["wrk"].setdefault(key, {})[f"{n}_rows_{max(clients)}_connections"] = value
                        print(f"  wrk {key} {n} rows, {max(clients)} connections: {value}", flush=True)
        for key, srv in started.items():
            result["resident_mb"][key] = srv.resident_mb()

    if set(chosen) != set(servers):
        print("benchmark: a subset of the servers measured; no JSON written")
        return 0

    def p50(key):
        return result[key]["1_rows_1_clients"]["p50_ms"]

    most = max(clients)
    throughput = (result["cd4ml_v2"][f"1_rows_{most}_clients"]["req_per_s"]
                  / result["trivial_v2"][f"1_rows_{most}_clients"]["req_per_s"])
    def rate(key, n):
        return result["wrk"][key][f"{n}_rows_{most}_connections"]["req_per_s"]

    def at_most(key, base, target):
        """A latency ratio's target, judged on its interval (see latency_target)."""
        return latency_target(p50(key) / p50(base), ratio_interval(single_row_rounds[key], single_row_rounds[base]),
                              target)

    result["targets"] = {
        "v2_single_row_p50_vs_trivial_v2": at_most("cd4ml_v2", "trivial_v2", 1.1),
        f"v2_2_workers_vs_1_throughput_{most}_connections_wrk": {
            "ratio": round(rate("cd4ml_v2_2_workers", 1) / rate("cd4ml_v2", 1), 3), "target": 1.6,
            "met": rate("cd4ml_v2_2_workers", 1) / rate("cd4ml_v2", 1) >= 1.6},
        f"v2_throughput_{most}_clients_vs_trivial_v2": {"ratio": round(throughput, 3), "target": 0.8,
                                                         "met": throughput >= 0.8},
        "v2_single_row_p50_vs_seldon_v1": at_most("cd4ml_v2", "cd4ml_seldon", 1.0),
    }
    # No target: what the two detector outputs cost in the answer (the detectors run either way).
    def cpu(key):
        return result[key]["1_rows_1_clients"]["server_cpu_us_per_request"]

    result["informative"] = {"v2_predictions_only_single_row_p50_vs_trivial_v2":
                             round(p50(PREDICTIONS_ONLY) / p50("trivial_v2"), 3),
                             # What a request costs the server, threads and socket handling included:
                             # steadier than a p50 on a shared machine, and what sizes a pod.
                             "v2_single_row_server_cpu_per_request_vs_trivial_v2":
                             round(cpu("cd4ml_v2") / cpu("trivial_v2"), 3),
                             f"v2_2_workers_vs_1_throughput_100_rows_{most}_connections_wrk":
                             round(rate("cd4ml_v2_2_workers", 100) / rate("cd4ml_v2", 100), 3)}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps({**result["targets"], **result["informative"]}, indent=2), f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
