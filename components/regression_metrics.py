"""Example count, MAE and RMSE in one TFMA metric: one pass over each example per slice.

TFMA runs every metric's combiner once per example per slice, and each combiner extracts the
label, prediction and weight again (`to_label_prediction_example_weight`). With five slicing
specs and a Keras-wrapped RMSE beside TFMA's MAE, that extraction and the Keras batching were
most of the Evaluator at 50x the span (about 15 s of 34 s, benchmarks/scale.py). This metric does
the extraction once and keeps three running sums. It is named like TFMA's MAE, so a threshold on
`mean_absolute_error` binds to it, and it writes the same metric keys as TFMA's ExampleCount and
MAE and Keras' RMSE did, so evaluation.json, the run browser and the blessing read it unchanged.
"""

import math
from typing import Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util
from tensorflow_model_analysis.proto import config_pb2

from cd4ml.contract import EXAMPLE_COUNT, MAE, RMSE


class RegressionErrors(metric_types.Metric):
    """`example_count`, `mean_absolute_error` and `root_mean_squared_error` of a regression
    model, weighted when the evaluation is (as TFMA's own): sum(w), sum(w * |y - p|) / sum(w) and
    sqrt(sum(w * (y - p)^2) / sum(w))."""

    def __init__(self, name: str = MAE):
        super().__init__(metric_util.merge_per_key_computations(_computations), name=name)


def _computations(name: Optional[str] = None, eval_config: Optional[config_pb2.EvalConfig] = None,
                  model_name: str = "", output_name: str = "", example_weighted: bool = False,
                  sub_key: Optional[metric_types.SubKey] = None, aggregation_type=None,
                  class_weights: Optional[Dict[int, float]] = None,
                  preprocessors: Optional[List[metric_types.Preprocessor]] = None
                  ) -> metric_types.MetricComputations:
    keys = [metric_types.MetricKey(name=metric, model_name=model_name, output_name=output_name,
                                   sub_key=sub_key, example_weighted=example_weighted)
            for metric in (EXAMPLE_COUNT, name or MAE, RMSE)]
    return [metric_types.MetricComputation(
        keys=keys, preprocessors=preprocessors,
        combiner=_ErrorSums(eval_config, model_name, output_name, keys, example_weighted))]


class _ErrorSums(beam.CombineFn):
    """Accumulator: [sum of weights, sum of weighted |error|, sum of weighted error^2]."""

    def __init__(self, eval_config, model_name: str, output_name: str, keys: List[metric_types.MetricKey],
                 example_weighted: bool):
        self._eval_config = eval_config
        self._model_name = model_name
        self._output_name = output_name
        self._count_key, self._mae_key, self._rmse_key = keys
        self._example_weighted = example_weighted

    def create_accumulator(self) -> List[float]:
        return [0.0, 0.0, 0.0]

    def add_input(self, accumulator: List[float], element: metric_types.StandardMetricInputs) -> List[float]:
        for label, prediction, weight in metric_util.to_label_prediction_example_weight(
                element, eval_config=self._eval_config, model_name=self._model_name,
                output_name=self._output_name, example_weighted=self._example_weighted, flatten=False,
                squeeze=False):
            error = np.asarray(label, np.float64) - np.asarray(prediction, np.float64)
            weight = np.broadcast_to(np.asarray(weight, np.float64), error.shape)
            accumulator[0] += float(weight.sum())
            accumulator[1] += float((weight * np.abs(error)).sum())
            accumulator[2] += float((weight * error * error).sum())
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[List[float]]) -> List[float]:
        total = [0.0, 0.0, 0.0]
        for accumulator in accumulators:
            for i, value in enumerate(accumulator):
                total[i] += value
        return total

    def extract_output(self, accumulator: List[float]) -> metric_types.MetricsDict:
        weights, absolute, squared = accumulator
        if not weights:
            return {self._count_key: 0.0, self._mae_key: float("nan"), self._rmse_key: float("nan")}
        return {self._count_key: weights, self._mae_key: absolute / weights,
                self._rmse_key: math.sqrt(squared / weights)}


metric_types.register_metric(RegressionErrors)
