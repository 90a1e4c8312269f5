"""The HTML report each `cd4ml run` leaves next to its outputs: <home>/runs/<run id>/report.html.

One self-contained file (inline CSS, plots as inline base64 PNGs) that an on-call engineer or an
auditor can open from a laptop, a CI artifact or an e-mail: what ran, what the data looked like,
what validation found, how the model did on every slice against the thresholds, whether it was
blessed and why, which version was pushed, and plots of the error by hour and season and of the
new span's feature distributions against the span the serving model was trained on.

Everything is read back from ML Metadata and the artifacts it points to (the same sources as
`cd4ml lineage`), never from the pipeline's memory. `write_run_report` never raises: a report
that cannot be drawn logs a warning and the run's outcome stands.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

from components import features

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"


# -- statistics (TFDV protos written by StatisticsGen) ----------------------------------------

def load_statistics(stats_uri: str, split: str = "train"):
    """The DatasetFeatureStatistics of one split of a StatisticsGen artifact."""
    import tensorflow_data_validation as tfdv

    path = os.path.join(stats_uri, f"Split-{split}", "FeatureStats.pb")
    return tfdv.load_stats_binary(path).datasets[0]


def _feature_stats(dataset, name: str):
    for f in dataset.features:
        if (f.path.step and f.path.step[0] == name) or f.name == name:
            return f
    return None


def statistics_summary(dataset) -> List[Dict[str, object]]:
    """One row per column: type, missing, and mean/std/min/max or unique values and top value."""
    rows = []
    for f in sorted(dataset.features, key=lambda f: f.path.step[0] if f.path.step else f.name):
        name = f.path.step[0] if f.path.step else f.name
        kind = f.WhichOneof("stats")
        stats = getattr(f, kind)
        common = stats.common_stats
        row = {"feature": name, "role": _role(name), "missing": int(common.num_missing),
               "count": int(common.num_non_missing)}
        if kind == "num_stats":
            row.update(kind="numeric", mean=stats.mean, std=stats.std_dev, min=stats.min, max=stats.max,
                       zeros=int(stats.num_zeros))
        elif kind == "string_stats":
            top = stats.top_values[0] if stats.top_values else None
            row.update(kind="string", unique=int(stats.unique),
                       top=f"{top.value} ({int(top.frequency)})" if top else "")
        rows.append(row)
    return rows


def _role(name: str) -> str:
    if name in features.FEATURE_NAMES:
        return "feature"
    return "label" if name == features.LABEL_KEY else "carried"


def feature_distribution(dataset, name: str) -> Optional[Dict[str, object]]:
    """A feature's distribution from its statistics, comparable across spans.

    Categorical features: {'kind': 'categorical', 'labels', 'fractions'} over the vocabulary the
    feature module declares (integer categories are read from the standard histogram, each
    bucket going to the category nearest its middle). Numeric features: {'kind': 'numeric',
    'edges', 'density'} from the standard histogram.
    """
    stats = _feature_stats(dataset, name)
    if stats is None:
        return None
    spec = features.feature(name) if name in features.FEATURE_NAMES else None
    kind = stats.WhichOneof("stats")
    if kind == "string_stats":
        counts = {b.label: b.sample_count for b in stats.string_stats.rank_histogram.buckets}
        counts.update({v.value: v.frequency for v in stats.string_stats.top_values})
        labels = [str(v) for v in spec.vocabulary] if spec and spec.vocabulary else sorted(counts)
        labels += sorted(set(counts) - set(labels))
        total = sum(counts.values()) or 1.0
        return {"kind": "categorical", "labels": labels, "fractions": [counts.get(x, 0.0) / total for x in labels]}
    histogram = next((h for h in stats.num_stats.histograms if h.type == h.STANDARD), None)
    if histogram is None or not histogram.buckets:
        return None
    buckets = list(histogram.buckets)
    total = sum(b.sample_count for b in buckets) or 1.0
    if spec and spec.is_categorical and spec.vocabulary and len(spec.vocabulary) <= 12:
        values = list(spec.vocabulary)
        counts = [0.0] * len(values)
        for b in buckets:
            middle = (b.low_value + b.high_value) / 2
            counts[min(range(len(values)), key=lambda i: abs(values[i] - middle))] += b.sample_count
        return {"kind": "categorical", "labels": [str(v) for v in values], "fractions": [c / total for c in counts]}
    edges = [buckets[0].low_value] + [b.high_value for b in buckets]
    density = []
    for b in buckets:
        width = (b.high_value - b.low_value) or 1.0
        density.append(b.sample_count / total / width)
    return {"kind": "numeric", "edges": edges, "density": density}


# -- plots --------------------------------------------------------------------------------------

def _figure(width=7.0, height=3.0, ncols=1, nrows=1):
    import sys

    import matplotlib
    if "matplotlib.pyplot" not in sys.modules:  # a run has no display; a notebook keeps its backend
        matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)


def png_bytes(figure_or_uri) -> bytes:
    """PNG bytes of a matplotlib figure or of a data: URI made by this module (for notebooks)."""
    if isinstance(figure_or_uri, str):
        return base64.b64decode(figure_or_uri.split(",", 1)[1])
    buffer = io.BytesIO()
    figure_or_uri.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return buffer.getvalue()


def _png(fig, **adjust) -> str:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    # Fixed margins: tight_layout costs about as much as drawing, and every run pays for it.
    fig.subplots_adjust(**({"left": 0.14, "right": 0.98, "top": 0.92, "bottom": 0.2} | adjust))
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _slice_values(slices: Dict[str, Dict[str, float]], column: str, metric: str):
    found = []
    for name, metrics in slices.items():
        if name.startswith(column + "=") and "," not in name and metric in metrics:
            value = name.split("=", 1)[1]
            found.append((value, metrics[metric], metrics.get("example_count", 0)))
    return sorted(found, key=lambda t: (float(t[0]) if _is_number(t[0]) else t[0]))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def plot_error_by(slices, column: str, bound: Optional[float] = None, baseline=None) -> Optional[str]:
    """Bar chart of MAE per value of a slicing column (with the overall bound as a line)."""
    rows = _slice_values(slices, column, "mean_absolute_error")
    if not rows:
        return None
    fig, axes = _figure(7.0 if len(rows) > 6 else 4.5, 2.8)
    ax = axes[0][0]
    labels = [r[0] for r in rows]
    ax.bar(range(len(rows)), [r[1] for r in rows], color="#4878a8", label="candidate")
    if baseline:
        base = dict((r[0], r[1]) for r in _slice_values(baseline, column, "mean_absolute_error"))
        ax.plot(range(len(rows)), [base.get(x, float("nan")) for x in labels], "o", color="#d08030",
                label="baseline")
    overall = slices.get("overall", {}).get("mean_absolute_error")
    if overall is not None:
        ax.axhline(overall, color="#555", linestyle=":", label=f"overall {overall:.1f}")
    if bound is not None:
        ax.axhline(bound, color="#c03030", linestyle="--", label=f"bound {bound:g} (overall)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=0 if len(rows) < 8 else 90, fontsize=8)
    ax.set_xlabel(column)
    ax.set_ylabel("MAE (bikers/hour)")
    ax.legend(fontsize=7)
    return _png(fig)


def plot_distributions(current, reference, names: Sequence[str], current_label: str,
                       reference_label: str) -> Optional[str]:
    """Feature distributions of the new span (and the reference span when there is one)."""
    pairs = []
    for name in names:
        new = feature_distribution(current, name)
        if new is not None:
            pairs.append((name, new, feature_distribution(reference, name) if reference is not None else None))
    if not pairs:
        return None
    ncols = 3
    nrows = (len(pairs) + ncols - 1) // ncols
    fig, axes = _figure(10.0, 2.4 * nrows, ncols, nrows)
    for index, (name, new, old) in enumerate(pairs):
        ax = axes[index // ncols][index % ncols]
        for dist, label, color, offset in ((old, reference_label, "#d08030", -0.2),
                                            (new, current_label, "#4878a8", 0.2)):
            if dist is None:
                continue
            if dist["kind"] == "categorical":
                xs = [i + (offset if old is not None else 0) for i in range(len(dist["labels"]))]
                ax.bar(xs, dist["fractions"], width=0.4 if old is not None else 0.8, color=color, label=label)
                ax.set_xticks(range(len(dist["labels"])))
                long = len(dist["labels"]) > 5 or max(len(x) for x in dist["labels"]) > 4
                ax.set_xticklabels(dist["labels"], rotation=60 if long else 0, fontsize=7,
                                   ha="right" if long else "center")
            else:
                ax.stairs(dist["density"], dist["edges"], color=color, label=label, linewidth=1.5)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        if index == 0:
            ax.legend(fontsize=7)
    for index in range(len(pairs), nrows * ncols):
        axes[index // ncols][index % ncols].axis("off")
    return _png(fig, left=0.05, right=0.99, top=0.96, bottom=0.14, hspace=0.8, wspace=0.2)


def plot_lineage(doc, ax=None):
    """Draw a provenance (metadata.provenance) left to right: data on the left, the release on the
    right; executions as boxes, artifacts as plain labels. Returns the matplotlib figure."""
    from cd4ml import metadata

    nodes, edges = metadata.lineage_edges(doc)
    parents: Dict[tuple, List[tuple]] = {n: [] for n in nodes}
    for src, dst in edges:
        parents[dst].append(src)
    depth: Dict[tuple, int] = {}

    def level(node, trail=()):
        if node not in depth:
            ups = [p for p in parents[node] if p not in trail]
            depth[node] = 1 + max((level(p, trail + (node,)) for p in ups), default=-1)
        return depth[node]

    for node in nodes:
        level(node)
    columns: Dict[int, List[tuple]] = {}
    for node in sorted(nodes, key=lambda n: (n[0], n[1])):
        columns.setdefault(depth[node], []).append(node)
    height = max(len(c) for c in columns.values())
    if ax is None:
        fig, axes = _figure(max(8.0, 1.5 * len(columns)), max(3.0, 0.9 * height))
        ax = axes[0][0]
    position = {}
    for x, members in columns.items():
        for i, node in enumerate(members):
            position[node] = (x, (len(members) - 1) / 2 - i)
    for src, dst in edges:
        (x0, y0), (x1, y1) = position[src], position[dst]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                    arrowprops=dict(arrowstyle="->", color="#999", lw=0.8, shrinkA=12, shrinkB=12))
    for node, (x, y) in position.items():
        is_exec = node[0] == "e"
        ax.text(x, y, nodes[node], ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round", fc="#dbe8f5" if is_exec else "#fff", ec="#4878a8" if is_exec else "#ccc"))
    ax.set_xlim(-0.7, max(columns) + 0.7)
    ax.set_ylim(-height / 2 - 0.5, height / 2 + 0.5)
    ax.axis("off")
    ax.set_title(f"lineage of model version {doc['version']}", fontsize=10)
    return ax.figure


def model_evaluation(store, version: Optional[str] = None) -> Optional[Dict[str, object]]:
    """The evaluation behind a pushed version (latest by default): {'version', 'summary' (see
    components.evaluation.summarize), 'uri', 'baseline' (the baseline model's metrics on the same
    eval data, by slice, or None on a first model), 'baseline_uri', 'thresholds'}."""
    from cd4ml import metadata
    from components import evaluation

    doc = metadata.provenance(store, version)
    if doc is None or not doc["summary"]["evaluation"]:
        return None
    evaluator = next(e for e in doc["executions"].values() if e["node"] == "Evaluator")
    baseline_ids = evaluator["inputs"].get("baseline_model", [])
    return {
        "version": doc["version"],
        "uri": doc["summary"]["evaluation"][0],
        "summary": evaluation.summarize(doc["summary"]["evaluation"][0]),
        "baseline": baseline_on_same_data(evaluation.summarize(doc["summary"]["evaluation"][0]))
        if baseline_ids else None,
        "baseline_uri": doc["artifacts"][baseline_ids[0]]["uri"] if baseline_ids else None,
        "thresholds": _thresholds(evaluator["properties"].get("eval_config")),
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
            if change is not None and metric != "example_count":
                result.setdefault(name, {})[metric] = value - change
    return result


def subgroup_errors(slices: Dict[str, Dict[str, float]], column: str) -> List[Dict[str, object]]:
    """MAE of each group of a slicing column next to the overall MAE: the fairness view.
    'ratio' > 1 means the model serves that group worse than average."""
    overall = slices.get("overall", {}).get("mean_absolute_error")
    rows = []
    for value, mae, count in _slice_values(slices, column, "mean_absolute_error"):
        rows.append({"column": column, "group": value, "examples": count, "mae": mae,
                     "ratio": mae / overall if overall else None})
    return rows


# -- gathering ------------------------------------------------------------------------------------

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
    provenance: Optional[Dict[str, object]] = None  # metadata.provenance(...)["summary"] of the pushed version


def _slice_label(specs) -> str:
    names = []
    for spec in specs or [{}]:
        keys = spec.get("feature_keys") or []
        values = spec.get("feature_values") or {}
        names.append(",".join(list(keys) + [f"{k}={v}" for k, v in values.items()]) or "overall")
    return " and ".join(names)


def _thresholds(eval_config) -> List[Dict[str, object]]:
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
                add(metric["class_name"], metric["threshold"], "every slice")
            for per_slice in metric.get("per_slice_thresholds", []):
                add(metric["class_name"], per_slice.get("threshold") or {},
                    _slice_label(per_slice.get("slicing_specs")))
    return found


def gather(result, metadata_path: str) -> ReportData:
    """Read what the report shows for one run from its RunResult and ML Metadata."""
    from cd4ml import metadata
    from components import evaluation
    from components.validation_gate import anomaly_report

    data = ReportData(result=json.loads(result.to_json()))
    data.anomalies = list(result.problems or [])
    if not os.path.exists(metadata_path):
        data.notes.append("no ML Metadata store: the pipeline did not start")
        return data
    store = metadata.open_store(metadata_path)
    graph = metadata.Graph(store)
    steps = metadata.run_steps(store, result.run_id)
    data.steps = [{"node": s.node, "state": s.state, "seconds": round(s.seconds, 2)} for s in steps]
    by_node = {s.node: s for s in steps}

    current = None
    stats_step = by_node.get("StatisticsGen")
    if stats_step and stats_step.outputs.get("statistics"):
        stats_uri = stats_step.outputs["statistics"][0].uri
        try:
            current = load_statistics(stats_uri, "train")
            data.statistics = statistics_summary(current)
        except Exception as exc:  # noqa: BLE001 - a missing split is a note, not a failure
            data.notes.append(f"statistics unreadable: {exc}")

    validator = by_node.get("ExampleValidator")
    if validator and validator.outputs.get("anomalies") and not data.anomalies:
        artifact = validator.outputs["anomalies"][0]
        splits = json.loads(metadata.prop(artifact, "split_names", "[]") or "[]")
        data.anomalies = anomaly_report(artifact.uri, splits)

    evaluator = by_node.get("Evaluator")
    if evaluator and evaluator.outputs.get("evaluation"):
        data.evaluation = evaluation.summarize(evaluator.outputs["evaluation"][0].uri)
        config = metadata.execution_dict(graph, evaluator.execution)["properties"].get("eval_config")
        data.thresholds = _thresholds(config)
        if evaluator.inputs.get("baseline_model"):
            data.baseline_metrics = baseline_on_same_data(data.evaluation)

    # The reference span: what the model serving before this run was trained on.
    reference = None
    if result.pushed_version:
        doc = metadata.provenance(store, result.pushed_version)
        data.provenance = doc["summary"] if doc else None

    # A cached rerun re-reports the version it pushed before: that is not a reference either.
    for pushed in reversed(metadata.pushed_models(store)):
        if pushed["run_id"] == result.run_id or pushed["version"] == result.pushed_version:
            continue
        doc = metadata.provenance(store, pushed["version"])
        stats = doc["summary"]["statistics"] if doc else []
        if stats:
            try:
                reference = load_statistics(stats[0], "train")
                data.reference = f"span {doc['summary']['span']} (version {pushed['version']})"
            except Exception as exc:  # noqa: BLE001
                data.notes.append(f"reference statistics unreadable: {exc}")
        break

    bound = next((t["value"] for t in data.thresholds if t["rule"] == "absolute bound"
                  and t["metric"] == "MeanAbsoluteError"), None)  # drawn as a line on the slice plots
    if data.evaluation:
        for column in ("hr", "season"):  # the other slices are in the table
            plot = plot_error_by(data.evaluation["slices"], column, bound, data.baseline_metrics)
            if plot:
                data.plots[f"error by {column}"] = plot
    if current is not None:
        label = f"span {result.span} (this run)"
        plot = plot_distributions(current, reference, features.FEATURE_NAMES, label, data.reference or "reference")
        if plot:
            data.plots["feature distributions"] = plot
    return data


# -- rendering ------------------------------------------------------------------------------------

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:3px;
margin-top:28px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.ok{background:#2e7d32}.bad{background:#c62828}.warn{background:#ef6c00}.muted{color:#777}
.fail td{background:#fdecea}img{max-width:100%;border:1px solid #eee;margin:6px 0}
code{background:#f6f6f6;padding:1px 4px}
"""


def _e(value) -> str:
    return html.escape(str(value))


def _num(value, digits=3) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # nan
            return ""
        return f"{value:.0f}" if value.is_integer() else f"{value:.{digits}f}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], classes=None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f'<td class="num">{_num(c)}</td>' if isinstance(c, (int, float)) and not isinstance(c, bool)
                        else f"<td>{_e(c)}</td>" for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _slice_order(name: str):
    if name == "overall":
        return (0, "", 0.0)
    column, _, value = name.partition("=")
    return (1, column, float(value) if _is_number(value) else 0.0, value)


def render(data: ReportData) -> str:
    r = data.result
    status = r.get("status", "")
    badge = "ok" if status == "ok" else ("warn" if status == "not blessed" else "bad")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>cd4ml run {_e(r['run_id'])}</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>cd4ml run {_e(r['run_id'])} <span class='badge {badge}'>{_e(status)}</span></h1>",
             f"<p>span {_e(r.get('span'))}, {_e(r.get('rows'))} rows, {_num(r.get('seconds'), 1)} s</p>"]

    # Outcome first: what an on-call engineer opens the report for.
    parts.append("<h2>Outcome</h2><ul>")
    if r.get("blessing"):
        parts.append(f"<li><b>Blessing:</b> {_e(r['blessing'])}</li>")
    if r.get("pushed_version"):
        what = "pushed new version" if r.get("new_push") else "already pushed (no new version)"
        parts.append(f"<li><b>Model:</b> {what} <code>{_e(r['pushed_version'])}</code> at "
                     f"<code>{_e(r.get('pushed_path'))}</code></li>")
    else:
        parts.append("<li><b>Model:</b> nothing pushed; the serving model is unchanged</li>")
    if r.get("error") and not r.get("problems"):
        parts.append(f"<li><b>Error:</b> {_e(r['error'])}</li>")
    p = data.provenance
    if p:
        sources = [f["name"] for f in p.get("span_files", [])] + [
            f"{o['name']} (generation {o['generation']})" for o in p.get("bucket_objects", [])]
        trained_on = ", ".join(sources) or "not recorded"
        parts.append(f"<li><b>Trained on:</b> span {_e(p.get('span'))}: {_e(trained_on)}</li>")
        parts.append(f"<li><b>Detectors:</b> {_e(', '.join(p.get('detectors') or []) or 'none recorded')}</li>")
    parts.append("</ul>")

    if data.steps:
        ran = sum(1 for s in data.steps if s["state"] == "ran")
        cached = sum(1 for s in data.steps if s["state"] == "cached")
        parts.append(f"<h2>Components</h2><p>{ran} ran, {cached} from the cache</p>")
        parts.append(_table(["component", "state", "seconds"],
                            [[s["node"], s["state"], float(s["seconds"])] for s in data.steps],
                            ["fail" if s["state"] == "failed" else "" for s in data.steps]))

    parts.append("<h2>Data validation</h2>")
    if data.anomalies:
        parts.append(f"<p><span class='badge bad'>{len(data.anomalies)} anomalies</span> nothing was trained "
                     f"on this span</p>" if r.get("exit_code") == 2 else
                     f"<p><span class='badge bad'>{len(data.anomalies)} anomalies</span></p>")
        parts.append(_table(["split", "feature", "rule", "description"],
                            [[a.get("split"), a.get("feature"), a.get("rule"), a.get("description")]
                             for a in data.anomalies]))
    elif data.steps:
        parts.append("<p><span class='badge ok'>no anomalies</span> against the curated schema</p>")

    if data.statistics:
        parts.append("<h2>Data statistics (train split)</h2>")
        rows = []
        for s in data.statistics:
            if s.get("kind") == "numeric":
                rows.append([s["feature"], s["role"], s["count"], s["missing"], s["mean"], s["std"], s["min"],
                             s["max"], ""])
            else:
                rows.append([s["feature"], s["role"], s["count"], s["missing"], "", "", "", "",
                             f"{s.get('unique')} values, top {s.get('top')}"])
        parts.append(_table(["column", "role", "count", "missing", "mean", "std", "min", "max", "categories"], rows))

    if data.evaluation:
        ev = data.evaluation
        parts.append("<h2>Evaluation by slice</h2>")
        if data.thresholds:
            parts.append("<p>Thresholds: " + "; ".join(
                f"{_e(t['metric'])} {_e(t['bound'])} ({_e(t['rule'])}, on {_e(t['slices'])})"
                for t in data.thresholds) + ". Other slices are reported, not gating.</p>"
                if all(t["slices"] != "every slice" for t in data.thresholds) else
                "<p>Thresholds: " + "; ".join(
                f"{_e(t['metric'])} {_e(t['bound'])} ({_e(t['rule'])}, on {_e(t['slices'])})"
                for t in data.thresholds) + "</p>")
        failing = {f["slice"] for f in ev.get("failures", [])}
        names = sorted(ev["slices"], key=_slice_order)
        rows, classes = [], []
        for name in names:
            m = ev["slices"][name]
            diff = ev.get("diff", {}).get(name, {}).get("mean_absolute_error")
            base = (data.baseline_metrics or {}).get(name, {}).get("mean_absolute_error")
            rows.append([name, m.get("example_count"), m.get("mean_absolute_error"),
                         m.get("root_mean_squared_error"), base if base is not None else "",
                         diff if diff is not None else ""])
            classes.append("fail" if name in failing else "")
        parts.append(_table(["slice", "examples", "MAE", "RMSE", "baseline MAE (same data)", "MAE change"],
                            rows, classes))
        if ev.get("failures"):
            parts.append(_table(["slice", "metric", "value", "bound", "rule"],
                                [[f["slice"], f["metric"], f["value"], f["bound"], f["rule"]]
                                 for f in ev["failures"]]))
        if data.baseline_metrics is None:
            parts.append("<p class='muted'>No baseline: the first model is judged by the absolute bound alone.</p>")

    if data.plots:
        parts.append("<h2>Plots</h2>")
        for title, uri in data.plots.items():
            caption = title
            if title == "feature distributions":
                caption += (f": this run's span against {data.reference}, the span the previously "
                            f"pushed model was trained on" if data.reference else " (no earlier span to compare)")
            parts.append(f"<h3>{_e(caption)}</h3><img alt='{_e(title)}' src='{uri}'>")
    for note in data.notes:
        parts.append(f"<p class='muted'>{_e(note)}</p>")
    parts.append(f"<p class='muted'>Provenance: <code>cd4ml lineage {_e(r.get('pushed_version') or '')}"
                 f"</code> &middot; all runs: <code>cd4ml runs</code></p></body></html>")
    return "\n".join(parts)


def write_report(result, metadata_path: str) -> str:
    """Write <run dir>/report.html for a RunResult; returns its path."""
    html_text = render(gather(result, metadata_path))
    path = os.path.join(result.run_dir, REPORT_FILE)
    with open(path + ".tmp", "w") as fh:
        fh.write(html_text)
    os.replace(path + ".tmp", path)
    return path


def write_run_report(result, metadata_path: Optional[str] = None) -> Optional[str]:
    """The runner's hook: write the report, and never let a report break a run.

    The MLMD path defaults to the one configured for the run's home (<home>/runs/<run id>).
    """
    try:
        if metadata_path is None:
            from pipelines.config import PipelineConfig

            home = os.path.dirname(os.path.dirname(os.path.abspath(result.run_dir)))
            metadata_path = PipelineConfig.from_env(home=home).metadata_path
        return write_report(result, metadata_path)
    except Exception as exc:  # noqa: BLE001 - the report is a view; the run's outcome stands
        log.warning("run report not written for %s: %s: %s", result.run_id, type(exc).__name__, exc)
        return None
