"""The cost of an explanation: one row explained, p50/p99, against the 50 ms target.

Measured three ways on the served version of a registry, in the same run:
- in process: the version's explainer alone (2^11 coalitions x the background rows through the
  raw signature, scoring/explain.py);
- over HTTP on the V2 server (POST /v2/models/bike-demand/explain), one client;
- the same server's infer of the same row, as the floor an explanation adds to.
Also the explanation of 10 rows per request (rows per second), and the time to compute the
global importances the pipeline ships (the ModelExplainer's own work for one model).

    .venv/bin/python benchmarks/explain.py [--registry R] [--requests 200] [-o benchmarks/results/explain.json]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import results_file  # noqa: E402
from benchmarks.serving import http_call, measure, summarize  # noqa: E402

TARGET_MS = 50.0


def main(argv=None) -> int:
    from pipelines.config import PipelineConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", default=PipelineConfig.from_env().registry)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("-o", "--output", default="benchmarks/results/explain.json")
    args = parser.parse_args(argv)

    from scoring import detector_core, explain
    from components import registry as reg
    from serving.launch import running
    from serving.request import v2_inputs
    from serving.version import LoadedVersion

    version, _ = reg.target(args.registry)
    if not version:
        print(f"explain benchmark: no complete version under {args.registry}; run `cd4ml run` first", file=sys.stderr)
        return 1
    model = LoadedVersion(args.registry, version)
    if model.explainer is None:
        print(f"explain benchmark: version {version} ships no explainer; push a new one", file=sys.stderr)
        return 1
    rows = [h["features"] for h in model.holdout]
    encoded = detector_core.encode(rows, model.features)

    in_process = []
    for i in range(args.requests):
        started = time.perf_counter()
        model.explainer.explain(encoded[i % len(encoded)][None, :])
        in_process.append(time.perf_counter() - started)
    started = time.perf_counter()
    explain.importances(model.explainer.explain(encoded[:explain.IMPORTANCE_ROWS]))
    importances_s = time.perf_counter() - started

    with running(args.registry, tempfile.mkdtemp(prefix="cd4ml-explain-logs-"), protocol="v2") as server:
        one = {"inputs": v2_inputs(rows[:1])}
        infer = measure(http_call(server.predict_url, one), args.requests, 1)
        explained = measure(http_call(server.explain_url, one), args.requests, 1)
        ten = measure(http_call(server.explain_url, {"inputs": v2_inputs(rows[:10])}), max(20, args.requests // 10), 1)

    in_process_stats = summarize(in_process, sum(in_process))
    doc = {
        "version": version,
        "background_rows": len(model.explainer.background),
        "coalitions": 2 ** len(model.features),
        "in_process_1_row": in_process_stats,
        "v2_infer_1_row": infer,
        "v2_explain_1_row": explained,
        "v2_explain_10_rows": dict(ten, rows_per_s=round(ten["req_per_s"] * 10, 1)),
        "explain_over_infer_p50": round(explained["p50_ms"] / infer["p50_ms"], 2),
        "importances_seconds": round(importances_s, 3),
        "importance_rows": explain.IMPORTANCE_ROWS,
        "target_p50_ms": TARGET_MS,
        "met": explained["p50_ms"] <= TARGET_MS,
    }
    results_file.write(args.output, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
