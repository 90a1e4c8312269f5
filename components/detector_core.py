"""Fit, save, load and score the drift and outlier detectors, without TFX.

Split from the TFX component (`components/detectors.py`) because the server loads these in the
serving environment, which has alibi-detect and TensorFlow but no TFX. Detectors are stored in
alibi-detect's own format (`save_detector`), so any alibi-detect runtime can read them; meta.json
next to them says how rows were encoded, so a detector is never fed a layout it was not fitted on.

Rows are encoded by `features.encode_row` (categories as vocabulary indices, FEATURE_NAMES order):
TabularDrift then runs chi-squared on the categorical columns (`categories_per_feature`) and KS on
the numeric ones; without that map it would treat categories as numbers (docs/stack.md).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List, Optional

import numpy as np

from components import features

DRIFT_DIR = "drift"
OUTLIER_DIR = "outlier"
META = "meta.json"
P_VAL = 0.05
# Share of training rows scored as normal: the outlier threshold is this percentile of the
# training scores, so about 1% of rows like the training data are flagged.
THRESHOLD_PERC = 99.0
# IForest cost grows with trees; 50 keeps per-request scoring well under a millisecond with
# `FastIForest` and the score is stable enough for a per-row flag.
N_ESTIMATORS = 50


def encode(rows: Iterable[Dict[str, object]]) -> np.ndarray:
    return np.asarray([features.encode_row(r) for r in rows], dtype=np.float32).reshape(
        -1, len(features.FEATURES))


def fit(x_train: np.ndarray, seed: int = 42, p_val: float = P_VAL):
    """TabularDrift and IForest fitted on the training rows; returns (drift, outlier, meta)."""
    from alibi_detect.cd import TabularDrift
    from alibi_detect.od import IForest

    if len(x_train) < 10:
        raise ValueError(f"detectors need training rows; got {len(x_train)}")
    cats = observed_categories(x_train)
    drift = TabularDrift(x_train, p_val=p_val, categories_per_feature=cats)
    outlier = IForest(n_estimators=N_ESTIMATORS, max_samples=min(256, len(x_train)))
    outlier.isolationforest.set_params(random_state=seed)
    outlier.fit(x_train)
    outlier.infer_threshold(x_train, threshold_perc=THRESHOLD_PERC)
    meta = {
        "features": features.FEATURE_NAMES,
        "encoding": "features.encode_row: categories as vocabulary index",
        "categories_per_feature": {str(k): v for k, v in cats.items()},
        "vocabulary_sizes": {str(k): v for k, v in features.categories_per_feature().items()},
        "p_val": p_val,
        "n_reference": int(len(x_train)),
        "outlier": {"kind": "IForest", "n_estimators": N_ESTIMATORS,
                    "threshold": float(outlier.threshold), "threshold_perc": THRESHOLD_PERC},
        "seed": seed,
    }
    return drift, outlier, meta


def observed_categories(x_train: np.ndarray) -> Dict[int, List[int]]:
    """Categorical column -> the vocabulary indices present in the training rows.

    Columns and vocabularies come from features.py. Only the categories seen in training are
    listed: a vocabulary entry absent from both the reference and a window (July in a Jan-June
    span) would be an all-zero column, which chi-squared refuses. A category that appears only in
    the window is still counted (alibi-detect adds it), and is the strongest drift signal there is.
    """
    return {i: [c for c in range(n) if bool((x_train[:, i] == c).any())]
            for i, n in features.categories_per_feature().items()}


def save(directory: str, drift, outlier, meta: Dict) -> None:
    from alibi_detect.saving import save_detector

    os.makedirs(directory, exist_ok=True)
    save_detector(drift, os.path.join(directory, DRIFT_DIR))
    save_detector(outlier, os.path.join(directory, OUTLIER_DIR))
    with open(os.path.join(directory, META), "w") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)


class Detectors:
    """A loaded detector set: the drift detector, the outlier detector and a fast scorer."""

    def __init__(self, drift, outlier, meta: Dict):
        self.drift = drift
        self.outlier = outlier
        self.meta = meta
        self.threshold = float(outlier.threshold)
        self.scorer = FastIForest(outlier.isolationforest, self.threshold)

    def outlier_scores(self, x: np.ndarray) -> np.ndarray:
        return self.scorer.score(x)

    def drift_test(self, x: np.ndarray) -> Dict[str, object]:
        """Run TabularDrift on a window: drift flag, p-value per feature, the features that drifted."""
        # Batch-level test: alibi-detect applies the Bonferroni correction (threshold p_val / 11)
        # so that eleven tests on one window do not raise a false alarm one time in two.
        result = self.drift.predict(x, drift_type="batch", return_p_val=True)["data"]
        threshold = float(result["threshold"])
        p_vals = {name: float(p) for name, p in zip(features.FEATURE_NAMES, result["p_val"])}
        drifted = [name for name, p in p_vals.items() if p < threshold]
        return {"is_drift": bool(result["is_drift"]), "p_vals": p_vals, "drifted": drifted,
                "threshold": threshold, "rows": int(len(x))}


def load(directory: str) -> Detectors:
    """Load a saved set; raises ValueError naming what is wrong when the set does not fit this code."""
    from alibi_detect.saving import load_detector

    meta_path = os.path.join(directory, META)
    if not os.path.exists(meta_path):
        raise ValueError(f"{directory}: no {META}")
    with open(meta_path) as fh:
        meta = json.load(fh)
    if meta.get("features") != features.FEATURE_NAMES:
        raise ValueError(f"{directory}: detectors were fitted on features {meta.get('features')}, "
                         f"this code has {features.FEATURE_NAMES}")
    drift = load_detector(os.path.join(directory, DRIFT_DIR))
    outlier = load_detector(os.path.join(directory, OUTLIER_DIR))
    return Detectors(drift, outlier, meta)


class FastIForest:
    """alibi-detect's IForest score (`-decision_function`) computed with numpy over all trees at once.

    sklearn walks the trees one by one in Python: about 1.5 ms for one row with 50 trees on this
    machine, more than the whole serving budget. Here every tree is flattened into arrays and the
    rows descend all trees together, one vectorised step per tree level. The result equals
    `IForest.score` (tested), so the threshold fitted by alibi-detect still applies.
    """

    def __init__(self, forest, threshold: float):
        from sklearn.ensemble._iforest import _average_path_length

        trees = [e.tree_ for e in forest.estimators_]
        width = max(t.node_count for t in trees)
        n = len(trees)
        self.left = np.zeros((n, width), np.int64)
        self.right = np.zeros((n, width), np.int64)
        self.feature = np.zeros((n, width), np.int64)
        self.cut = np.zeros((n, width), np.float64)
        # Path length of a row ending at a leaf: its depth plus the expected depth of the
        # unbuilt subtree below it (sklearn: depth + c(n_samples_at_leaf) - 1 + 1 for the root).
        self.leaf_value = np.zeros((n, width), np.float64)
        self.is_leaf = np.ones((n, width), bool)
        depth = 0
        # sklearn indexes columns per tree only when it subsampled features (as in its scoring).
        subsample = forest._max_features != forest.n_features_in_
        identity = np.arange(forest.n_features_in_)
        for i, (tree, cols) in enumerate(zip(trees, forest.estimators_features_)):
            cols = cols if subsample else identity
            c = tree.node_count
            leaf = tree.children_left[:c] == -1
            self.is_leaf[i, :c] = leaf
            self.left[i, :c] = np.where(leaf, np.arange(c), tree.children_left[:c])
            self.right[i, :c] = np.where(leaf, np.arange(c), tree.children_right[:c])
            self.feature[i, :c] = np.where(leaf, 0, np.asarray(cols)[np.maximum(tree.feature[:c], 0)])
            self.cut[i, :c] = tree.threshold[:c]
            depths = _node_depths(tree.children_left[:c], tree.children_right[:c])
            self.leaf_value[i, :c] = depths + _average_path_length(tree.n_node_samples[:c])
            depth = max(depth, int(depths.max()))
        self.levels = depth
        self.rows_index = np.arange(n)
        self.norm = n * _average_path_length([forest._max_samples])[0]
        self.offset = float(forest.offset_)
        self.threshold = threshold

    def score(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        m, width = len(x), self.left.shape[1]
        flat_x = x.ravel()
        left, right = self.left.ravel(), self.right.ravel()
        feature, cut = self.feature.ravel(), self.cut.ravel()
        base = np.broadcast_to(self.rows_index * width, (m, len(self.rows_index))).ravel()
        row_base = np.repeat(np.arange(m) * x.shape[1], len(self.rows_index))
        node = base.copy()  # flat index tree * width + node, every tree at its root
        for _ in range(self.levels):
            go_left = flat_x.take(row_base + feature.take(node)) <= cut.take(node)
            node = base + np.where(go_left, left.take(node), right.take(node))
        path = self.leaf_value.ravel().take(node).reshape(m, -1).sum(axis=1)
        # sklearn: score_samples = -2 ** (-path / norm); decision = score_samples - offset_;
        # alibi-detect's IForest.score is -decision.
        return 2.0 ** (-path / self.norm) + self.offset

    def is_outlier(self, scores: np.ndarray) -> np.ndarray:
        return scores > self.threshold


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


def read_examples(split_dir: str, limit: Optional[int] = None) -> List[Dict[str, object]]:
    """Raw rows (feature columns only) from ExampleGen's gzip TFRecords of tf.Examples."""
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(os.path.join(split_dir, "*")))
    if not files:
        raise ValueError(f"no example files under {split_dir}")
    rows = []
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit:
        dataset = dataset.take(limit)
    for record in dataset:
        example = tf.train.Example.FromString(record.numpy())
        row = {}
        for name in features.FEATURE_NAMES:
            feat = example.features.feature[name]
            kind = feat.WhichOneof("kind")
            value = getattr(feat, kind).value[0]
            row[name] = value.decode() if isinstance(value, bytes) else value
        rows.append(row)
    return rows
