"""Fit the drift and outlier detectors on a span's training rows (the pipeline's side).

scikit-learn fits the IsolationForest here, in the pipeline environment; what a version ships is
plain arrays (scoring/detector_core.py), so the server needs neither scikit-learn nor pickle.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

import numpy as np

from components import features
from scoring.detector_core import (N_ESTIMATORS, P_VAL, THRESHOLD_PERC, FastIForest, TabularDrift,
                                      observed_categories)


def fit(x_train: np.ndarray, seed: int = 42, p_val: float = P_VAL):
    """The drift test and the outlier scorer fitted on the training rows; returns (drift, outlier, meta)."""
    from sklearn.ensemble import IsolationForest

    if len(x_train) < 10:
        raise ValueError(f"detectors need training rows; got {len(x_train)}")
    cats = observed_categories(x_train)
    drift = TabularDrift(x_train, cats, p_val=p_val)
    forest = IsolationForest(n_estimators=N_ESTIMATORS, max_samples=min(256, len(x_train)), random_state=seed)
    forest.fit(x_train)
    outlier = fast_forest(forest)
    outlier.threshold = float(np.percentile(outlier.score(x_train), THRESHOLD_PERC))
    meta = {
        "features": features.FEATURE_NAMES,
        "encoding": "features.encode_row: categories as vocabulary index",
        "categories_per_feature": {str(k): v for k, v in cats.items()},
        "vocabulary_sizes": {str(k): v for k, v in features.categories_per_feature().items()},
        "p_val": p_val,
        "n_reference": int(len(x_train)),
        "drift": {"kind": "per-feature KS (numeric) and chi-squared (categorical), Bonferroni",
                  "library": "scipy"},
        "outlier": {"kind": "IsolationForest", "library": "scikit-learn", "n_estimators": N_ESTIMATORS,
                    "threshold": outlier.threshold, "threshold_perc": THRESHOLD_PERC},
        "seed": seed,
    }
    return drift, outlier, meta


def fast_forest(forest, threshold: float = float("inf")) -> FastIForest:
    """The fitted IsolationForest flattened into the arrays FastIForest scores with."""
    from sklearn.ensemble._iforest import _average_path_length

    trees = [e.tree_ for e in forest.estimators_]
    width, n = max(t.node_count for t in trees), len(trees)
    arrays = {"left": np.zeros((n, width), np.int64), "right": np.zeros((n, width), np.int64),
              "feature": np.zeros((n, width), np.int64), "cut": np.zeros((n, width), np.float64),
              # Path length of a row ending at a leaf: its depth plus the expected depth of the
              # unbuilt subtree below it (sklearn: depth + c(n_samples_at_leaf)).
              "leaf_value": np.zeros((n, width), np.float64)}
    depth = 0
    # sklearn indexes columns per tree only when it subsampled features (as in its scoring).
    subsample = forest._max_features != forest.n_features_in_
    identity = np.arange(forest.n_features_in_)
    for i, (tree, cols) in enumerate(zip(trees, forest.estimators_features_)):
        cols = cols if subsample else identity
        c = tree.node_count
        leaf = tree.children_left[:c] == -1
        arrays["left"][i, :c] = np.where(leaf, np.arange(c), tree.children_left[:c])
        arrays["right"][i, :c] = np.where(leaf, np.arange(c), tree.children_right[:c])
        arrays["feature"][i, :c] = np.where(leaf, 0, np.asarray(cols)[np.maximum(tree.feature[:c], 0)])
        arrays["cut"][i, :c] = tree.threshold[:c]
        depths = _node_depths(tree.children_left[:c], tree.children_right[:c])
        arrays["leaf_value"][i, :c] = depths + _average_path_length(tree.n_node_samples[:c])
        depth = max(depth, int(depths.max()))
    norm = n * _average_path_length([forest._max_samples])[0]
    return FastIForest(arrays, depth, norm, float(forest.offset_), threshold)


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depths = np.zeros(len(left), np.float64)
    stack = [(0, 0)]
    while stack:
        node, d = stack.pop()
        depths[node] = d
        if left[node] != -1:
            stack.append((left[node], d + 1))
            stack.append((right[node], d + 1))
    return depths


# Rows the detectors are fitted on, at most: an even sample of the span's training split. Both
# tests are about distributions, and 20,000 rows pin them down; reading every row of a large span
# in Python cost 17 s of a 125 s run at 212,500 rows (benchmarks/results/scale.json).
SAMPLE_ROWS = 20_000


# Records counted, or parsed, per graph step.
COUNT_BATCH = 8192


def read_examples(split_dir: str, sample: Optional[int] = SAMPLE_ROWS) -> List[Dict[str, object]]:
    """Raw rows (feature columns only) from ExampleGen's gzip TFRecords of tf.Examples: every
    k-th record, k chosen so that at most `sample` rows come back (all of them when None)."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(split_dir, "*")))
    if not files:
        raise ValueError(f"no example files under {split_dir}")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if sample:
        # Counted in batches: one graph step per record cost 2.7 s on 173,250 records, batched 0.3 s.
        total = int(dataset.batch(COUNT_BATCH).reduce(
            np.int64(0), lambda count, batch: count + tf.cast(tf.shape(batch)[0], tf.int64)))
        dataset = dataset.shard(max(1, math.ceil(total / sample)), 0)
    # Parsed in batches by TensorFlow: one protobuf parse per record in Python was 2 s of 20,000.
    spec = {f.name: tf.io.FixedLenFeature([], tf.as_dtype(f.types.tf)) for f in features.FEATURES}
    rows: List[Dict[str, object]] = []
    for batch in dataset.batch(COUNT_BATCH):
        parsed = tf.io.parse_example(batch, spec)
        columns = []
        for name in features.FEATURE_NAMES:
            values = parsed[name].numpy().tolist()
            columns.append([v.decode() for v in values] if parsed[name].dtype == tf.string else values)
        rows.extend(dict(zip(features.FEATURE_NAMES, values)) for values in zip(*columns))
    return rows

