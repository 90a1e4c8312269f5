"""The HTML report each `cd4ml run` leaves next to its outputs: <home>/runs/<run id>/report.html.

One self-contained file (inline CSS, plots as inline base64 PNGs) that an on-call engineer or an
auditor can open from a laptop, a CI artifact or an e-mail: what ran, what the data looked like,
what validation found, how the model did on every slice against the thresholds, whether it was
blessed and why, which version was pushed, how the model decides (global importances against the
baseline's, and the explainability check), which hyperparameters it was trained with, and plots
of the error by every slice and of the new span's feature distributions against the span the
serving model was trained on.

Everything is read back from ML Metadata and the artifacts it points to (the same sources as
`cd4ml lineage`), never from the pipeline's memory. The page is a Jinja2 template with
autoescaping: run names, file and bucket object names come from outside and are shown as text.
`write_run_report` never raises: a report that cannot be drawn logs a warning and the run's
outcome stands.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Dict, List, Optional

from cd4ml.contract import MAE, RMSE
from cd4ml.report.evaluation import baseline_on_same_data, thresholds
from cd4ml.report.plots import is_number, plot_distributions, plot_error_by, plot_importances
from cd4ml.report.statistics import load_statistics, statistics_summary
from components import features

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


@dataclasses.dataclass
class ReportData:
    result: Dict[str, object]
    steps: List[Dict[str, object]] = dataclasses.field(default_factory=list)
    statistics: List[Dict[str, object]] = dataclasses.field(default_factory=list)
    anomalies: List[Dict[str, str]] = dataclasses.field(default_factory=list)
    evaluation: Optional[Dict[str, object]] = None
    baseline_metrics: Optional[Dict[str, Dict[str, float]]] = None
    thresholds: List[Dict[str, object]] = dataclasses.field(default_factory=list)
    reference: str = ""
    plots: Dict[str, str] = dataclasses.field(default_factory=dict)
    notes: List[str] = dataclasses.field(default_factory=list)
    provenance: Optional[Dict[str, object]] = None  # mlmd.provenance(...)["summary"] of the pushed version
    importances: Optional[Dict[str, object]] = None   # ModelExplainer's importances.json
    importance_changes: List[List[object]] = dataclasses.field(default_factory=list)  # rows, largest change first


# -- gathering ------------------------------------------------------------------------------------

def _statistics(data: ReportData, step):
    """This run's train-split statistics (also returned, for the distribution plot)."""
    if not (step and step.outputs.get("statistics")):
        return None
    try:
        current = load_statistics(step.outputs["statistics"][0].uri, "train")
    except Exception as exc:  # noqa: BLE001 - a missing split is a note, not a failure
        data.notes.append(f"statistics unreadable: {exc}")
        return None
    data.statistics = statistics_summary(current)
    return current


def _anomalies(data: ReportData, step):
    from cd4ml import mlmd
    from components.validation_gate import anomaly_report

    if step and step.outputs.get("anomalies") and not data.anomalies:
        artifact = step.outputs["anomalies"][0]
        splits = json.loads(mlmd.prop(artifact, "split_names", "[]") or "[]")
        data.anomalies = anomaly_report(artifact.uri, splits)


def _evaluation(data: ReportData, graph, step):
    from cd4ml import mlmd
    from components import evaluation

    if not (step and step.outputs.get("evaluation")):
        return
    data.evaluation = evaluation.summarize(step.outputs["evaluation"][0].uri)
    data.thresholds = thresholds(mlmd.execution_dict(graph, step.execution)["properties"].get("eval_config"))
    if step.inputs.get("baseline_model"):
        data.baseline_metrics = baseline_on_same_data(data.evaluation)


def _importances(data: ReportData, step):
    """The model's global importances, the baseline's on the same rows, what changed, the check."""
    from scoring import explain

    if not (step and step.outputs.get("explanation")):
        return
    path = os.path.join(step.outputs["explanation"][0].uri, explain.IMPORTANCES_FILE)
    try:
        with open(path) as fh:
            data.importances = json.load(fh)
    except (OSError, ValueError) as exc:
        data.notes.append(f"importances unreadable: {exc}")
        return
    share = data.importances["share"]
    before = (data.importances.get("baseline") or {}).get("share")
    if before:
        changes = sorted(((n, share[n], before.get(n, 0.0)) for n in share), key=lambda c: -abs(c[1] - c[2]))
        data.importance_changes = [[n, now, then, now - then] for n, now, then in changes]
    plot = plot_importances(share, before)
    if plot:
        data.plots["global importances"] = plot


def _reference_statistics(data: ReportData, store, result):
    """Statistics of the span the previously pushed model was trained on (the comparison)."""
    from cd4ml import mlmd

    # A cached rerun re-reports the version it pushed before: that is not a reference either.
    for pushed in reversed(mlmd.pushed_models(store)):
        if pushed["run_id"] == result.run_id or pushed["version"] == result.pushed_version:
            continue
        doc = mlmd.provenance(store, pushed["version"])
        stats = doc["summary"]["statistics"] if doc else []
        if not stats:
            return None
        try:
            reference = load_statistics(stats[0], "train")
        except Exception as exc:  # noqa: BLE001
            data.notes.append(f"reference statistics unreadable: {exc}")
            return None
        data.reference = f"span {doc['summary']['span']} (version {pushed['version']})"
        return reference
    return None


def _plots(data: ReportData, span, current, reference):
    bound = next((t["value"] for t in data.thresholds if t["rule"] == "absolute bound"
                  and t["metric"] == MAE), None)  # drawn as a line on the slice plots
    if data.evaluation:
        for column in features.SLICES:
            plot = plot_error_by(data.evaluation["slices"], column, bound, data.baseline_metrics)
            if plot:
                data.plots[f"error by {column}"] = plot
    if current is not None:
        plot = plot_distributions(current, reference, features.FEATURE_NAMES, f"span {span} (this run)",
                                  data.reference or "reference")
        if plot:
            data.plots["feature distributions"] = plot


def gather(result, metadata_path: str) -> ReportData:
    """Read what the report shows for one run from its RunResult and ML Metadata."""
    from cd4ml import mlmd

    data = ReportData(result=json.loads(result.to_json()))
    data.anomalies = list(result.problems or [])
    if not mlmd.exists(metadata_path):
        data.notes.append("no ML Metadata store: the pipeline did not start")
        return data
    store = mlmd.open_store(metadata_path)
    steps = mlmd.run_steps(store, result.run_id)
    data.steps = [{"node": s.node, "state": s.state, "seconds": round(s.seconds, 2)} for s in steps]
    by_node = {s.node: s for s in steps}
    current = _statistics(data, by_node.get("StatisticsGen"))
    _anomalies(data, by_node.get("ExampleValidator"))
    _evaluation(data, mlmd.Graph(store), by_node.get("Evaluator"))
    _importances(data, by_node.get("ModelExplainer"))
    if result.pushed_version:
        doc = mlmd.provenance(store, result.pushed_version)
        data.provenance = doc["summary"] if doc else None
    reference = _reference_statistics(data, store, result)
    _plots(data, result.span, current, reference)
    return data


# -- rendering ------------------------------------------------------------------------------------

def _num(value, digits=3) -> str:
    """A table cell's number: integers plainly, others to `digits` places, NaN and None empty."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if isinstance(value, float):
        if value != value:  # nan
            return ""
        return f"{value:.0f}" if value.is_integer() else f"{value:.{digits}f}"
    return str(value)


def _is_numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _slice_order(name: str):
    if name == "overall":
        return (0, "", 0.0)
    column, _, value = name.partition("=")
    return (1, column, float(value) if is_number(value) else 0.0, value)


def _slice_rows(data: ReportData) -> List[Dict[str, object]]:
    ev = data.evaluation
    failing = {f["slice"] for f in ev.get("failures", [])}
    rows = []
    for name in sorted(ev["slices"], key=_slice_order):
        m = ev["slices"][name]
        diff = ev.get("diff", {}).get(name, {}).get(MAE)
        base = (data.baseline_metrics or {}).get(name, {}).get(MAE)
        rows.append({"cells": [name, m.get("example_count"), m.get(MAE), m.get(RMSE),
                               base if base is not None else "", diff if diff is not None else ""],
                     "class": "fail" if name in failing else ""})
    return rows


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = _num
    env.tests["numeric"] = _is_numeric
    from cd4ml.mlmd import harvest_line

    env.globals["harvest_line"] = harvest_line
    from pipelines.local_runner import describe_hyperparameters

    env.globals["describe_hyperparameters"] = describe_hyperparameters
    return env


def render(data: ReportData) -> str:
    r = data.result
    status = r.get("status", "")
    return _environment().get_template("run_report.html.j2").render(
        r=r, data=data, status=status,
        badge="ok" if status == "ok" else ("warn" if status == "not blessed" else "bad"),
        ran=sum(1 for s in data.steps if s["state"] == "ran"),
        cached=sum(1 for s in data.steps if s["state"] == "cached"),
        slice_rows=_slice_rows(data) if data.evaluation else [],
        thresholds_gate_slices=all(t["slices"] != "every slice" for t in data.thresholds))


def write_report(result, metadata_path: str) -> str:
    """Write <run dir>/report.html for a RunResult; returns its path."""
    html_text = render(gather(result, metadata_path))
    path = os.path.join(result.run_dir, REPORT_FILE)
    with open(path + ".tmp", "w") as fh:
        fh.write(html_text)
    os.replace(path + ".tmp", path)
    return path


def write_run_report(result, metadata_path: str) -> Optional[str]:
    """Write the report, and never let a report break a run (a failure logs a warning)."""
    try:
        return write_report(result, metadata_path)
    except Exception as exc:  # noqa: BLE001 - the report is a view; the run's outcome stands
        log.warning("run report not written for %s: %s: %s", result.run_id, type(exc).__name__, exc)
        return None
