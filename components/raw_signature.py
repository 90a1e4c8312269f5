"""A SavedModel's row signatures (`serving_encoded`, else `serving_raw`), called the fast way.

The server answers through them, and the pipeline's explainer scores thousands of synthetic rows
through them: both call them here. A signature's own __call__ spends more time binding 11 keyword
arguments than TensorFlow spends computing (measured 1.3 ms vs 0.6 ms per row), and building the
11 input tensors costs half of what is left: `serving_encoded` takes one float32 matrix in
features.encode_row's layout (what the detectors and the explainer hold anyway), and the flat call
takes the tensors in the order the concrete function declares. Versions pushed before
`serving_encoded` existed are called through `serving_raw`. Whoever uses these paths checks them
once against `serving_raw`'s __call__ (`agrees_with_signature`) and falls back when they differ.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from cd4ml.contract import ENCODED_SIGNATURE, PREDICTIONS, RAW_SIGNATURE
from components import detector_core, features


class RawSignature:
    def __init__(self, saved_model_dir: str, spec: Sequence[features.Feature] = features.FEATURES):
        self.spec = tuple(spec)
        self._model = tf.saved_model.load(saved_model_dir)  # kept: the signature needs its variables
        self._function = self._model.signatures[RAW_SIGNATURE]
        self._flat_order = _flat_order(self._function, self.spec)
        self._encoded = self._model.signatures.get(ENCODED_SIGNATURE) if hasattr(self._function, "_call_flat") else None

    @property
    def encoded(self) -> bool:
        """Whether rows go through `serving_encoded` (one tensor) rather than `serving_raw`."""
        return self._encoded is not None

    def predict_columns(self, columns: Dict[str, np.ndarray]) -> np.ndarray:
        """One array per feature (same length) -> one prediction per row, through `serving_raw`."""
        if self._flat_order:
            args = [tf.constant(np.asarray(columns[name], dtype=dtype)) for name, dtype in self._flat_order]
            return self._function._call_flat(args, self._function.captured_inputs)[PREDICTIONS].numpy()
        return self._call_signature(columns)

    def predict_rows(self, rows: List[Dict[str, object]]) -> np.ndarray:
        """Validated rows (every value inside its feature's domain) -> one prediction per row."""
        if self._encoded is not None:
            return self.predict_encoded(detector_core.encode(rows, self.spec))
        return self.predict_columns(_columns(rows, self.spec))

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Rows in features.encode_row's numeric layout (the explainer's and detectors' form)."""
        if self._encoded is not None:
            matrix = tf.constant(np.asarray(encoded, dtype=np.float32).reshape(-1, len(self.spec)))
            return self._encoded._call_flat([matrix], self._encoded.captured_inputs)[PREDICTIONS].numpy()
        return self.predict_columns(features.decode_columns(encoded, self.spec))

    def agrees_with_signature(self, encoded: np.ndarray) -> bool:
        """Whether the fast paths answer as `serving_raw`'s __call__ does on these rows (in
        encode_row's layout); a path that does not is never used."""
        columns = features.decode_columns(encoded, self.spec)
        expected = self._call_signature(columns)
        agrees = True
        if self._flat_order and not np.array_equal(self.predict_columns(columns), expected):
            self._flat_order, agrees = [], False
        if self._encoded is not None and not np.array_equal(self.predict_encoded(encoded), expected):
            self._encoded, agrees = None, False
        return agrees

    def _call_signature(self, columns: Dict[str, np.ndarray]) -> np.ndarray:
        inputs = {f.name: np.asarray(columns[f.name], dtype=f.types.numpy) for f in self.spec}
        return self._function(**inputs)[PREDICTIONS].numpy()


def _columns(rows: List[Dict[str, object]], spec: Sequence[features.Feature]) -> Dict[str, list]:
    return {f.name: [r[f.name] for r in rows] for f in spec}


def _flat_order(function, spec) -> List[Tuple[str, str]]:
    """[(feature, numpy dtype)] in the concrete function's parameter order, or [] to use __call__."""
    try:
        names = [p.name for p in function.function_type.parameters.values()]
        function._call_flat  # noqa: B018 - private API of TF 2.16 (pinned); absent -> slow path
    except AttributeError:
        return []
    by_name = {f.name: f for f in spec}
    if sorted(names) != sorted(by_name):
        return []
    return [(name, by_name[name].types.numpy) for name in names]
