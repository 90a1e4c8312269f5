"""The fuzzer's long run (tests/fuzz.py) against a real V2 server: how many generated requests,
how many got a server error, how many refusals fell outside the protocol's error format, whether
the server is still ready, and its resident memory before and after.

    .venv/bin/python benchmarks/fuzz.py [--examples 2000] [--registry R]  -> benchmarks/results/fuzz.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import requests  # noqa: E402

from benchmarks import results_file  # noqa: E402
from serving.launch import running  # noqa: E402
from tests.fuzz import fuzz  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fuzz.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="generated cases per operation")
    parser.add_argument("--registry", help="a registry with a version (default: train span 1 in a temporary home)")
    args = parser.parse_args(argv)
    registry = args.registry or _trained_registry()
    with tempfile.TemporaryDirectory() as logs, running(registry, logs, protocol="v2", poll_seconds=5) as server:
        before = server.resident_mb()
        started = time.monotonic()
        result = fuzz(server.url, args.examples, seed=1)
        seconds = time.monotonic() - started
        ready = requests.get(f"{server.url}/v2/health/ready", timeout=30).status_code == 200
        after = server.resident_mb()
    results_file.write(RESULTS, {"examples_per_operation": args.examples, "seconds": round(seconds, 1),
                                 **result.as_dict(), "ready_after": ready,
                                 "resident_mb": {"before": round(before), "after": round(after)}})
    return 0 if ready and not result.server_errors and not result.outside_format else 1


def _trained_registry() -> str:
    from cd4ml.runner import run_and_report
    from pipelines.config import PipelineConfig

    home = tempfile.mkdtemp(prefix="cd4ml-fuzz-")
    config = PipelineConfig.from_env(home=home, span=1, epochs=5)
    run = run_and_report(config, progress=lambda _: None)
    if not run.pushed_version:
        raise SystemExit(f"training span 1 pushed nothing: {run.error or run.blessing}")
    return config.registry


if __name__ == "__main__":
    sys.exit(main())
