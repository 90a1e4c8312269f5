"""Server time of the run browser's pages with 200 runs in the store (target: under 300 ms for the
runs page and a run page).

One real pipeline run on a sample of span 1 (and a cached rerun), then its ML Metadata records are
copied until the store holds 200 runs: each copy is a pipeline_run context with the same
executions (types, states, properties, timings) and events to the same artifacts, which is what
TFX writes for a fully cached rerun. Each page is rendered by the Flask app in process (server
time, no network): the first request (cold: the page's caches are empty; the libraries are
already imported by the pipeline run in this process), then the median of 20 more (warm),
against a trivial page of the same app rendering only the base template (the floor, measured in
the same run).

    .venv/bin/python benchmarks/ui.py [-o benchmarks/results/ui.json] [--runs 200]
"""

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import results_file  # noqa: E402


def clone_runs(metadata_path: str, run_id: str, copies: int):
    """Copy one run's executions and events under `copies` new pipeline_run contexts."""
    from ml_metadata.proto import metadata_store_pb2 as pb

    from cd4ml import mlmd

    store = mlmd.open_store(metadata_path)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    executions = store.get_executions_by_context(context.id)
    events = store.get_events_by_execution_ids([e.id for e in executions])
    others = {e.id: [c for c in store.get_contexts_by_execution(e.id) if c.type_id != context.type_id]
              for e in executions}
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in events}))}
    for i in range(copies):
        run = pb.Context(type_id=context.type_id, name=f"{run_id}-copy{i:03d}")
        [run.id] = store.put_contexts([run])
        for e in executions:
            copy = pb.Execution()
            copy.CopyFrom(e)
            copy.ClearField("id")
            copy.ClearField("name")
            copy.ClearField("create_time_since_epoch")
            copy.ClearField("last_update_time_since_epoch")
            pairs = []
            for ev in events:
                if ev.execution_id == e.id:
                    event = pb.Event()
                    event.CopyFrom(ev)
                    event.ClearField("execution_id")
                    event.ClearField("artifact_id")
                    event.ClearField("milliseconds_since_epoch")
                    pairs.append((artifacts[ev.artifact_id], event))
            store.put_execution(copy, pairs, [run] + others[e.id])


def timed(client, url: str, repeat: int = 20):
    began = time.perf_counter()
    first = client.get(url)
    cold = (time.perf_counter() - began) * 1e3
    assert first.status_code == 200, (url, first.status_code)
    warm = []
    for _ in range(repeat):
        began = time.perf_counter()
        client.get(url)
        warm.append((time.perf_counter() - began) * 1e3)
    return {"cold_ms": round(cold, 1), "warm_p50_ms": round(statistics.median(warm), 2),
            "warm_max_ms": round(max(warm), 2), "bytes": len(first.data)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="benchmarks/results/ui.json")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    from cd4ml.commands.common import quiet_libraries

    quiet_libraries()
    from cd4ml.runner import run_and_report
    from cd4ml.ui.app import Links, Pages, create_app
    from cd4ml.ui.data import Browser
    from pipelines import local_runner
    from pipelines.config import REPO_ROOT, PipelineConfig

    home = tempfile.mkdtemp(prefix="cd4ml-ui-bench-")
    try:
        data = os.path.join(home, "data", "span-1")
        os.makedirs(data)
        with open(os.path.join(REPO_ROOT, "data", "bikeshare", "span-1", "bikeshare.csv")) as src, \
                open(os.path.join(data, "bikeshare.csv"), "w") as dst:
            lines = src.readlines()
            dst.writelines(lines[:1] + [line for line in lines[1:] if int(line.split(",")[2]) % 3 == 0])
        config = PipelineConfig.from_env(home=home, data_root=os.path.dirname(data), epochs=5)
        first = run_and_report(config, progress=lambda _: None)
        assert first.exit_code == local_runner.OK, local_runner.format_summary(first)
        rerun = run_and_report(dataclasses.replace(config, span=1), progress=lambda _: None)
        clone_runs(config.metadata_path, rerun.run_id, args.runs - 2)
        browser = Browser(config)
        app = create_app(browser)

        pages = Pages(browser)

        @app.get("/floor")
        def floor():  # the same app and base template, nothing read
            import flask

            return pages.render("missing.html.j2", Links(flask.url_for), what="thing")

        client = app.test_client()
        runs = len(browser.runs())
        results = {"floor": timed(client, "/floor"),
                   "runs page": timed(client, "/runs"),
                   "run page (the real run)": timed(client, f"/runs/{first.run_id}"),
                   "run page (a copied run)": timed(client, f"/runs/{rerun.run_id}-copy100"),
                   "version page": timed(client, f"/versions/{first.pushed_version}")}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    floor_ms = results["floor"]["warm_p50_ms"]
    for r in results.values():
        r["warm_vs_floor"] = round(r["warm_p50_ms"] / floor_ms, 1)
    results_file.write(args.output, {"runs_in_store": runs, "pages": results, "target_ms": 300})
    return 0


if __name__ == "__main__":
    sys.exit(main())
