"""The pipeline's cost as data grows: a cold `cd4ml run` on 1x, 10x and 50x the span-1 rows.

    .venv/bin/python benchmarks/scale.py [--factors 1,10,50] [-o benchmarks/results/scale.json]

The bigger spans are span 1 repeated with small noise (the same days, so every split and every
validation rule behaves as on the real span): numeric features move by at most 0.01 inside their
domain, and casual/registered by a few rentals, bikers staying their sum. Each factor runs in a
fresh home, in its own process; the JSON has seconds per component, rows per second and the peak
resident memory of the run. Target: 50x cold in at most 3.5x the 1x time, in the same run.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import glob
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from components import features  # noqa: E402

RESULTS = os.path.join(REPO, "benchmarks", "results", "scale.json")
TARGET = 3.5


def span1_rows() -> List[Dict[str, str]]:
    path = sorted(glob.glob(os.path.join(REPO, "data", "bikeshare", "span-1", "*.csv")))[0]
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def synthesize(rows: List[Dict[str, str]], factor: int, seed: int = 0) -> List[Dict[str, object]]:
    """`factor` copies of every row; copies after the first get small noise (see the docstring)."""
    rng = random.Random(seed)
    out = []
    for copy in range(factor):
        for row in rows:
            new = features.parse_row(row)
            if copy:
                for name in features.NUMERIC_FEATURES:
                    f = features.feature(name)
                    new[name] = round(min(f.high, max(f.low, new[name] + rng.uniform(-0.01, 0.01))), 4)
                new["casual"] = max(0, new["casual"] + rng.randint(-2, 2))
                new["registered"] = max(0, new["registered"] + rng.randint(-2, 2))
                new[features.LABEL_KEY] = new["casual"] + new["registered"]
            out.append(new)
    return out


def run_cold(rows: List[Dict[str, object]], workdir: str) -> Dict[str, object]:
    data = os.path.join(workdir, "data", "span-1")
    os.makedirs(data)
    with open(os.path.join(data, "bikeshare.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=features.RAW_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    env = dict(os.environ, CD4ML_HOME=os.path.join(workdir, "home"), CD4ML_DATA_ROOT=os.path.dirname(data))
    env.pop("CD4ML_METADATA_PATH", None)
    cd4ml = os.path.join(os.path.dirname(sys.executable), "cd4ml")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run([cd4ml, "run", "--span", "1", "--json"], env=env, capture_output=True, text=True,
                          timeout=3600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"rows": summary["rows"], "wall_seconds": round(wall, 2), "run_seconds": summary["seconds"],
            "rows_per_second": round(summary["rows"] / wall, 1),
            "components": {s["node"]: s["seconds"] for s in summary["steps"]},
            "peak_rss_mb": round(max(peak, before) / 1024, 1), "status": summary["status"]}


def factor_args(argv, doc: str, output: str):
    """(args, factors) of a benchmark over 1x, 10x, 50x the span-1 rows (--factors, -o)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", default="1,10,50")
    parser.add_argument("-o", "--output", default=output)
    args = parser.parse_args(argv)
    return args, [int(f) for f in args.factors.split(",")]


def main(argv=None) -> int:
    args, factors = factor_args(argv, __doc__, RESULTS)
    base = span1_rows()
    result = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": {}}
    for factor in factors:
        with tempfile.TemporaryDirectory(prefix=f"cd4ml-scale-{factor}x-") as workdir:
            print(f"scale: {factor}x ({len(base) * factor} rows) ...", flush=True)
            figures = run_cold(synthesize(base, factor), workdir)
            result["runs"][f"{factor}x"] = figures
            slowest = sorted(figures["components"].items(), key=lambda kv: -kv[1])[:5]
            print(f"  {figures['wall_seconds']} s, {figures['rows_per_second']} rows/s, peak "
                  f"{figures['peak_rss_mb']} MB; slowest: {slowest}", flush=True)
    if len(factors) > 1:
        small, large = result["runs"][f"{factors[0]}x"], result["runs"][f"{factors[-1]}x"]
        ratio = large["wall_seconds"] / small["wall_seconds"]
        result["target"] = {"ratio": round(ratio, 2), "of": f"{factors[-1]}x / {factors[0]}x wall", "at_most": TARGET,
                            "met": ratio <= TARGET}
        print(json.dumps(result["target"]))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump(result, fh, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
