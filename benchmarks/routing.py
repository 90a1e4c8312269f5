"""The cost of routing: single-row p50 of the V2 server with a bandit experiment running against
the same server without one (target: at most +10 %).

A temporary registry holds the served version twice (champion A, challenger B: the same model, so
only the routing differs). One server, poll 0.5 s: measured without an experiment, then with one
(the server has picked it up and routes), then without again; the ratio is against the mean of
the two runs without, measured in the same run on this noisy shared machine.

    .venv/bin/python benchmarks/routing.py [--registry R] [--requests 400] [-o benchmarks/results/routing.json]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import results_file  # noqa: E402
from benchmarks.serving import http_call, measure  # noqa: E402


def main(argv=None) -> int:
    from pipelines.config import PipelineConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=PipelineConfig.from_env().registry)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("-o", "--output", default="benchmarks/results/routing.json")
    args = parser.parse_args(argv)
    import json

    import requests

    from cd4ml import experiment
    from components import registry as reg
    from serving.launch import running
    from serving.request import v2_inputs
    from tests.conftest import copy_version

    version, _ = reg.target(args.registry)
    if not version:
        print(f"routing benchmark: no complete version under {args.registry}; run `cd4ml run` first", file=sys.stderr)
        return 1
    with open(os.path.join(args.registry, version, "holdout.jsonl")) as fh:
        row = json.loads(fh.readline())["features"]
    payload = {"inputs": v2_inputs([row])}
    work = tempfile.mkdtemp(prefix="cd4ml-routing-")
    try:
        registry = os.path.join(work, "registry")
        copy_version(args.registry, version, registry, "1")
        copy_version(args.registry, version, registry, "2")
        from cd4ml import promotion

        promotion.promote(registry, "1", "champion")
        with running(registry, os.path.join(work, "logs"), protocol="v2", poll_seconds=0.5) as server:
            call = http_call(server.predict_url, payload)
            before = measure(call, args.requests, 1)
            experiment.start(registry, ["2"], reason="routing benchmark")
            status_url = f"{server.url}/v2/models/bike-demand/experiment"
            while not requests.get(status_url, timeout=10).json():
                time.sleep(0.2)
            during = measure(call, args.requests, 1)
            experiment.conclude(registry, os.path.join(work, "logs"), force_stop=True)
            while requests.get(status_url, timeout=10).json():
                time.sleep(0.2)
            after = measure(call, args.requests, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    baseline = (before["p50_ms"] + after["p50_ms"]) / 2
    ratio = during["p50_ms"] / baseline
    results_file.write(args.output, {
        "without_experiment_before": before, "with_experiment": during, "without_experiment_after": after,
        "p50_ratio": round(ratio, 3), "target": 1.1, "met": ratio <= 1.1})
    return 0


if __name__ == "__main__":
    sys.exit(main())
