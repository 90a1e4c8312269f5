"""A model's evaluation as the report and notebooks show it: metrics by slice, the baseline on the
same data, the thresholds the Evaluator applied, and the error of each subgroup."""

from __future__ import annotations

from typing import Dict, List, Optional

from cd4ml.contract import EXAMPLE_COUNT, MAE, OVERALL_SLICE
from cd4ml.report.plots import slice_values
from components.evaluation import metric_name


def model_evaluation(store, version: Optional[str] = None) -> Optional[Dict[str, object]]:
    """The evaluation behind a pushed version (latest by default): {'version', 'summary' (see
    components.evaluation.summarize), 'uri', 'baseline' (the baseline model's metrics on the same
    eval data, by slice, or None on a first model), 'baseline_uri', 'thresholds'}."""
    from cd4ml.mlmd import provenance
    from components import evaluation

    doc = provenance(store, version)
    if doc is None or not doc["summary"]["evaluation"]:
        return None
    evaluator = next(e for e in doc["executions"].values() if e["node"] == "Evaluator")
    baseline_ids = [i for i in evaluator["inputs"].get("baseline_model", []) if doc["artifacts"][i].get("baseline")]
    return {
        "version": doc["version"],
        "uri": doc["summary"]["evaluation"][0],
        "summary": evaluation.summarize(doc["summary"]["evaluation"][0]),
        "baseline": baseline_on_same_data(evaluation.summarize(doc["summary"]["evaluation"][0]))
        if baseline_ids else None,
        "baseline_uri": doc["artifacts"][baseline_ids[0]]["uri"] if baseline_ids else None,
        "thresholds": thresholds(evaluator["properties"].get("eval_config")),
    }


def baseline_on_same_data(summary: Dict[str, object]) -> Optional[Dict[str, Dict[str, float]]]:
    """The baseline model's metrics on the candidate's eval data (candidate value - diff), by slice.

    This is what the blessing compared; None when there was no baseline (a first model)."""
    diffs = summary.get("diff") or {}
    if not diffs:
        return None
    result = {}
    for name, metrics in summary["slices"].items():
        for metric, value in metrics.items():
            change = diffs.get(name, {}).get(metric)
            if change is not None and metric != EXAMPLE_COUNT:
                result.setdefault(name, {})[metric] = value - change
    return result


def subgroup_errors(slices: Dict[str, Dict[str, float]], column: str) -> List[Dict[str, object]]:
    """MAE of each group of a slicing column next to the overall MAE: the fairness view.
    'ratio' > 1 means the model serves that group worse than average."""
    overall = slices.get(OVERALL_SLICE, {}).get(MAE)
    rows = []
    for value, mae, count in slice_values(slices, column, MAE):
        rows.append({"column": column, "group": value, "examples": count, "mae": mae,
                     "ratio": mae / overall if overall else None})
    return rows



def _slice_label(specs) -> str:
    names = []
    for spec in specs or [{}]:
        keys = spec.get("feature_keys") or []
        values = spec.get("feature_values") or {}
        names.append(",".join(list(keys) + [f"{k}={v}" for k, v in values.items()]) or "overall")
    return " and ".join(names)


def thresholds(eval_config) -> List[Dict[str, object]]:
    """The thresholds the Evaluator applied, from its recorded eval_config, with the slices they
    judge: a MetricConfig.threshold applies to every slice, per_slice_thresholds to theirs."""
    found = []
    if not isinstance(eval_config, dict):
        return found

    def add(metric, threshold, where):
        value = threshold.get("value_threshold") or {}
        change = threshold.get("change_threshold") or {}
        for key, op in (("upper_bound", "<="), ("lower_bound", ">=")):
            if key in value:
                found.append({"metric": metric, "rule": "absolute bound", "bound": f"{op} {value[key]:g}",
                              "value": value[key], "slices": where})
        if "absolute" in change:
            found.append({"metric": metric, "rule": "regression vs baseline",
                          "bound": f"<= baseline + {change['absolute']:g}", "value": None, "slices": where})

    for spec in eval_config.get("metrics_specs", []):
        for metric in spec.get("metrics", []):
            if metric.get("threshold"):
                add(metric_name(metric), metric["threshold"], "every slice")
            for per_slice in metric.get("per_slice_thresholds", []):
                add(metric_name(metric), per_slice.get("threshold") or {},
                    _slice_label(per_slice.get("slicing_specs")))
    return found

