"""Additive explanations of a prediction over the raw features a client sends.

Method (decided): exact interventional Shapley values of the model against a small background of
training rows: for each row, feature i gets its weighted average marginal effect over all 2^11
coalitions S of the features, where a feature outside S takes each background row's value and
the coalition's value is the mean prediction over the background. That makes an explanation

- additive by construction: base value (the mean prediction over the background) + the sum of
  the attributions = the model's prediction for the row (Shapley efficiency);
- exact, not sampled: the same row gets the same numbers on every server and every run, which an
  audit needs (SHAP's Permutation and Kernel explainers sample);
- over the raw features, categories included: the model is called through its raw signature on
  features.encode_row's numeric layout (a category is its vocabulary index), so no gradient of a
  string input is needed (which rules out integrated gradients here).

It is what SHAP's `Exact` explainer with an `Independent` masker computes (SHAP is MIT; alibi is
BSL-licensed and pins an older TensorFlow). We tried SHAP first and measured: its numba kernels
compile on the first call of every process, 6.3 s before the first explanation (each pipeline
run, each CLI call, each server worker; the outlier forest's one small numba loop compiles in
0.3 s). With 11 features the exact sum is one batch of 2^11 x background rows through the model
and one matrix product, so it is done here in numpy (tests/test_explain.py checks it against the
closed form of a linear model and against the permutation definition).

The background is chosen in the pipeline (components/explainer.py) from the span's training rows
and shipped inside the version (contract.EXPLAINER_DIR), with the global importances the pipeline
computed on the eval rows and the explainability check's verdict. The server needs nothing else.
"""

import dataclasses
import json
import math
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

import components.features as features  # the feature list: its one home

BACKGROUND_FILE = "background.json"
IMPORTANCES_FILE = "importances.json"
# Background rows: the base value is their mean prediction; explaining a row scores 2^11 times
# this many rows (benchmarks/explain.py measures one row against the 50 ms target).
BACKGROUND_ROWS = 32
# Eval rows the global importances average over.
IMPORTANCE_ROWS = 64
# Rows whose coalitions go through the model in one call (2^11 x 32 x 4 = 262,144 rows).
ROWS_PER_BATCH = 4
@dataclasses.dataclass
class Explanation:
    base_value: float
    predictions: List[float]
    attributions: List[Dict[str, float]]  # per row: feature -> contribution

    def to_json(self) -> Dict[str, object]:
        return {"base_value": self.base_value,
                "rows": [{"prediction": p, "attributions": a} for p, a in zip(self.predictions, self.attributions)]}


class Explainer:
    """Explains rows of one model: `predict_encoded` scores rows in encode_row's layout."""

    def __init__(self, predict_encoded: Callable[[np.ndarray], np.ndarray], background: np.ndarray,
                 spec: Sequence[features.Feature] = features.FEATURES):
        self.spec = tuple(spec)
        self.background = np.asarray(background, dtype=np.float32)
        if self.background.ndim != 2 or self.background.shape[1] != len(self.spec) or not len(self.background):
            raise ValueError(f"explainer background: expected rows of {len(self.spec)} features, "
                             f"got shape {self.background.shape}")
        self._predict = predict_encoded
        self._masks, self._weights = coalitions(len(self.spec))

    def explain(self, encoded: np.ndarray) -> Explanation:
        encoded = np.asarray(encoded, dtype=np.float32).reshape(-1, len(self.spec))
        names = [f.name for f in self.spec]
        base, predictions, attributions = None, [], []
        for start in range(0, len(encoded), ROWS_PER_BATCH):
            values = self._coalition_values(encoded[start:start + ROWS_PER_BATCH])  # (rows, 2^M)
            phi = values @ self._weights.T                                          # (rows, M)
            base = float(values[0, 0])          # the empty coalition: the background's mean
            predictions.extend(float(v) for v in values[:, -1])                     # the full one
            attributions.extend(dict(zip(names, map(float, row))) for row in phi)
        return Explanation(base_value=base, predictions=predictions, attributions=attributions)

    def _coalition_values(self, rows: np.ndarray) -> np.ndarray:
        masks, bg = self._masks, self.background
        # (rows, 2^M, B, M): feature j from the row where the coalition holds it, else background.
        synthetic = np.where(masks[None, :, None, :], rows[:, None, None, :], bg[None, None, :, :])
        scores = np.asarray(self._predict(synthetic.reshape(-1, len(self.spec))), np.float64)
        return scores.reshape(len(rows), len(masks), len(bg)).mean(axis=2)


def coalitions(m: int):
    """Every coalition of m features as a boolean mask (2^m, m), the last one full, and the Shapley
    weight matrix W (m, 2^m) with phi = W @ v: +|S|-1 weight where i is in S, -|S| where not."""
    index = np.arange(2 ** m)
    masks = ((index[:, None] >> np.arange(m)) & 1).astype(bool)
    size = masks.sum(axis=1)
    weight = np.array([math.factorial(s) * math.factorial(m - s - 1) / math.factorial(m) for s in range(m)])
    with_i = weight[np.clip(size - 1, 0, m - 1)]
    without_i = weight[np.clip(size, 0, m - 1)]
    weights = np.where(masks.T, with_i[None, :], -without_i[None, :])
    return masks, weights


def importances(explanation: Explanation) -> Dict[str, object]:
    """Global importances: each feature's mean |attribution| over the rows, and its share of the
    total (the shares sum to 1)."""
    names = list(explanation.attributions[0]) if explanation.attributions else []
    matrix = np.abs(np.asarray([[row[n] for n in names] for row in explanation.attributions]))
    mean_abs = matrix.mean(axis=0) if len(matrix) else np.zeros(len(names))
    total = float(mean_abs.sum()) or 1.0
    return {"rows": len(matrix), "base_value": explanation.base_value,
            "mean_abs": dict(zip(names, map(float, mean_abs))),
            "share": {n: float(v) / total for n, v in zip(names, mean_abs)}}


# --- the explainability check (a gate before the push, like the data and evaluation gates) -------

@dataclasses.dataclass(frozen=True)
class ExplainabilityRules:
    """What the model's global attributions must satisfy before it may be pushed.

    forbidden: columns that must carry no attribution (the leak columns by default: a model that
    uses them would score perfectly offline and fail in production, where they are unknown).
    max_share: no single feature may carry more than this share of the total attribution.
    The defaults are the pipeline configuration's (CD4ML_EXPLAIN_FORBIDDEN, CD4ML_EXPLAIN_MAX_SHARE).
    """

    forbidden: tuple
    max_share: float

    def __post_init__(self):
        known = set(features.SCHEMA_COLUMNS)
        unknown = [n for n in self.forbidden if n not in known]
        if unknown:
            raise ValueError(f"explainability rule 'forbidden': unknown column(s) {unknown} "
                             f"(known: {sorted(known)})")
        if not 0 < self.max_share <= 1:
            raise ValueError(f"explainability rule 'max_share': must be in (0, 1], got {self.max_share}")

    def to_json(self) -> str:
        return json.dumps({"forbidden": list(self.forbidden), "max_share": self.max_share}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ExplainabilityRules":
        data = json.loads(text or "{}")
        return cls(**{k: tuple(v) if k == "forbidden" else v for k, v in data.items()})


# A share at or under this is "no attribution" (float noise of a feature the model ignores).
NO_ATTRIBUTION = 1e-6


def check(importance: Dict[str, object], rules: ExplainabilityRules) -> List[str]:
    """The violations of the rules, each naming the feature and the rule ([] when the model passes)."""
    share: Dict[str, float] = importance["share"]
    problems = []
    for name in rules.forbidden:
        if share.get(name, 0.0) > NO_ATTRIBUTION:
            problems.append(f"feature '{name}' is forbidden (rule 'forbidden') but carries "
                            f"{share[name]:.1%} of the attribution")
    for name, value in sorted(share.items(), key=lambda kv: -kv[1]):
        if value > rules.max_share:
            problems.append(f"feature '{name}' carries {value:.1%} of the attribution, more than the "
                            f"{rules.max_share:.0%} one feature may carry (rule 'max_share')")
    return problems


# --- what a version ships (contract.EXPLAINER_DIR) ------------------------------------------------

def save(directory: str, background: np.ndarray, importance: Dict[str, object], write: Callable[[str, str], None],
         extra: Optional[Dict] = None):
    """background.json (the rows, in encode_row's layout, with the feature names) and
    importances.json, each written by `write(path, text)`."""
    names = [f.name for f in features.FEATURES]
    write(os.path.join(directory, BACKGROUND_FILE),
          json.dumps({"features": names, "encoding": "features.encode_row",
                      "rows": np.asarray(background).tolist()}))
    write(os.path.join(directory, IMPORTANCES_FILE), json.dumps(dict(importance, **(extra or {})),
                                                               indent=2, sort_keys=True))


def background_from_json(text: str, spec: Sequence[features.Feature]) -> np.ndarray:
    data = json.loads(text)
    names = [f.name for f in spec]
    if data.get("features") != names:
        raise ValueError(f"{BACKGROUND_FILE}: rows are over {data.get('features')}, the version's "
                         f"features are {names}")
    rows = np.asarray(data.get("rows"), dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(names) or not len(rows):
        raise ValueError(f"{BACKGROUND_FILE}: expected a non-empty list of rows of {len(names)} numbers")
    for i, f in enumerate(spec):
        if f.is_categorical and not np.isin(rows[:, i], np.arange(len(f.vocabulary))).all():
            raise ValueError(f"{BACKGROUND_FILE}: column '{f.name}' holds values that are no vocabulary index")
    return rows
