"""Save, load and score the drift and outlier detectors, without TFX or scikit-learn.

The server loads these in the serving environment, which has neither TFX nor scikit-learn; the
pipeline fits them (`components/detector_fit.py`, run by the DetectorTrainer component).
Permissive libraries only (docs/licences.md): the drift test is SciPy's two-sample
Kolmogorov-Smirnov test for numeric features and its chi-squared contingency test for categorical
ones; the outlier detector is scikit-learn's IsolationForest, flattened into arrays.

A saved set is plain data, no pickle: `drift.npz` (the reference rows and the categories seen in
them), `outlier.npz` (the fitted forest flattened into arrays, see FastIForest) and `meta.json`
(how rows were encoded, so a detector is never fed a layout it was not fitted on). Loading one
from a bucket runs no code of its own: the server scores with numpy, and the forest with a loop
numba compiles (BSD-2-Clause).

Rows are encoded by `features.encode_row` (categories as vocabulary indices, FEATURE_NAMES order).
Categorical columns come from features.py: without that map a tabular drift test would treat
categories as numbers (docs/stack.md).
"""

from __future__ import annotations

import io
import json
import os
from typing import Dict, Iterable, List, Sequence

import numba
import numpy as np

import components.features as features  # the feature list: its one home

DRIFT_FILE = "drift.npz"
OUTLIER_FILE = "outlier.npz"
META = "meta.json"
P_VAL = 0.05
# Share of training rows scored as normal: the outlier threshold is this percentile of the
# training scores, so about 1% of rows like the training data are flagged.
THRESHOLD_PERC = 99.0
# IsolationForest cost grows with trees; 50 keeps per-request scoring well under a millisecond
# with FastIForest and the score is stable enough for a per-row flag.
N_ESTIMATORS = 50


def encode(rows: Iterable[Dict[str, object]], spec: Sequence[features.Feature] = features.FEATURES) -> np.ndarray:
    return np.asarray([features.encode_row(r, spec) for r in rows], dtype=np.float32).reshape(-1, len(spec))


def observed_categories(x_train: np.ndarray) -> Dict[int, List[int]]:
    """Categorical column -> the vocabulary indices present in the training rows.

    Columns and vocabularies come from features.py. Only the categories seen in training are
    listed: a vocabulary entry absent from both the reference and a window (July in a Jan-June
    span) would be an all-zero column, which chi-squared refuses. A category that appears only in
    the window is still counted (see TabularDrift.p_values), and is the strongest drift signal.
    """
    return {i: [c for c in range(n) if bool((x_train[:, i] == c).any())]
            for i, n in features.categories_per_feature().items()}


class TabularDrift:
    """Per-feature two-sample tests of a window against the reference rows, Bonferroni-corrected.

    Numeric features: Kolmogorov-Smirnov (scipy.stats.ks_2samp, asymptotic p-value). Categorical
    features: chi-squared on the 2 x k table of category counts (scipy.stats.chi2_contingency),
    over the categories of the reference and the window together. The window drifts when any
    p-value is below p_val / number of features, so eleven tests on one window do not raise a
    false alarm one time in two.
    """

    def __init__(self, x_ref: np.ndarray, categories: Dict[int, List[int]], p_val: float = P_VAL):
        import scipy.stats  # noqa: F401 - loaded with the version, not inside the first drift test

        self.x_ref = np.asarray(x_ref, dtype=np.float32)
        self.categories = {int(k): [int(c) for c in v] for k, v in categories.items()}
        self.p_val = p_val
        # What every window is compared with, computed once: each numeric reference column sorted
        # with its empirical CDF at its own points, each categorical one counted. A window then
        # costs a search of the reference in it, not a sort of the reference (20 ms -> 2 ms; 0.8 ms
        # with the p-values computed without scipy.stats' generic machinery, below).
        n = len(self.x_ref)
        self._sorted, self._ref_cdf, self._ref_counts = {}, {}, {}
        for f in range(self.x_ref.shape[1]):
            column = self.x_ref[:, f]
            if f in self.categories:
                values, counts = np.unique(column, return_counts=True)
                self._ref_counts[f] = dict(zip(values.astype(int).tolist(), counts.tolist()))
            else:
                self._sorted[f] = np.sort(column)
                self._ref_cdf[f] = np.searchsorted(self._sorted[f], self._sorted[f], side="right") / n

    @property
    def threshold(self) -> float:
        return self.p_val / self.x_ref.shape[1]

    def p_values(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        p = np.zeros(self.x_ref.shape[1])
        numeric = []
        for f in range(self.x_ref.shape[1]):
            if f in self.categories:
                values, counts = np.unique(x[:, f].astype(int), return_counts=True)
                window = dict(zip(values.tolist(), counts.tolist()))
                seen = sorted(set(self.categories[f]) | set(window))
                table = np.array([[self._ref_counts[f].get(c, 0) for c in seen], [window.get(c, 0) for c in seen]])
                p[f] = _chi2_p_value(table) if len(seen) > 1 else 1.0
            else:
                numeric.append(f)
        if numeric:
            p[numeric] = self._ks_p_values(numeric, x)
        return p

    def _ks_p_values(self, columns: List[int], x: np.ndarray) -> np.ndarray:
        """scipy.stats.ks_2samp(reference, window, method="asymp").pvalue of each column, on the
        presorted reference: the largest CDF gap over the points of both samples, then Smirnov's
        asymptotic distribution as scipy takes it, for every column in one call (the samples'
        sizes are the same for all; tests/test_detectors.py compares the two)."""
        from scipy.stats import distributions

        gaps = []
        n1, n2 = len(self.x_ref), len(x)
        for f in columns:
            ref, win = self._sorted[f], np.sort(x[:, f])
            at_ref = np.abs(self._ref_cdf[f] - np.searchsorted(win, ref, side="right") / n2)
            at_win = np.abs(np.searchsorted(ref, win, side="right") / n1 - np.searchsorted(win, win, side="right") / n2)
            gaps.append(min(max(at_ref.max(), at_win.max()), 1.0))
        m, n = sorted([float(n1), float(n2)], reverse=True)
        return np.clip(distributions.kstwo.sf(np.asarray(gaps), np.round(m * n / (m + n))), 0, 1)

    def save(self, out):
        """Into a binary file object (module `save` sends its bytes through gfile)."""
        cats = sorted(self.categories)
        np.savez(out, x_ref=self.x_ref, p_val=np.float64(self.p_val), category_columns=np.array(cats, np.int64),
                 **{f"categories_{c}": np.array(self.categories[c], np.int64) for c in cats})

    @classmethod
    def load(cls, source) -> "TabularDrift":
        """From a local path or a binary file object."""
        with np.load(source, allow_pickle=False) as data:
            cats = {int(c): data[f"categories_{c}"].tolist() for c in data["category_columns"]}
            return cls(data["x_ref"], cats, float(data["p_val"]))


def _chi2_p_value(table: np.ndarray) -> float:
    """scipy.stats.chi2_contingency(table).pvalue for a 2 x k table of counts, the same arithmetic
    step for step (Pearson's statistic, Yates's correction at one degree of freedom, the chi-squared
    survival function scipy's own `chi2.sf` calls), without its generic machinery: that was 0.2 ms
    a feature, three quarters of a 200-row window's test, run on the server's CPU every 200 rows
    (tests/test_detectors.py compares the two)."""
    from scipy.special import chdtrc
    from scipy.stats import chi2_contingency

    observed = np.asarray(table, dtype=np.float64)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
    if not expected.all():  # a category in neither sample: scipy's own refusal, word for word
        return chi2_contingency(table)[1]
    dof = (observed.shape[0] - 1) * (observed.shape[1] - 1)
    if dof == 0:
        return 1.0
    if dof == 1:
        diff = expected - observed
        observed = observed + np.minimum(0.5, np.abs(diff)) * np.sign(diff)
    return float(chdtrc(dof, ((observed - expected) ** 2 / expected).sum()))


class FastIForest:
    """An IsolationForest's outlier score (`-decision_function`), compiled by numba.

    sklearn walks the trees one by one in Python: about 1.5 ms for one row with 50 trees on this
    machine, more than the whole serving budget. Vectorised numpy over all trees at once still
    cost about 30 us a row in a tight loop, 85 us inside the server (a dozen array calls per tree
    level, each a fixed cost). Here every tree is flattened into one 8-byte record per node and
    one compiled loop walks each row down each tree: 2.3 us for one row in a tight loop, about
    19 us with the caches cold as they are in the server, and 100 rows in 0.8x the time numpy took. The
    arrays are what a version ships (outlier.npz); `detector_fit.fast_forest` builds them from a
    fitted forest, and the score equals sklearn's to 1e-12 (tested). The loop compiles when the
    forest loads (about 0.3 s, once per process).
    """

    ARRAYS = ("left", "right", "feature", "cut", "leaf_value")

    def __init__(self, arrays: Dict[str, np.ndarray], levels: int, norm: float, offset: float, threshold: float):
        for name in self.ARRAYS:
            setattr(self, name, np.asarray(arrays[name]))
        self.levels = int(levels)  # the deepest leaf: part of outlier.npz, not needed by the compiled walk
        self.norm = float(norm)
        self.offset = float(offset)
        self.threshold = float(threshold)
        self._nodes, self._leaves, self._shift = _walk_layout(self.left, self.right, self.feature, self.cut,
                                                              self.leaf_value)

    def score(self, x: np.ndarray) -> np.ndarray:
        # sklearn compares float32 rows with float64 cuts; encode() already gives float32 rows.
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
        return _scores(x, self._nodes, self._leaves, self._shift, self.norm, self.offset)

    def is_outlier(self, scores: np.ndarray) -> np.ndarray:
        return scores > self.threshold

    def save(self, out):
        """Into a binary file object (module `save` sends its bytes through gfile)."""
        np.savez(out, **{name: getattr(self, name) for name in self.ARRAYS}, levels=np.int64(self.levels),
                 norm=np.float64(self.norm), offset=np.float64(self.offset), threshold=np.float64(self.threshold))

    @classmethod
    def load(cls, source) -> "FastIForest":
        """From a local path or a binary file object."""
        with np.load(source, allow_pickle=False) as data:
            forest = cls({name: data[name] for name in cls.ARRAYS}, int(data["levels"]), float(data["norm"]),
                         float(data["offset"]), float(data["threshold"]))
        forest.score(np.zeros((1, int(forest.feature.max()) + 1)))  # compile now, not in the first request
        return forest


# The compiled walk's node: 8 bytes, so eight share a cache line. The server's caches are cold
# between requests and a row's walk is a chain of dependent loads, so the memory it touches is its
# cost: with 32-byte nodes (four float64s) a row cost 23 us in the server and 6.2 in a tight loop.
NODE = np.dtype([("cut", "<f4"), ("link", "<i4")])


def _walk_layout(left, right, feature, cut, leaf_value):
    """Each tree renumbered in depth-first order, so a node's left child is the next node, and
    stored as NODE records: `cut` is the float64 cut rounded down to a float32, which leaves every
    comparison of a float32 value unchanged (x <= cut exactly when x <= the largest float32 not
    above cut); `link` is the right child shifted left by `shift` bits over the feature, or on a
    leaf -1 - the leaf's index in `leaves` (its path length, float64 as sklearn sums it)."""
    trees, width = left.shape
    shift = max(1, int(feature.max()).bit_length())
    if (width << shift) >= 2 ** 31:
        raise ValueError(f"outlier.npz: {width} nodes a tree over {int(feature.max()) + 1} features "
                         f"do not fit the scorer's 32-bit links")
    nodes, leaves = np.zeros((trees, width), NODE), np.zeros((trees, width))
    cut32 = cut.astype(np.float32)
    above = cut32.astype(np.float64) > cut
    cut32[above] = np.nextafter(cut32[above], np.float32(-np.inf))
    for t in range(trees):
        order, stack = [], [0]  # depth-first: a node, then its left subtree, then its right one
        while stack:
            node = stack.pop()
            order.append(node)
            if left[t, node] != node:
                stack += [right[t, node], left[t, node]]
        position = {node: i for i, node in enumerate(order)}
        for i, node in enumerate(order):
            if left[t, node] == node:
                nodes[t, i] = (0.0, -1 - i)
                leaves[t, i] = leaf_value[t, node]
            else:
                nodes[t, i] = (cut32[t, node], (position[right[t, node]] << shift) | int(feature[t, node]))
    return nodes, leaves, shift


@numba.njit(nogil=True, cache=False)
def _scores(x, nodes, leaves, shift, norm, offset):  # pragma: no cover - compiled
    """Each row's path length summed over the trees, in sklearn's order of summation (tree by tree
    over all rows, so one tree's nodes stay in cache), as the outlier score. sklearn:
    score_samples = -2 ** (-path / norm); decision = score_samples - offset_; the score is -decision."""
    out = np.zeros(x.shape[0])
    mask = (1 << shift) - 1
    for t in range(nodes.shape[0]):
        tree = nodes[t]
        for r in range(x.shape[0]):
            i = 0
            link = tree[0].link
            while link >= 0:
                i = i + 1 if x[r, link & mask] <= tree[i].cut else link >> shift
                link = tree[i].link
            out[r] += leaves[t, -1 - link]
    return 2.0 ** (-out / norm) + offset


def save(directory: str, drift: TabularDrift, outlier: FastIForest, meta: Dict) -> None:
    """Write the set under `directory`, an artifact URI: a local path, or gs:// in a Kubeflow pod
    (local-file calls there would write into a folder named `gs:` and be lost with the pod), so
    every byte goes through TensorFlow's filesystem layer; `load` reads through it too."""
    import tensorflow as tf

    tf.io.gfile.makedirs(directory)
    for name, detector in ((DRIFT_FILE, drift), (OUTLIER_FILE, outlier)):
        buffer = io.BytesIO()
        detector.save(buffer)
        with tf.io.gfile.GFile(os.path.join(directory, name), "wb") as fh:
            fh.write(buffer.getvalue())
    with tf.io.gfile.GFile(os.path.join(directory, META), "w") as fh:
        fh.write(json.dumps(meta, indent=2, sort_keys=True))


class LegacyDetectors(ValueError):
    """A set saved by an older cd4ml (alibi-detect format, drift/ and outlier/ folders)."""


# What older versions in a registry carry instead of the arrays: served, without detectors.
LEGACY_DIRS = ("drift", "outlier")


class Detectors:
    """A loaded detector set: the drift test and the outlier scorer."""

    def __init__(self, drift: TabularDrift, outlier: FastIForest, meta: Dict):
        self.drift = drift
        self.outlier = outlier
        self.meta = meta
        self.threshold = outlier.threshold

    def outlier_scores(self, x: np.ndarray) -> np.ndarray:
        return self.outlier.score(x)

    def drift_test(self, x: np.ndarray) -> Dict[str, object]:
        """The drift flag, the p-value per feature and the features that drifted, for one window."""
        p_vals = {name: float(p) for name, p in zip(self.meta["features"], self.drift.p_values(x))}
        threshold = self.drift.threshold
        drifted = [name for name, p in p_vals.items() if p < threshold]
        return {"is_drift": bool(drifted), "p_vals": p_vals, "drifted": drifted,
                "threshold": threshold, "rows": int(len(x))}


def load(directory: str, names: Sequence[str] = tuple(features.FEATURE_NAMES)) -> Detectors:
    """Load a set fitted on the features `names` from wherever `save` wrote it (a local path, gs://,
    ram://: TensorFlow's filesystem layer, the arrays read into memory); ValueError naming what is
    wrong otherwise."""
    import tensorflow as tf

    gfile = tf.io.gfile
    meta_path = os.path.join(directory, META)
    if not gfile.exists(meta_path):
        raise ValueError(f"{directory}: no {META}")
    with gfile.GFile(meta_path) as fh:
        meta = json.loads(fh.read())
    if meta.get("features") != list(names):
        raise ValueError(f"{directory}: detectors were fitted on features {meta.get('features')}, "
                         f"the version has {list(names)}")
    missing = [f for f in (DRIFT_FILE, OUTLIER_FILE) if not gfile.exists(os.path.join(directory, f))]
    if missing and gfile.isdir(os.path.join(directory, LEGACY_DIRS[0])):
        raise LegacyDetectors(f"{directory}: detectors in the alibi-detect format of cd4ml before its "
                              f"licence change; this server scores no drift or outliers for it")
    if missing:
        raise ValueError(f"{directory}: no {', '.join(missing)}")

    def arrays(name: str) -> io.BytesIO:
        with gfile.GFile(os.path.join(directory, name), "rb") as fh:
            return io.BytesIO(fh.read())

    return Detectors(TabularDrift.load(arrays(DRIFT_FILE)), FastIForest.load(arrays(OUTLIER_FILE)), meta)
