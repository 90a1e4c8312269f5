"""Pipeline benchmark: cold run, no-change rerun, per-component wall time, rows/s.

Each run is a fresh `cd4ml run --json` process, as a user would start it, so TensorFlow's import
is counted. The baseline measured in the same run is a bare `python -c "import tensorflow, tfx"`
(the fixed cost every run pays); ratios are quoted against it and between the two runs, because
absolute seconds on a shared 2-core machine move with the neighbours. For reference it also times
`import tfx.v1` (all of TFX), which the pipeline avoids (components/lazy_tfx.py).

    .venv/bin/python benchmarks/pipeline.py [--span 1] [--out benchmarks/results/pipeline.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CD4ML = os.path.join(os.path.dirname(sys.executable), "cd4ml")


def timed(cmd, env) -> tuple:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--span", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "pipeline.json"))
    args = parser.parse_args(argv)

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    import_s, _ = timed([sys.executable, "-c", "import tensorflow, tfx"], env)
    import_all_s, _ = timed([sys.executable, "-c", "import tensorflow, tfx.v1"], env)
    print(f"baseline: import tensorflow + tfx: {import_s:.1f} s (all of tfx.v1: {import_all_s:.1f} s)",
          flush=True)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               "baseline_import_s": round(import_s, 2), "import_tfx_v1_s": round(import_all_s, 2),
               "runs": {}}
    with tempfile.TemporaryDirectory(prefix="cd4ml-bench-") as home:
        for label in ("cold", "warm_rerun"):
            wall, proc = timed([CD4ML, "run", "--json", "--home", home, "--span", str(args.span)], env)
            if proc.returncode != 0:
                print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            summary = json.loads(proc.stdout[proc.stdout.index("\n{\n") if not proc.stdout.startswith("{") else 0:])
            run = {
                "wall_s": round(wall, 2),
                "pipeline_s": summary["seconds"],
                "rows": summary["rows"],
                "rows_per_s": round(summary["rows"] / wall, 1),
                "ran": [s["node"] for s in summary["steps"] if s["state"] == "ran"],
                "cached": [s["node"] for s in summary["steps"] if s["state"] == "cached"],
                "components_s": {s["node"]: s["seconds"] for s in summary["steps"]},
                "new_push": summary["new_push"],
            }
            results["runs"][label] = run
            print(f"{label}: {wall:.1f} s wall, {len(run['ran'])} ran, {len(run['cached'])} cached, "
                  f"{run['rows_per_s']} rows/s", flush=True)
    cold, warm = results["runs"]["cold"], results["runs"]["warm_rerun"]
    results["ratios"] = {
        "warm_over_cold": round(warm["wall_s"] / cold["wall_s"], 3),
        "cold_over_import": round(cold["wall_s"] / import_s, 2),
        "warm_over_import": round(warm["wall_s"] / import_s, 2),
    }
    results["targets"] = {"cold_s": 45, "warm_s": 15}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(results, fh, indent=2)
    slowest = sorted(cold["components_s"].items(), key=lambda kv: -kv[1])[:4]
    print("slowest cold components: " + ", ".join(f"{k} {v:.1f} s" for k, v in slowest))
    print(f"ratios: {results['ratios']}  -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
