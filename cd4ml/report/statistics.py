"""Dataset statistics as StatisticsGen wrote them (TFDV protos), read for tables and plots."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

from components import features


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

