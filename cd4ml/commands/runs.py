"""List the pipeline runs recorded in ML Metadata, newest last.

For each run: when, how long, its status (the run's own summary when the runner wrote one: ok,
validation failed, not blessed, error; otherwise what MLMD says: complete or failed), how many
components ran and how many came from the cache, what it used (CPU seconds summed over its
components, the largest component's peak resident memory: pipelines/usage.py) and the model
version it pushed. `--steps` adds each component's state, duration and use; `--json` prints all of
it as JSON, bytes read and written included.
"""

from __future__ import annotations

import json
import os
import sys

from cd4ml.commands.common import add_config_flags, config_from

HELP = "list pipeline runs: status, cached components, durations, pushed version"


def register(parser):
    add_config_flags(parser)
    parser.add_argument("--last", type=int, default=0, help="only the last N runs")
    parser.add_argument("--steps", action="store_true", help="show every component of every run")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _summary(runs_dir: str, run_id: str):
    path = os.path.join(runs_dir, run_id, "summary.json")
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def collect(config):
    """Runs from MLMD, plus runs that stopped before the pipeline started (bad span files)."""
    from cd4ml import mlmd

    runs = []
    if mlmd.exists(config.metadata_path):
        for run in mlmd.list_runs(mlmd.open_store(config.metadata_path)):
            entry = run.to_dict()
            summary = _summary(config.runs_dir, run.run_id)
            entry["result"] = summary.get("status") if summary else run.status
            entry["span"] = summary.get("span") if summary and summary.get("span") is not None else run.span
            entry["wall_seconds"] = summary.get("seconds") if summary else None
            runs.append(entry)
    known = {r["run_id"] for r in runs}
    if os.path.isdir(config.runs_dir):
        for run_id in sorted(os.listdir(config.runs_dir)):
            summary = _summary(config.runs_dir, run_id)
            if run_id in known or not summary:
                continue
            runs.append({"run_id": run_id, "started": "", "seconds": summary.get("seconds"),
                         "status": "not started", "result": summary.get("status"), "span": summary.get("span"),
                         "wall_seconds": summary.get("seconds"), "ran": [], "cached": [], "failed": [],
                         "blessed": None, "pushed_version": "", "new_push": False, "steps": [],
                         "error": summary.get("error", "")})
    runs.sort(key=lambda r: r["run_id"])
    if config.price_vcpu_hour or config.price_gb_hour:
        from pipelines import usage

        for r in runs:
            used = [s["usage"] for s in r["steps"] if s.get("usage")]
            r["cost"] = round(usage.cost(used, config.price_vcpu_hour, config.price_gb_hour), 6) if used else None
    return runs


def main(args) -> int:
    config = config_from(args)
    runs = collect(config)
    if args.last:
        runs = runs[-args.last:]
    if args.json:
        print(json.dumps(runs, indent=2, default=str))
        return 0
    if not runs:
        print(f"no runs recorded under {config.home}", file=sys.stderr)
        return 0
    header = (f"{'run':24} {'spans':>6} {'result':18} {'ran':>3} {'cached':>6} {'seconds':>8} "
              f"{'cpu s':>7} {'peak MB':>8}  pushed")
    print(header)
    for r in runs:
        seconds = r["wall_seconds"] if r["wall_seconds"] is not None else r["seconds"]
        pushed = r["pushed_version"] + ("" if r["new_push"] or not r["pushed_version"] else " (cached)")
        spans = ",".join(map(str, r.get("window") or [])) or (str(r["span"]) if r["span"] is not None else "-")
        print(f"{r['run_id']:24} {spans:>6} {str(r['result']):18} {len(r['ran']):>3} {len(r['cached']):>6} "
              f"{seconds or 0:>8.1f} {_usage(r.get('usage'))}  {pushed or '-'}"
              + (f"  cost {r['cost']:.4f}" if r.get("cost") is not None else ""))
        if r["failed"]:
            print(f"{'':24} failed: {', '.join(r['failed'])}")
        if args.steps:
            for s in r["steps"]:
                print(f"{'':26}{s['node']:26} {s['state']:8} {s['seconds']:7.2f} s {_usage(s.get('usage'))}")
    return 0


def _usage(usage) -> str:
    """CPU seconds and peak resident MB as measured by the runner (pipelines/usage.py), or dashes."""
    if not usage:
        return f"{'-':>7} {'-':>8}"
    return f"{usage['cpu_seconds']:>7.1f} {usage['peak_mb']:>8.0f}"
