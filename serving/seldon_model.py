"""Seldon Core v1 model class around the model service, run by `seldon-core-microservice`:

    seldon-core-microservice serving.seldon_model.BikeDemandModel --http-port 9000

Configured by constructor parameters (SeldonDeployment `parameters`) or CD4ML_* environment
variables: CD4ML_REGISTRY (required), CD4ML_SERVING_VERSION (pin), CD4ML_SERVING_LOG_DIR,
CD4ML_DRIFT_WINDOW, CD4ML_POLL_SECONDS, CD4ML_MAX_ROWS, CD4ML_MAX_REQUEST_BYTES.

Why `predict_raw`: Seldon's default path turns `ndarray` into one numpy array, which casts a row of
mixed ints, floats and strings to strings; validation would then be blind to types. With the raw
request the core sees the JSON values as sent. Bad input answers a Seldon status body with a 4xx
code (the wrapper sets the HTTP status from `status.code`); returning instead of raising keeps the
rejection counter in the response's metrics, which Seldon then publishes. Malformed JSON and
oversized bodies never reach `predict_raw` (Flask fails first), so a blueprint hook answers them.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Dict, List, Optional

from cd4ml.contract import PREDICTIONS
from serving.request import RequestError
from serving.settings import CoreSettings, setting

log = logging.getLogger("cd4ml.serving")

DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
# Custom metrics ride on responses; they are attached at most this often (health probes and
# metrics() drain them too), because each hand-over to Seldon's metrics store costs an IPC round trip.
DEFAULT_METRICS_FLUSH_SECONDS = 1.0
_PREDICT_PATHS = ("/predict", "/api/v1.0/predictions", "/api/v0.1/predictions")
EXPLAIN_PATH = "/api/v1.0/explain"


class BikeDemandModel:
    """Seldon's Python model contract: load, predict_raw, send_feedback_raw, metrics, tags,
    health_status. Heavy work (TensorFlow, the SavedModel) happens in `load()`, which Seldon calls
    in each gunicorn worker after the fork (docs/stack.md: loading in __init__ hangs TF per worker)."""

    def __init__(self, registry: Optional[str] = None, version: Optional[str] = None,
                 log_dir: Optional[str] = None, drift_window=None, poll_seconds=None, max_rows=None,
                 max_request_bytes=None):
        self.settings = CoreSettings.resolve(registry, version, log_dir, drift_window, poll_seconds, max_rows)
        self.max_request_bytes = (setting("CD4ML_MAX_REQUEST_BYTES", max_request_bytes, int)
                                  or DEFAULT_MAX_REQUEST_BYTES)
        self.metrics_flush_seconds = setting("CD4ML_METRICS_FLUSH_SECONDS", None, float)
        if self.metrics_flush_seconds is None:
            self.metrics_flush_seconds = DEFAULT_METRICS_FLUSH_SECONDS
        self._flushed = 0.0
        self.core = None
        # Version swaps and refusals are operational events: keep them above Seldon's log level.
        log.setLevel(logging.INFO)
        self.model_error_handler = self._guard_blueprint()

    def load(self):
        from serving.service import ModelService

        self.core = ModelService(**self.settings.core_kwargs()).load()
        _publish_only_when_given()
        log.info("cd4ml serving: ready, version %s from %s", self.core.version, self.settings.registry)

    # ----- Seldon hooks ----------------------------------------------------------------------
    def predict_raw(self, request: Dict) -> Dict:
        try:
            result = self.core.predict(request)
        except RequestError as err:  # already counted by the core
            body = self._status(err)
            metrics = self._due_metrics()
            if metrics:
                body["meta"]["metrics"] = metrics
            return body
        tags = {"model_version": result.version, "request_id": result.request_id}
        if result.outlier_scores is not None:
            tags["outlier_score"] = result.outlier_scores
            tags["is_outlier"] = result.is_outlier
        meta = {"tags": tags, "requestPath": {"cd4ml-bikes": result.version}}
        metrics = self._due_metrics()
        if metrics:
            meta["metrics"] = metrics
        return {"data": {"names": [PREDICTIONS], "ndarray": result.predictions}, "meta": meta}

    def send_feedback_raw(self, feedback):
        from google.protobuf import json_format
        from seldon_core.utils import json_to_seldon_message

        body = json_format.MessageToDict(feedback)
        response = body.get("response", {})
        tags = response.get("meta", {}).get("tags", {})
        truth = _ndarray(body.get("truth"))
        # Seldon's feedback carries a reward: with truth, the server computes its own from the
        # errors; without, the client's counts (proto3 reads an unset reward as 0.0).
        reward = feedback.reward if truth is None and "truth" not in body else None
        try:
            if truth is None and "truth" in body:
                raise RequestError("field 'truth': expected {'data': {'ndarray': [...]}} with one value "
                                   "per predicted row", rule="truth")
            joined = self.core.feedback(truth, request_id=tags.get("request_id"),
                                        predictions=_ndarray(response), version=tags.get("model_version"),
                                        reward=reward)
        except RequestError as err:
            from seldon_core.flask_utils import SeldonMicroserviceException

            self.core.reject(err)
            raise SeldonMicroserviceException(err.message, status_code=err.status,
                                              reason="MICROSERVICE_BAD_DATA") from err
        # No metrics on this proto answer: proto3 JSON drops zero values, and Seldon then fails
        # on a metric without "value". They reach Prometheus with the next prediction or probe.
        name, value = (("live_mae", joined["live_mae"]) if "live_mae" in joined else
                       ("reward", joined["experiment"]["successes"] / joined["experiment"]["trials"]))
        return json_to_seldon_message({"data": {"names": [name], "ndarray": [value]},
                                       "meta": {"tags": dict(joined)}})

    def health_status(self):
        health = self.core.health() if self.core else {"status": "loading"}
        if health.get("status") != "ok":
            raise RuntimeError("cd4ml serving: no model loaded")
        return health

    def metrics(self) -> List[Dict]:
        return self._metrics()

    def tags(self) -> Dict:
        return {"model_version": self.core.version} if self.core else {}

    def init_metadata(self) -> Dict:
        from components import features

        spec = self.core.current.features if self.core else features.FEATURES
        inputs = [{"name": f.name, "datatype": f.types.v2, "shape": [1]} for f in spec]
        return {"name": "cd4ml-bikes", "versions": [self.core.version] if self.core else [],
                "platform": "tensorflow", "inputs": inputs,
                "outputs": [{"name": PREDICTIONS, "datatype": "FP32", "shape": [1]}]}

    # ----- rejections ------------------------------------------------------------------------
    def _metrics(self) -> List[Dict]:
        self._flushed = time.monotonic()
        return self.core.metrics() if self.core else []

    def _due_metrics(self) -> List[Dict]:
        """Pending metrics, at most once per flush interval (see `_publish_only_when_given`)."""
        if time.monotonic() - self._flushed < self.metrics_flush_seconds:
            return []
        return self._metrics()

    def _guard_blueprint(self):
        """Answers bodies that are too large or not JSON before Seldon's parser turns them into a
        generic error; they are counted as rejections and reported with the next metrics."""
        from flask import Blueprint, jsonify, request

        guard = Blueprint("cd4ml_guard", __name__)

        @guard.before_app_request
        def _check_body():
            if request.method != "POST" or request.path not in (*_PREDICT_PATHS, EXPLAIN_PATH):
                return None
            err = None
            size = request.content_length
            if size is not None and size > self.max_request_bytes:
                err = RequestError(f"request body: {size} bytes is more than the limit of "
                                   f"{self.max_request_bytes}", status=413, rule="too_large")
            elif not request.form.get("json") and not request.args.get("json"):
                raw = request.get_data(cache=True)
                try:
                    json.loads(raw)
                except ValueError as exc:
                    err = RequestError(f"request body: malformed JSON ({exc})", rule="malformed")
            if err is None:
                return None
            if self.core:
                self.core.reject(err)
            response = jsonify(self._status(err))
            response.status_code = err.status
            return response

        @guard.route(EXPLAIN_PATH, methods=["POST"])
        def _explain():
            """Attributions of each raw feature to the served version's predictions (the predictions'
            body; scoring/explain.py). Not a Seldon method: Seldon v1 sends explanations to a
            separate explainer server, which would need its own copy of the model."""
            try:  # size and JSON were checked by _check_body, as for predictions
                if self.core is None:
                    raise RequestError("the model is still loading", status=503, rule="loading")
                try:
                    body = json.loads(request.get_data(cache=True))
                except ValueError as exc:  # a form body (json=...), which explain does not take
                    raise RequestError(f"request body: expected a JSON body ({exc})", rule="malformed") from None
                explained = self.core.explain(body)
            except RequestError as err:
                response = jsonify(self._status(err))
                response.status_code = err.status
                return response
            return jsonify({"explanation": explained.explanation.to_json(),
                            "meta": {"tags": {"model_version": explained.version}}})

        return guard

    def _status(self, err: RequestError) -> Dict:
        return {"status": {"code": err.status, "info": err.message, "reason": "MICROSERVICE_BAD_DATA",
                           "status": "FAILURE"},
                "meta": {"tags": {"model_version": self.core.version if self.core else None, "rule": err.rule}}}


def _ndarray(message) -> Optional[List]:
    if not isinstance(message, dict):
        return None
    data = message.get("data") or message.get("jsonData")
    if isinstance(data, dict) and isinstance(data.get("ndarray"), list):
        values = data["ndarray"]
        return [v[0] if isinstance(v, list) and len(v) == 1 else v for v in values]
    return None


def _publish_only_when_given():
    """Make Seldon skip its metrics store when a raw response carries no metrics.

    seldon-core 1.18.2 calls `SeldonMetrics.update` after every `predict_raw`, even with nothing
    to record, and each call pickles the worker's whole metrics dict to the multiprocessing
    manager and back (0.3 ms and more as histograms grow): measured, it dominated our overhead
    over a trivial model. Metrics are batched per flush interval instead, so most responses carry
    none and skip the round trip. Patched at its module-level name, which `predict` looks up per
    call; the original is kept and used whenever there are metrics.
    """
    from seldon_core import seldon_methods

    original = seldon_methods.handle_raw_custom_metrics
    if getattr(original, "_cd4ml", False):
        return

    def handle_raw_custom_metrics(msg, seldon_metrics, is_proto, method):
        if isinstance(msg, dict) and not msg.get("meta", {}).get("metrics"):
            return None
        return original(msg, seldon_metrics, is_proto, method)

    handle_raw_custom_metrics._cd4ml = True
    seldon_methods.handle_raw_custom_metrics = handle_raw_custom_metrics
