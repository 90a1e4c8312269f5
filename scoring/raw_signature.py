"""A SavedModel's row signatures (`serving_encoded`, else `serving_raw`), called the fast way.

The server answers through them, and the pipeline's explainer scores thousands of synthetic rows
through them: both call them here. A signature's own __call__ spends more time binding 11 keyword
arguments than TensorFlow spends computing (measured 1.3 ms vs 0.6 ms per row), and building the
11 input tensors costs half of what is left: `serving_encoded` takes one float32 matrix in
features.encode_row's layout (what the detectors and the explainer hold anyway), and the flat call
takes the tensors in the order the concrete function declares. Versions pushed before
`serving_encoded` existed are called through `serving_raw`. Whoever uses these paths checks them
once against `serving_raw`'s __call__ (`agrees_with_signature`) and falls back when they differ.

The server asks for one more path (`lite=True`): `serving_encoded` converted at load to a
TensorFlow Lite flatbuffer (TensorFlow's own converter and interpreter, builtin float ops only, no
quantization). A request-sized call through TensorFlow's eager runtime costs about 0.3 ms whatever
the model; the interpreter answers one row in about 12 us, and 100 in 50 us, which is what lets
the V2 server stay near a trivial model's latency (benchmarks/serving.py). Its float sums may
round differently, so it is checked against `serving_raw` within LITE_RTOL/LITE_ATOL rather than
bit for bit, and dropped (the TensorFlow path serves) when it differs or does not convert. The
pipeline's explainer keeps TensorFlow: on its batches of thousands of rows the two cost the same.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from cd4ml.contract import ENCODED_INPUT, ENCODED_SIGNATURE, PREDICTIONS, RAW_SIGNATURE
import components.features as features  # the feature list: its one home
from scoring import detector_core

log = logging.getLogger("cd4ml.serving")

# How far the Lite path may be from `serving_raw` (predictions are rentals per hour): float32
# sums in another order differ by about 1e-5 of a rental; a wrong conversion differs by whole ones.
LITE_RTOL, LITE_ATOL = 1e-4, 1e-3


class RawSignature:
    def __init__(self, saved_model_dir: str, spec: Sequence[features.Feature] = features.FEATURES,
                 lite: bool = False):
        """`lite`: also convert `serving_encoded` to TensorFlow Lite and answer through it (the
        server's request-sized calls); without `serving_encoded` there is nothing to convert."""
        self.spec = tuple(spec)
        self._model = tf.saved_model.load(saved_model_dir)  # kept: the signature needs its variables
        self._function = self._model.signatures[RAW_SIGNATURE]
        self._flat_order = _flat_order(self._function, self.spec)
        self._encoded = self._model.signatures.get(ENCODED_SIGNATURE) if hasattr(self._function, "_call_flat") else None
        self._lite = LiteFunction.convert(self._model, self._encoded) if lite and self._encoded is not None else None

    @property
    def encoded(self) -> bool:
        """Whether rows go through `serving_encoded` (one tensor) rather than `serving_raw`."""
        return self._encoded is not None

    @property
    def lite(self) -> bool:
        """Whether rows go through the TensorFlow Lite conversion of `serving_encoded`."""
        return self._lite is not None

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
        if self._lite is not None:
            return self._lite(np.asarray(encoded, dtype=np.float32).reshape(-1, len(self.spec)))
        if self._encoded is not None:
            return self._call_encoded(encoded)
        return self.predict_columns(features.decode_columns(encoded, self.spec))

    def _call_encoded(self, encoded: np.ndarray) -> np.ndarray:
        matrix = tf.constant(np.asarray(encoded, dtype=np.float32).reshape(-1, len(self.spec)))
        return self._encoded._call_flat([matrix], self._encoded.captured_inputs)[PREDICTIONS].numpy()

    def agrees_with_signature(self, encoded: np.ndarray) -> bool:
        """Whether the fast paths answer as `serving_raw`'s __call__ does on these rows (in
        encode_row's layout); a path that does not is never used."""
        columns = features.decode_columns(encoded, self.spec)
        expected = self._call_signature(columns)
        agrees = True
        if self._flat_order and not np.array_equal(self.predict_columns(columns), expected):
            self._flat_order, agrees = [], False
        if self._encoded is not None and not np.array_equal(self._call_encoded(encoded), expected):
            self._encoded, self._lite, agrees = None, None, False
        if self._lite is not None and not np.allclose(self._lite(np.asarray(encoded, dtype=np.float32)), expected,
                                                      rtol=LITE_RTOL, atol=LITE_ATOL):
            log.warning("cd4ml serving: the TensorFlow Lite conversion of %s differs from %s; answering "
                        "through TensorFlow", ENCODED_SIGNATURE, RAW_SIGNATURE)
            self._lite, agrees = None, False
        return agrees

    def _call_signature(self, columns: Dict[str, np.ndarray]) -> np.ndarray:
        inputs = {f.name: np.asarray(columns[f.name], dtype=f.types.numpy) for f in self.spec}
        return self._function(**inputs)[PREDICTIONS].numpy()


class LiteFunction:
    """`serving_encoded` as a TensorFlow Lite flatbuffer, with one interpreter per thread (an
    interpreter is not thread-safe; the Seldon wrapper answers on several threads)."""

    def __init__(self, flatbuffer: bytes):
        self.flatbuffer = flatbuffer
        self._local = threading.local()

    @classmethod
    def convert(cls, model, function) -> Optional["LiteFunction"]:
        """The conversion, or None (logged) when the graph has an op TensorFlow Lite lacks."""
        try:
            converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
            lite = cls(converter.convert())
            lite._interpreter()  # a flatbuffer the interpreter refuses fails here, not on a request
            return lite
        except Exception as err:  # noqa: BLE001 - any failure leaves the TensorFlow path serving
            log.warning("cd4ml serving: %s does not convert to TensorFlow Lite (%s); answering through "
                        "TensorFlow", ENCODED_SIGNATURE, (str(err).splitlines() or [repr(err)])[0][:200])
            return None

    def _interpreter(self):
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            with warnings.catch_warnings():
                # TF 2.18 points at the ai-edge-litert package; tf.lite is the same runtime and
                # stays in the pinned TensorFlow (docs/stack.md).
                warnings.filterwarnings("ignore", message=".*LiteRT interpreter.*", category=UserWarning)
                # Without the default XNNPACK delegate: on request-sized batches the builtin
                # kernels answer sooner (35 vs 44 us for a row, the same for 100).
                interpreter = tf.lite.Interpreter(
                    model_content=self.flatbuffer, num_threads=1,
                    experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            interpreter.allocate_tensors()
            runner = interpreter.get_signature_runner()  # the converted function's named tensors
            self._local.input = runner.get_input_details()[ENCODED_INPUT]["index"]
            self._local.output = runner.get_output_details()[PREDICTIONS]["index"]
            self._local.interpreter, self._local.rows = interpreter, None
        return interpreter

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        interpreter, local = self._interpreter(), self._local
        if local.rows != len(matrix):
            interpreter.resize_tensor_input(local.input, matrix.shape)
            interpreter.allocate_tensors()
            local.rows = len(matrix)
        interpreter.set_tensor(local.input, matrix)
        interpreter.invoke()
        return interpreter.get_tensor(local.output)


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
