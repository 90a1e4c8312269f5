"""How many spans a retrain should train on: the training window measured on the harvest loop.

One home, the lake holding span 1 only. Train on span 1; serve it (the serving core in process)
to every other day of span 2 with event times and feedback; harvest that traffic as span 2; then
train on span 2 with windows of 1 span (the harvested traffic alone) and 2 spans (plus span 1).
Each model is scored on
  held_out_summer  the span-2 days never sent as traffic (what production sees next)
  span1_eval       the span-1 days in the eval split (what a window forgets)
and the JSON says which window is better on both. The default CD4ML_TRAIN_WINDOW_SPANS is the
window this picks.

    .venv/bin/python benchmarks/window.py [-o benchmarks/results/window.json]
"""

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import results_file  # noqa: E402


def mae(version_dir, rows):
    import numpy as np

    from components import features
    from serving.version import LoadedVersion

    model = LoadedVersion(os.path.dirname(version_dir), os.path.basename(version_dir))
    inputs = [{f: r[f] for f in features.FEATURE_NAMES} for r in rows]
    predicted = np.concatenate([model.predict(inputs[i:i + 500]) for i in range(0, len(inputs), 500)])
    return float(np.mean(np.abs(predicted - np.array([r[features.LABEL_KEY] for r in rows]))))


def eval_days(days, eval_buckets):
    """The days ExampleGen puts in the eval split (its own partition function on the split group)."""
    import tensorflow as tf
    from tfx.components.example_gen.base_example_gen_executor import _PartitionFn
    from tfx.proto import example_gen_pb2

    from components import features

    split = example_gen_pb2.SplitConfig(partition_feature_name=features.SPLIT_KEY)
    out = []
    for day in days:
        example = tf.train.Example()
        example.features.feature[features.SPLIT_KEY].bytes_list.value.append(features.day_group(day).encode())
        if _PartitionFn(example, 2, [eval_buckets - 1, eval_buckets], split) == 1:
            out.append(day)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", default="benchmarks/results/window.json")
    args = parser.parse_args(argv)
    from cd4ml.commands.common import quiet_libraries

    quiet_libraries()
    from cd4ml.demo.loop import SPAN_DATA, _csv, _event_time, _features, span_days, typed_rows
    from cd4ml.runner import run_and_report
    from cd4ml.triggers.harvest import Harvester
    from components import features
    from pipelines import local_runner
    from pipelines.config import PipelineConfig
    from serving.service import ModelService

    home = tempfile.mkdtemp(prefix="cd4ml-window-")
    try:
        os.makedirs(os.path.join(home, "data"))
        shutil.copytree(os.path.join(SPAN_DATA, "span-1"), os.path.join(home, "data", "span-1"))
        # Every model is pushed, so each can be scored: the blessing is not what is measured here.
        config = PipelineConfig.from_env(home=home, data_root=os.path.join(home, "data"), mae_bound=1e9,
                                         mae_regression_tolerance=1e9)
        first = run_and_report(config, progress=lambda _: None)
        assert first.exit_code == local_runner.OK, local_runner.format_summary(first)
        summer = span_days(typed_rows(_csv(SPAN_DATA, 2)))
        sent = list(summer)[::2]
        core = ModelService(config.registry, poll_seconds=0).load(poll=False)
        for day in sent:
            rows = summer[day]
            answer = core.predict({"jsonData": [dict(_features(r), event_time=_event_time(day)) for r in rows]})
            core.feedback([r[features.LABEL_KEY] for r in rows], request_id=answer.request_id)
        core.close()
        harvest = Harvester(config, progress=lambda _: None).harvest()
        winter = span_days(typed_rows(_csv(SPAN_DATA, 1)))
        held_out = [r for d, rows in summer.items() if d not in sent for r in rows]
        span1_eval = [r for d in eval_days(list(winter), config.eval_buckets) for r in winter[d]]
        results = {"span-1 model": {"window": [1], "held_out_summer_mae": mae(first.pushed_path, held_out),
                                    "span1_eval_mae": mae(first.pushed_path, span1_eval)}}
        for k in (1, 2):
            began = time.monotonic()
            run = run_and_report(dataclasses.replace(config, span=harvest.span, train_window_spans=k),
                                 progress=lambda _: None)
            assert run.exit_code == local_runner.OK and run.pushed_path, local_runner.format_summary(run)
            results[f"window of {k}"] = {"window": run.window, "run_s": round(time.monotonic() - began, 1),
                                         "held_out_summer_mae": mae(run.pushed_path, held_out),
                                         "span1_eval_mae": mae(run.pushed_path, span1_eval)}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    for r in results.values():
        for key in ("held_out_summer_mae", "span1_eval_mae"):
            r[key] = round(r[key], 2)
    results_file.write(args.output, {"results": results, "harvested_rows": harvest.report.rows,
                                     "held_out_rows": len(held_out), "span1_eval_rows": len(span1_eval)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
