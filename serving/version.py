"""One loaded model version: SavedModel (`serving_raw`), its feature specification and detectors.

Loading is all-or-nothing and checked before the version is used: the manifest must list files
that exist, the version's feature specification (features.json) must name the SavedModel's
inputs, the SavedModel must answer, and it must reproduce the predictions recorded in
holdout.jsonl at push time. Requests to this version are validated against its own specification,
so a version trained on another domain is served by the same server. A version pushed before
versions carried one is validated against components/features.py, as it was then. A corrupt or half-copied
version therefore fails here, where the caller can keep the previous one serving.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from cd4ml.contract import DETECTORS_DIR, EXPLAINER_DIR, FEATURES_FILE, HOLDOUT, MANIFEST, SCHEMA_FILE
from components import features
from scoring import detector_core, explain
from scoring.raw_signature import RawSignature

# Holdout rows replayed at load; the relative tolerance covers float32 reductions on another CPU.
CHECK_ROWS = 8
CHECK_RTOL = 1e-3

log = logging.getLogger("cd4ml.serving")


class VersionError(Exception):
    """A version that must not be served, with the reason."""


class LoadedVersion:
    def __init__(self, registry: str, version: str):
        self.version = version
        self.path = os.path.join(registry, version)
        self.manifest = self._manifest()
        self.features: Tuple[features.Feature, ...] = self._features()
        self.feature_names = [f.name for f in self.features]
        self.encoder = features.RowEncoder(self.features)  # checks and encodes this version's requests
        try:
            self._signature = RawSignature(self.path, self.features, lite=True)
        except (KeyError, OSError, ValueError, tf.errors.OpError) as err:
            raise VersionError(f"SavedModel does not load: {str(err).splitlines()[0][:300]}") from err
        self.schema_text = _read(os.path.join(self.path, SCHEMA_FILE))
        self.detectors: Optional[detector_core.Detectors] = self._detectors()
        self.holdout = self._holdout()
        self._self_check()
        self.explainer: Optional[explain.Explainer] = self._explainer()

    def _manifest(self) -> Dict:
        path = os.path.join(self.path, MANIFEST)
        if not tf.io.gfile.exists(path):
            raise VersionError(f"incomplete: no {MANIFEST}")
        try:
            manifest = json.loads(_read(path))
        except ValueError as err:
            raise VersionError(f"{MANIFEST} is not JSON: {err}") from err
        missing = [f for f in manifest.get("files", []) if not tf.io.gfile.exists(os.path.join(self.path, f))]
        if missing:
            raise VersionError(f"files listed in {MANIFEST} are missing: {', '.join(missing)}")
        return manifest

    def _features(self) -> Tuple[features.Feature, ...]:
        path = os.path.join(self.path, FEATURES_FILE)
        if tf.io.gfile.exists(path):
            try:
                spec = features.spec_from_json(json.loads(_read(path)))
            except ValueError as err:
                raise VersionError(f"{FEATURES_FILE}: {err}") from err
        else:
            spec = features.FEATURES
            log.warning("cd4ml serving: version %s ships no %s: validating against this server's "
                        "components/features.py", self.version, FEATURES_FILE)
        if self.manifest.get("features") != [f.name for f in spec]:
            raise VersionError(f"{MANIFEST} says the model was trained on {self.manifest.get('features')}, "
                               f"its feature specification has {[f.name for f in spec]}")
        return spec

    def _detectors(self) -> Optional[detector_core.Detectors]:
        source = os.path.join(self.path, DETECTORS_DIR)
        if not tf.io.gfile.isdir(source):
            log.warning("cd4ml serving: version %s ships no detectors: no outlier scores, no drift", self.version)
            return None
        try:
            return detector_core.load(source, self.feature_names)
        except detector_core.LegacyDetectors as err:
            # Versions pushed before the detectors left alibi-detect must still serve (a rollback
            # target): without outlier scores or drift windows, and said so.
            log.warning("cd4ml serving: version %s: %s", self.version, err)
            return None
        except Exception as err:  # noqa: BLE001 - any failure means the version is unusable
            raise VersionError(f"detectors do not load: {err}") from err

    def _explainer(self) -> Optional[explain.Explainer]:
        """The version's explainer over its own background rows; checked additive on a holdout row."""
        path = os.path.join(self.path, EXPLAINER_DIR, explain.BACKGROUND_FILE)
        if not tf.io.gfile.exists(path):
            log.info("cd4ml serving: version %s ships no explainer: it answers predictions, not "
                     "explanations", self.version)
            return None
        try:
            explainer = explain.Explainer(self._signature.predict_encoded,
                                          explain.background_from_json(_read(path), self.features), self.features)
        except ValueError as err:
            raise VersionError(f"explainer: {err}") from err
        if self.holdout:
            got = explainer.explain(detector_core.encode([self.holdout[0]["features"]], self.features))
            total = got.base_value + sum(got.attributions[0].values())
            if not np.isclose(total, got.predictions[0], rtol=0.01, atol=0.5):
                raise VersionError(f"explainer: base value + attributions = {total:.3f}, the prediction "
                                   f"is {got.predictions[0]:.3f}")
        return explainer

    def importances(self) -> Optional[Dict]:
        """The global importances the pipeline computed for this version (None if it has none)."""
        path = os.path.join(self.path, EXPLAINER_DIR, explain.IMPORTANCES_FILE)
        return json.loads(_read(path)) if tf.io.gfile.exists(path) else None

    def _holdout(self) -> List[Dict]:
        path = os.path.join(self.path, HOLDOUT)
        if not tf.io.gfile.exists(path):
            return []
        return [json.loads(line) for line in _read(path).splitlines() if line.strip()]

    def _self_check(self):
        rows = [r["features"] for r in self.holdout[:CHECK_ROWS]]
        if not rows:
            return
        self._signature.agrees_with_signature(detector_core.encode(rows, self.features))
        got = self.predict(rows)
        want = np.asarray([r["expected"] for r in self.holdout[:CHECK_ROWS]], np.float32)
        if not np.allclose(got, want, rtol=CHECK_RTOL, atol=1e-3):
            raise VersionError(f"predictions on {HOLDOUT} differ from those recorded at push: "
                               f"got {got.tolist()}, expected {want.tolist()}")

    def predict(self, rows: List[Dict[str, object]]) -> np.ndarray:
        return self._signature.predict_rows(rows)

    def predict_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Validated rows already in encode_row's layout (the server encodes once for the model
        and the detectors)."""
        return self._signature.predict_encoded(encoded)


def _read(path: str) -> str:
    with tf.io.gfile.GFile(path) as fh:
        return fh.read()
