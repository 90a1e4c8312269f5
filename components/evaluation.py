"""Read an Evaluator (TFMA) output into plain data: metrics by slice and the blessing decision.

One reader for everything that explains a model: the run summary ("not blessed: MAE 97.1 > 90
overall"), the release bundle's evaluation.json, the run report and the lineage command.
"""

import json
from typing import Any, Dict, List

from cd4ml.contract import METRICS, OVERALL_SLICE


def metric_name(metric_config: Dict[str, Any]) -> str:
    """The name a recorded MetricConfig (eval_config JSON) computes under, which its thresholds
    bind to: the "name" in its config when it sets one (components/regression_metrics.py sets
    mean_absolute_error), else its class name."""
    config = (metric_config.get("config") or "").strip()
    if config:
        name = json.loads(config if config.startswith("{") else "{" + config + "}").get("name")
        if name:
            return name
    return metric_config.get("class_name", metric_config.get("className", ""))


def _slice_name(slice_key) -> str:
    parts = []
    for key in slice_key.single_slice_keys:
        value = key.WhichOneof("kind")
        raw = getattr(key, value) if value else ""
        if isinstance(raw, bytes):
            raw = raw.decode()
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        parts.append(f"{key.column}={raw}")
    return ",".join(parts) or OVERALL_SLICE


def _value(metric_value) -> float:
    kind = metric_value.WhichOneof("type")
    if kind == "double_value":
        return float(metric_value.double_value.value)
    return float("nan")


def summarize(eval_uri: str) -> Dict[str, Any]:
    """{'slices': {slice: {metric: value}}, 'diff': {slice: {metric: change vs baseline}},
    'blessed': bool, 'failures': [{slice, metric, value, bound, message}]}"""
    import tensorflow_model_analysis as tfma

    slices: Dict[str, Dict[str, float]] = {}
    diffs: Dict[str, Dict[str, float]] = {}
    for record in tfma.load_metrics(eval_uri):
        name = _slice_name(record.slice_key)
        for kv in record.metric_keys_and_values:
            if kv.key.name not in METRICS or (kv.key.model_name and kv.key.model_name != "candidate"):
                continue
            target = diffs if kv.key.is_diff else slices
            target.setdefault(name, {})[kv.key.name] = _value(kv.value)
    result = tfma.load_validation_result(eval_uri)
    failures: List[Dict[str, Any]] = []
    for per_slice in result.metric_validations_per_slice:
        for failure in per_slice.failures:
            threshold = failure.metric_threshold
            if threshold.HasField("value_threshold"):
                bound = f"<= {threshold.value_threshold.upper_bound.value:g}"
                kind = "absolute bound"
            else:
                bound = f"<= baseline + {threshold.change_threshold.absolute.value:g}"
                kind = "regression vs baseline"
            failures.append({
                "slice": _slice_name(per_slice.slice_key),
                "metric": failure.metric_key.name + (" (change)" if failure.metric_key.is_diff else ""),
                "value": _value(failure.metric_value),
                "bound": bound,
                "rule": kind,
                "message": failure.message,
            })
    return {"slices": slices, "diff": diffs, "blessed": bool(result.validation_ok), "failures": failures}


def explain(summary: Dict[str, Any]) -> str:
    """One line per failed threshold, e.g. "mean_absolute_error on overall: 97.12 (bound <= 90)"."""
    if summary["blessed"]:
        return "blessed: every threshold passed"
    lines = [f"{f['metric']} on {f['slice']}: {f['value']:.3f} breaks {f['rule']} ({f['bound']})"
             for f in summary["failures"]]
    return "not blessed: " + ("; ".join(lines) if lines else "validation failed without details")
