"""The report's plots as inline PNGs (matplotlib, no display needed): error by slice, feature
distributions of two spans, and the lineage graph of a version."""

from __future__ import annotations

import base64
import io
from typing import Dict, List, Optional, Sequence

from cd4ml.contract import EXAMPLE_COUNT, MAE, OVERALL_SLICE
from cd4ml.report.statistics import feature_distribution


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


def slice_values(slices: Dict[str, Dict[str, float]], column: str, metric: str):
    found = []
    for name, metrics in slices.items():
        if name.startswith(column + "=") and "," not in name and metric in metrics:
            value = name.split("=", 1)[1]
            found.append((value, metrics[metric], metrics.get(EXAMPLE_COUNT, 0)))
    return sorted(found, key=lambda t: (float(t[0]) if is_number(t[0]) else t[0]))


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def plot_error_by(slices, column: str, bound: Optional[float] = None, baseline=None) -> Optional[str]:
    """Bar chart of MAE per value of a slicing column (with the overall bound as a line)."""
    rows = slice_values(slices, column, MAE)
    if not rows:
        return None
    fig, axes = _figure(7.0 if len(rows) > 6 else 4.5, 2.8)
    ax = axes[0][0]
    labels = [r[0] for r in rows]
    ax.bar(range(len(rows)), [r[1] for r in rows], color="#4878a8", label="candidate")
    if baseline:
        base = dict((r[0], r[1]) for r in slice_values(baseline, column, MAE))
        ax.plot(range(len(rows)), [base.get(x, float("nan")) for x in labels], "o", color="#d08030",
                label="baseline")
    overall = slices.get(OVERALL_SLICE, {}).get(MAE)
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


def plot_importances(candidate: Dict[str, float], baseline: Optional[Dict[str, float]] = None) -> Optional[str]:
    """Horizontal bars: each feature's share of the attribution, the candidate's beside the
    baseline's (scoring/explain.py importances)."""
    if not candidate:
        return None
    names = sorted(candidate, key=lambda n: candidate[n])
    fig, axes = _figure(6.0, 0.28 * len(names) + 1.0)
    ax = axes[0][0]
    height = 0.4 if baseline else 0.7
    positions = range(len(names))
    ax.barh([p + (height / 2 if baseline else 0) for p in positions], [candidate[n] for n in names],
            height=height, color="#4878a8", label="this model")
    if baseline:
        ax.barh([p - height / 2 for p in positions], [baseline.get(n, 0.0) for n in names], height=height,
                color="#d08030", label="baseline model")
    ax.set_yticks(list(positions))
    ax.set_yticklabels(names, fontsize=8)
    ax.set_xlabel("share of mean |attribution| (eval rows)")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig, left=0.2, bottom=0.12)


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
    """Draw a provenance (mlmd.provenance) left to right: data on the left, the release on the
    right; executions as boxes, artifacts as plain labels. Returns the matplotlib figure."""
    from cd4ml import mlmd

    nodes, edges = mlmd.lineage_edges(doc)
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

