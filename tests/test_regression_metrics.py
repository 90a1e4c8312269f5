"""The Evaluator's merged metric: the same numbers as TFMA's own ExampleCount, MAE and MSE,
weighted or not, and the MAE threshold of the pipeline's eval_config binds to it."""

import math

import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import example_count, mean_regression_error, metric_specs, metric_types

from cd4ml.contract import EXAMPLE_COUNT, MAE, RMSE
from components.evaluation import metric_name
from components.regression_metrics import RegressionErrors
from pipelines.config import PipelineConfig
from pipelines.pipeline import eval_config


def _combine(metric, inputs, example_weighted, parts=1):
    config = tfma.EvalConfig(model_specs=[tfma.ModelSpec()])
    results = {}
    for computation in metric.computations(eval_config=config, example_weighted=example_weighted):
        combiner = computation.combiner
        halves = []
        for part in np.array_split(np.arange(len(inputs)), parts):  # merged as Beam would
            accumulator = combiner.create_accumulator()
            for i in part:
                accumulator = combiner.add_input(accumulator, inputs[i])
            halves.append(accumulator)
        results.update(combiner.extract_output(combiner.merge_accumulators(halves) if parts > 1 else halves[0]))
    return {key.name: value for key, value in results.items()}


@pytest.mark.parametrize("example_weighted", [False, True])
def test_mae_and_rmse_match_tfma_own_metrics(example_weighted):
    rng = np.random.default_rng(0)
    labels, predictions = rng.uniform(0, 900, 301), rng.uniform(0, 900, 301)
    weights = rng.uniform(0.1, 3.0, 301)
    inputs = [metric_types.StandardMetricInputs(labels=np.array([y]), predictions=np.array([p]),
                                                example_weights=np.array([w]))
              for y, p, w in zip(labels, predictions, weights)]
    ours = _combine(RegressionErrors(), inputs, example_weighted)
    mae = _combine(mean_regression_error.MeanAbsoluteError(), inputs, example_weighted)[MAE]
    mse = _combine(mean_regression_error.MeanSquaredError(), inputs, example_weighted)["mean_squared_error"]
    count = _combine(example_count.ExampleCount(), inputs, example_weighted)[EXAMPLE_COUNT]
    assert set(ours) == {EXAMPLE_COUNT, MAE, RMSE}
    assert ours[EXAMPLE_COUNT] == pytest.approx(count, rel=1e-12)
    assert ours[MAE] == pytest.approx(mae, rel=1e-12)
    assert ours[RMSE] == pytest.approx(math.sqrt(mse), rel=1e-12)
    w = weights if example_weighted else np.ones_like(weights)
    assert _combine(RegressionErrors(), inputs, example_weighted, parts=3) == pytest.approx(ours, rel=1e-12)
    assert ours[MAE] == pytest.approx(np.sum(w * np.abs(labels - predictions)) / w.sum(), rel=1e-12)


def test_no_examples_give_nan_not_an_error():
    empty = _combine(RegressionErrors(), [], False)
    assert empty.pop(EXAMPLE_COUNT) == 0 and all(math.isnan(v) for v in empty.values())


def test_the_pipeline_mae_threshold_binds_to_the_merged_metric():
    config = eval_config(PipelineConfig(mae_bound=77.0))
    thresholds = metric_specs.metric_thresholds_from_metrics_specs(config.metrics_specs, config)
    assert {key.name for key in thresholds} == {MAE}  # the value and, as a diff, the change
    bounds = [t.upper_bound.value for key in thresholds if not key.is_diff for _, t in thresholds[key]]
    assert bounds == [77.0]
    names = {m.class_name: m for m in config.metrics_specs[0].metrics}
    assert metric_name({"class_name": "RegressionErrors", "config": names["RegressionErrors"].config}) == MAE
    assert metric_name({"class_name": "MeanAbsoluteError"}) == "MeanAbsoluteError"  # runs recorded earlier
