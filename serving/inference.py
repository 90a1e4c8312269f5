"""The request path: one request's stages, as KServe's model.py runs them, taking no lock.

    route      the snapshot's served version, or an experiment's arm (serving/repository.py)
    decode     the protocol's codec turns the body into rows (serving/request.py: seldon_batch
               for a Seldon v1 body, v2_batch for the Open Inference Protocol's inputs)
    check      the answering version's own feature specification checks and encodes them
    predict    the loaded version answers
    score      its detectors give each row an outlier score

What the answer does not need (the shadow's prediction, metrics, the feedback memory, the drift
window and the log line) goes to the telemetry sink afterwards: at once, or handed to `defer`,
which an asyncio server passes as its loop's call_soon. That loop runs it right after the answer
is written and before it reads another request, so a feedback for this answer, a drift test and a
scrape all see it (benchmarks/serving.py: a fifth of our time per request).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

import numpy as np

from scoring import explain
from serving.bandit import Experiment
from serving.feedback import FeedbackDesk, Remembered
from serving.logs import now
from serving.request import DEFAULT_MAX_ROWS, Batch, RequestError, seldon_batch
from serving.version import LoadedVersion

log = logging.getLogger("cd4ml.serving")

# Rows per explain request, at most: each costs 2^11 x the background rows through the model.
EXPLAIN_MAX_ROWS = 100


@dataclass
class Prediction:
    version: str
    request_id: str
    predictions: List[float]
    outlier_scores: Optional[List[float]]
    is_outlier: Optional[List[bool]]
    latency_ms: float
    experiment: Optional[str] = None   # the experiment that routed the request to `version`


@dataclass
class Explained:
    version: str
    explanation: "explain.Explanation"
    latency_ms: float


class RequestPath:
    def __init__(self, repository, telemetry, desk: FeedbackDesk, max_rows: int = DEFAULT_MAX_ROWS):
        self.repository, self.telemetry, self.desk, self.max_rows = repository, telemetry, desk, max_rows
        self._rng = np.random.default_rng()  # numpy's generators lock themselves: safe from any thread

    def predict(self, payload, reader=seldon_batch, defer: Optional[Callable[[Callable[[], None]], object]] = None
                ) -> Prediction:
        started = time.perf_counter()
        snapshot = self.repository.snapshot  # one value for the whole request: a reload cannot touch it
        model, experiment = snapshot.route(self._rng)
        try:
            batch = reader(payload, self.max_rows, model.encoder)
        except RequestError as err:
            self.reject(err, model.version, experiment)
            raise
        encoded = batch.encoded  # one layout for the model and the detectors
        try:
            predictions = model.predict_encoded(encoded)
        except Exception:
            self.telemetry.rejected(model.version, 500, "prediction_failed", experiment and experiment.id)
            raise
        scores = flags = None
        if model.detectors is not None:
            score_array = model.detectors.outlier_scores(encoded)
            flags = (score_array > model.detectors.threshold).tolist()
            scores = score_array.tolist()
        # 128 random bits in hex, as uuid4().hex gives, without the UUID object (a tenth of the cost).
        answer = Prediction(model.version, os.urandom(16).hex(), predictions.tolist(), scores, flags,
                            (time.perf_counter() - started) * 1e3, experiment.id if experiment else None)
        if defer is None:
            self._account(answer, snapshot, model, batch)
        else:
            defer(functools.partial(self._account_deferred, answer, snapshot, model, batch))
        return answer

    def _account_deferred(self, *args):
        try:
            self._account(*args)
        except Exception:  # noqa: BLE001 - the client has its answer; say loudly what was not recorded
            log.exception("cd4ml serving: an answered request was not recorded (metrics, feedback memory, "
                          "drift window or prediction log)")

    def _account(self, answer: Prediction, snapshot, model: LoadedVersion, batch: Batch):
        """Everything an answered request leaves behind: predict() runs it, or defers it."""
        shadow, shadow_values = snapshot.shadow, None
        if shadow is not None:  # after the answer: the challenger costs the client nothing
            shadow_values = shadow.predict(batch.rows).tolist()
        self.desk.remember(answer.request_id, Remembered(
            model.version, answer.predictions, (shadow.version, shadow_values) if shadow is not None else None,
            answer.experiment))
        record = {"ts": now(), "request_id": answer.request_id, "version": model.version, "rows": batch.rows,
                  "predictions": answer.predictions, "outlier_scores": answer.outlier_scores,
                  "outliers": sum(answer.is_outlier or ()), "latency_ms": round(answer.latency_ms, 3)}
        if batch.event_times:
            record["event_times"] = batch.event_times
        if answer.experiment:
            record["experiment"] = answer.experiment
        if shadow is not None:
            record.update(shadow_version=shadow.version, shadow_predictions=shadow_values)
        self.telemetry.answered(record, model, batch.encoded, is_current=model is self.repository.snapshot.current,
                                shadow_version=shadow.version if shadow is not None else None)

    def explain(self, payload, reader=seldon_batch) -> Explained:
        """Additive attributions of the served version's predictions to each raw feature.

        Same body and validation as predict (against the served version's own features); a version
        pushed without an explainer answers 409 naming it, and keeps serving predictions."""
        started = time.perf_counter()
        model = self.repository.snapshot.current
        try:
            batch = reader(payload, min(self.max_rows, EXPLAIN_MAX_ROWS), model.encoder)
            if model.explainer is None:
                raise RequestError(f"version {model.version} ships no explainer (it was pushed before "
                                   f"versions carried one): it serves predictions only; push a new "
                                   f"version to explain", status=409, rule="no_explainer")
        except RequestError as err:
            self.reject(err, model.version)
            raise
        result = model.explainer.explain(batch.encoded)
        latency_ms = (time.perf_counter() - started) * 1e3
        self.telemetry.explained(model.version, len(batch), latency_ms)
        return Explained(model.version, result, latency_ms)

    def reject(self, err: RequestError, version: Optional[str] = None, experiment: Optional[Experiment] = None):
        snapshot = self.repository.snapshot
        version = version or (snapshot.current.version if snapshot else "none")
        log.info("cd4ml serving: rejected request (%s): %s", err.rule, err.message)
        self.telemetry.rejected(version, err.status, err.rule, experiment.id if experiment else None)
