"""The serving core: validate, score, flag outliers, watch drift, log, learn from feedback.

Independent of any web framework (the Seldon wrapper is a thin shell around it, and an
Open-Inference-Protocol runtime could be another), so it runs and is tested in the pipeline
environment as well as in the serving one.

Model as data: a poller thread watches the registry and swaps in a newly pushed (or newly pinned)
version once it has loaded and passed its self-check. A request takes one reference to the current
version at its start and uses it to the end, so a swap never fails or mixes an in-flight request;
a version that fails to load is refused with a log line and the previous one keeps serving.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from cd4ml.contract import DRIFT_LOG, ERRORS_LOG, FEEDBACK_LOG, PREDICTIONS_LOG, default_log_dir
from cd4ml.logstore import read_records
from components import detector_core, explain
from components import registry as reg
from serving.bandit import Counts, Experiment, read_experiment
from serving.logs import now, open_log
from serving.request import DEFAULT_MAX_ROWS, Batch, RequestError, seldon_batch
from serving.version import LoadedVersion, VersionError

log = logging.getLogger("cd4ml.serving")

# Rows per drift test. Hours of one day share their weather, so KS over hourly rows is
# over-sensitive on large windows (docs/stack.md): measured on span 1 (fitted on even days, 20 random
# windows of odd days) 200 rows gave 0 false alarms and 20/20 detections on span 2; 500 gave 2.
DEFAULT_DRIFT_WINDOW = 200
DEFAULT_POLL_SECONDS = 5.0
# The control files (pin, shadow, experiment, rollout: contract.CONTROL_FILES) are looked at this
# often, so that a rollback or a canary's end reaches every replica within a second.
CONTROL_POLL_SECONDS = 0.25
# Predictions kept in memory for joining feedback by request id (rows, not requests); older ones,
# and those another worker answered, are looked up in the shared prediction log.
FEEDBACK_MEMORY_ROWS = 100_000


@dataclass
class Explained:
    version: str
    explanation: "explain.Explanation"
    latency_ms: float


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
class Remembered:
    """What feedback joins to: who answered a request, with what, and how it was routed."""
    version: str
    predictions: List[float]
    shadow: Optional[Tuple[str, List[float]]] = None
    experiment: Optional[str] = None


@dataclass
class _Counters:
    """Metric increments not yet handed to the metrics backend (Seldon takes deltas per response).

    Timings wait here one per request until a scrape drains them; with nobody scraping they grew
    without bound (some 200 bytes a request: the server's memory rose for hours under load). At
    most `max_timers` wait; older ones are dropped and counted (cd4ml_timings_dropped_total)."""
    counts: Dict[Tuple[str, Tuple], float] = field(default_factory=dict)
    gauges: Dict[Tuple[str, Tuple], float] = field(default_factory=dict)
    timers: List[Tuple[str, float, Tuple]] = field(default_factory=list)
    max_timers: int = 20_000

    def add(self, key: str, value: float = 1.0, **tags):
        k = (key, tuple(sorted(tags.items())))
        self.counts[k] = self.counts.get(k, 0.0) + value

    def set(self, key: str, value: float, **tags):
        self.gauges[(key, tuple(sorted(tags.items())))] = value

    def observe(self, key: str, milliseconds: float, **tags):
        self.timers.append((key, milliseconds, tuple(sorted(tags.items()))))
        if len(self.timers) > self.max_timers:
            dropped = len(self.timers) - self.max_timers // 2
            del self.timers[:dropped]  # amortised: one cut per max_timers / 2 observations
            self.add("cd4ml_timings_dropped_total", dropped)

    def drain(self) -> List[Dict]:
        out = [{"type": "TIMER", "key": k, "value": v, "tags": dict(t)} for k, v, t in self.timers]
        out += [{"type": "COUNTER", "key": k, "value": v, "tags": dict(t)} for (k, t), v in self.counts.items()]
        out += [{"type": "GAUGE", "key": k, "value": v, "tags": dict(t)} for (k, t), v in self.gauges.items()]
        self.counts, self.gauges, self.timers = {}, {}, []
        return out


class ServingCore:
    def __init__(self, registry: str, version: Optional[str] = None, log_dir: Optional[str] = None,
                 drift_window: int = DEFAULT_DRIFT_WINDOW, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 max_rows: int = DEFAULT_MAX_ROWS, log_max_bytes: Optional[int] = None,
                 log_flush_seconds: Optional[float] = None):
        self.registry = registry
        self.pinned = version
        self.log_dir = log_dir or default_log_dir(registry)
        self.drift_window = drift_window
        self.poll_seconds = poll_seconds
        self.max_rows = max_rows
        self._log_options = {"max_bytes": log_max_bytes, "flush_seconds": log_flush_seconds}
        self._current: Optional[LoadedVersion] = None
        self._shadow: Optional[LoadedVersion] = None
        self._since = ""
        self._lock = threading.Lock()
        self._metrics = _Counters()
        self._window: List[np.ndarray] = []
        self._window_rows = 0
        self._drift_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cd4ml-drift")
        self._drift_futures: List[concurrent.futures.Future] = []
        self.last_drift: Optional[Dict] = None
        self.refused: Dict[str, str] = {}
        self._refused_stamp: Dict[str, object] = {}
        self._memory: "collections.OrderedDict[str, Remembered]" = collections.OrderedDict()
        self._experiment: Optional[Experiment] = None
        self._arms: Dict[str, LoadedVersion] = {}
        self._counts: Optional[Counts] = None
        self._rng = np.random.default_rng()
        self._memory_rows = 0
        self._mae: Dict[str, List[float]] = {}
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None
        self._control = None
        self._warm: Dict[str, LoadedVersion] = {}  # the version replaced last: a rollback to it is instant
        self.predictions_log = self.feedback_log = self.drift_log = self.errors_log = None

    # ----- lifecycle -------------------------------------------------------------------------
    def load(self, poll: bool = True) -> "ServingCore":
        """Load the version to serve (or the newest one that loads) and start watching the registry."""
        self.predictions_log, self.feedback_log, self.drift_log, self.errors_log = (
            open_log(self.log_dir, name, **self._log_options)
            for name in (PREDICTIONS_LOG, FEEDBACK_LOG, DRIFT_LOG, ERRORS_LOG))
        self._control = reg.control_stamp(self.registry)
        wanted, why = reg.target(self.registry, self.pinned)
        candidates = [wanted] if wanted else []
        if not self.pinned:
            candidates += [v for v in reversed(reg.servable_versions(self.registry)) if v != wanted]
        for version in candidates:
            if self._try_load(version, why if version == wanted else "newest complete version that loads"):
                break
        if self._current is None:
            reasons = "; ".join(f"{v}: {r}" for v, r in self.refused.items()) or why
            raise VersionError(f"nothing to serve from {self.registry} ({reasons})")
        self.refresh_shadow()
        self.refresh_experiment()
        if poll and self.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="cd4ml-registry-poller", daemon=True)
            self._poller.start()
        return self

    def close(self):
        self._stop.set()
        self._drift_pool.shutdown(wait=True)
        for handle in (self.predictions_log, self.feedback_log, self.drift_log, self.errors_log):
            if handle:
                handle.close()

    @property
    def version(self) -> str:
        return self._current.version

    @property
    def current(self) -> LoadedVersion:
        return self._current

    def _poll(self):
        """The whole registry every poll_seconds; the control files every CONTROL_POLL_SECONDS,
        re-reading the registry at once when one of them changed."""
        last = time.monotonic()
        while not self._stop.wait(min(CONTROL_POLL_SECONDS, self.poll_seconds)):
            try:
                stamp = reg.control_stamp(self.registry)
                if stamp != self._control or time.monotonic() - last >= self.poll_seconds:
                    self._control, last = stamp, time.monotonic()
                    self.refresh()
            except Exception:  # noqa: BLE001 - the poller must outlive a flaky registry
                log.exception("cd4ml serving: registry poll failed; still serving %s", self.version)

    def refresh(self) -> bool:
        """One look at the registry; True when another version now serves."""
        self.refresh_shadow()
        self.refresh_experiment()
        wanted, why = reg.target(self.registry, self.pinned)
        if not wanted or wanted == self.version:
            return False
        if not reg.is_complete(self.registry, wanted):
            if self.refused.get(wanted) != "incomplete":
                log.warning("cd4ml serving: version %s (%s) is incomplete (no %s yet); still serving %s",
                            wanted, why, reg.MANIFEST, self.version)
                self.refused[wanted] = "incomplete"
            return False
        stamp = tf.io.gfile.stat(os.path.join(self.registry, wanted, reg.MANIFEST)).mtime_nsec
        if self._refused_stamp.get(wanted) == stamp:
            return False  # refused before and unchanged since: do not reload it every poll
        return self._try_load(wanted, why, stamp)

    @property
    def shadow_version(self) -> Optional[str]:
        return self._shadow.version if self._shadow else None

    def refresh_shadow(self):
        """Follow SHADOW.json: load, swap or drop the challenger. A challenger that fails to load
        is logged and skipped; it can never affect the answers."""
        wanted = reg.read_shadow(self.registry)
        if wanted == self.shadow_version:
            return
        if wanted is None:
            log.info("cd4ml serving: shadow %s stopped", self.shadow_version)
            self._shadow = None
            return
        try:
            self._shadow = LoadedVersion(self.registry, wanted)
            log.info("cd4ml serving: shadow version %s scores beside %s", wanted, self.version)
        except Exception as err:  # noqa: BLE001 - a bad challenger must not touch the champion
            if self.refused.get(wanted) != str(err):
                log.error("cd4ml serving: REFUSED shadow version %s: %s", wanted, err)
            self.refused[wanted] = str(err)
            self._shadow = None

    # ----- experiments ----------------------------------------------------------------------
    @property
    def experiment(self) -> Optional[Experiment]:
        return self._experiment

    def refresh_experiment(self):
        """Follow EXPERIMENT.json: load its arms, and re-read its evidence from the feedback log
        (every worker's, so all route on the same counts). An arm that fails to load ends
        nothing: the experiment is not run, and the served version answers alone."""
        wanted = read_experiment(self.registry)
        if wanted is None:
            if self._experiment is not None:
                log.info("cd4ml serving: experiment %s is over; %s answers alone", self._experiment.id, self.version)
            with self._lock:
                self._experiment, self._arms, self._counts = None, {}, None
            return
        if self._experiment is None or wanted != self._experiment:
            try:
                arms = {v: (self._current if self._current and v == self._current.version
                            else self._arms.get(v) or LoadedVersion(self.registry, v)) for v in wanted.arms}
            except Exception as err:  # noqa: BLE001 - a bad arm must not touch the served version
                if self.refused.get(wanted.id) != str(err):
                    log.error("cd4ml serving: REFUSED experiment %s: %s", wanted.id, err)
                self.refused[wanted.id] = str(err)
                with self._lock:
                    self._experiment, self._arms, self._counts = None, {}, None
                return
            log.info("cd4ml serving: experiment %s routes between %s (%s)", wanted.id, ", ".join(wanted.arms),
                     wanted.strategy)
        else:
            arms = self._arms
        counts = Counts.from_feedback(wanted, read_records(self.log_dir, FEEDBACK_LOG))
        with self._lock:  # the experiment, its arms and its counts change together
            self._experiment, self._arms, self._counts = wanted, arms, counts

    def experiment_status(self) -> Optional[Dict]:
        with self._lock:
            exp, counts = self._experiment, self._counts
        if exp is None:
            return None
        return {"id": exp.id, "strategy": exp.strategy,
                "arms": {n: asdict(a) for n, a in counts.arms.items()}}

    def _try_load(self, version: str, why: str, stamp=None) -> bool:
        previous = self._current.version if self._current else None
        started = time.perf_counter()
        try:
            loaded = self._warm.pop(version, None) or LoadedVersion(self.registry, version)
        except Exception as err:  # noqa: BLE001 - any failure refuses the version, never the server
            self.refused[version] = str(err)
            self._refused_stamp[version] = stamp
            log.error("cd4ml serving: REFUSED version %s (%s): %s; %s", version, why, err,
                      f"still serving {previous}" if previous else "not serving yet")
            with self._lock:
                self._metrics.add("cd4ml_versions_refused_total", version=version)
            return False
        with self._lock:
            if self._current is not None:
                self._warm = {self._current.version: self._current}
            self._current = loaded  # the swap: one reference assignment
            self._since = now()
            self._window, self._window_rows = [], 0  # a window is tested against its own detectors
            self._metrics.add("cd4ml_version_loads_total", version=version)
        self.refused.pop(version, None)
        log.info("cd4ml serving: now serving version %s (%s) after %.1f s of loading%s", version, why,
                 time.perf_counter() - started, f", was {previous}" if previous else "")
        return True

    # ----- requests --------------------------------------------------------------------------
    def predict(self, payload, reader=seldon_batch, defer: Optional[Callable[[Callable[[], None]], object]] = None
                ) -> Prediction:
        """Answer a request body; `reader` turns it into a request.Batch checked against the
        answering version's features (request.seldon_batch for a Seldon v1 body, the default;
        request.v2_batch for the Open Inference Protocol's inputs).

        What the answer does not need (the shadow's prediction, metrics, the feedback memory, the
        drift window and the prediction log line) runs after it: at once, or handed to `defer`,
        which an asyncio server passes as its loop's call_soon. That loop runs it right after the
        answer is written and before it reads another request, so a feedback for this answer, a
        drift test and a scrape all see it (benchmarks/serving.py: a fifth of our time per request)."""
        started = time.perf_counter()
        model, experiment = self._route()  # one reference for the whole request: reloads cannot touch it
        try:
            batch = reader(payload, self.max_rows, model.encoder)
        except RequestError as err:
            self.reject(err, model.version, experiment)
            raise
        encoded = batch.encoded  # one layout for the model and the detectors
        try:
            predictions = model.predict_encoded(encoded)
        except Exception:
            self._log_error(model.version, experiment, 500, "prediction_failed")
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
            self._account(answer, model, batch)
        else:
            defer(functools.partial(self._account_deferred, answer, model, batch))
        return answer

    def _account_deferred(self, *args):
        try:
            self._account(*args)
        except Exception:  # noqa: BLE001 - the client has its answer; say loudly what was not recorded
            log.exception("cd4ml serving: an answered request was not recorded (metrics, feedback memory, "
                          "drift window or prediction log)")

    def _account(self, answer: Prediction, model: LoadedVersion, batch: Batch):
        """Everything an answered request leaves behind: predict() runs it, or defers it."""
        rows, encoded, event_times = batch.rows, batch.encoded, batch.event_times
        request_id, values, routed, version = answer.request_id, answer.predictions, answer.experiment, model.version
        shadow, shadow_values = self._shadow, None
        if shadow is not None:  # after the answer: the challenger costs the client nothing
            shadow_values = shadow.predict(rows).tolist()
        with self._lock:
            m = self._metrics
            m.add("cd4ml_requests_total", version=version)
            m.add("cd4ml_rows_total", len(rows), version=version)
            # Seldon TIMERs take milliseconds and publish a histogram in seconds.
            m.observe("cd4ml_request_duration_seconds", answer.latency_ms, version=version)
            if answer.is_outlier:
                m.add("cd4ml_outliers_total", sum(answer.is_outlier), version=version)
            self._remember(request_id, Remembered(version, values,
                                                  (shadow.version, shadow_values) if shadow is not None else None,
                                                  routed))
            if routed:
                m.add("cd4ml_experiment_rows_total", len(rows), version=version, experiment=routed)
            if shadow is not None:
                m.add("cd4ml_shadow_rows_total", len(rows), version=shadow.version)
            if model.detectors is not None and model is self._current:
                self._feed_window(model, encoded)
        record = {"ts": now(), "request_id": request_id, "version": version, "rows": rows, "predictions": values,
                  "outlier_scores": answer.outlier_scores, "outliers": sum(answer.is_outlier or ()),
                  "latency_ms": round(answer.latency_ms, 3)}
        if event_times:
            record["event_times"] = event_times
        if routed:
            record["experiment"] = routed
        if shadow is not None:
            record.update(shadow_version=shadow.version, shadow_predictions=shadow_values)
        self.predictions_log.write(record)

    def explain(self, payload, reader=seldon_batch) -> Explained:
        """Additive attributions of the served version's predictions to each raw feature.

        Same body and validation as predict (against the served version's own features); a version
        pushed without an explainer answers 409 naming it, and keeps serving predictions."""
        started = time.perf_counter()
        model = self._current
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
        with self._lock:
            self._metrics.add("cd4ml_explained_rows_total", len(batch), version=model.version)
            self._metrics.observe("cd4ml_explain_duration_seconds", latency_ms, version=model.version)
        return Explained(model.version, result, latency_ms)

    def _route(self) -> Tuple[LoadedVersion, Optional[Experiment]]:
        """The version that answers this request: an experiment's arm, else the served version."""
        with self._lock:
            experiment, counts, arms = self._experiment, self._counts, self._arms
            if experiment is None:
                return self._current, None
            arm = counts.choose(self._rng)
        return arms[arm], experiment

    def reject(self, err: RequestError, version: Optional[str] = None, experiment: Optional[Experiment] = None):
        version = version or (self._current.version if self._current else "none")
        with self._lock:
            self._metrics.add("cd4ml_rejected_requests_total", version=version, rule=err.rule)
        log.info("cd4ml serving: rejected request (%s): %s", err.rule, err.message)
        self._log_error(version, experiment, err.status, err.rule)

    def _log_error(self, version: str, experiment: Optional[Experiment], status: int, rule: str):
        """A refused or failed request, by the version it was routed to: a canary's guard counts them."""
        if self.errors_log is not None:
            record = {"ts": now(), "version": version, "status": status, "rule": rule}
            if experiment is not None:
                record["experiment"] = experiment.id
            self.errors_log.write(record)

    def metrics(self) -> List[Dict]:
        """Metric increments and gauges since the last call, as Seldon's custom-metric dicts."""
        with self._lock:
            return self._metrics.drain()

    # ----- drift -----------------------------------------------------------------------------
    def _feed_window(self, model: LoadedVersion, encoded: np.ndarray):
        self._window.append(encoded)
        self._window_rows += len(encoded)
        if self._window_rows >= self.drift_window:
            window = np.concatenate(self._window)
            self._window, self._window_rows = [], 0
            self._drift_futures = [f for f in self._drift_futures if not f.done()]
            self._drift_futures.append(self._drift_pool.submit(self._run_drift, model, window))

    def _run_drift(self, model: LoadedVersion, window: np.ndarray):
        try:
            result = model.detectors.drift_test(window)
        except Exception:  # noqa: BLE001 - a failed test must not take serving down
            log.exception("cd4ml serving: drift test failed")
            return None
        result = {"ts": now(), "version": model.version, **result}
        self.drift_log.write(result)
        with self._lock:
            self.last_drift = result
            m = self._metrics
            m.add("cd4ml_drift_tests_total", version=model.version)
            m.set("cd4ml_drift", float(result["is_drift"]), version=model.version)
            for name, p in result["p_vals"].items():
                m.set("cd4ml_drift_p_value", p, version=model.version, feature=name)
        if result["is_drift"]:
            log.warning("cd4ml serving: DRIFT on version %s over %d rows: %s", model.version,
                        result["rows"], ", ".join(result["drifted"]))
        return result

    def wait_for_drift_tests(self, timeout: float = 60.0):
        """Block until queued drift tests finish (tests and shutdown; never on the request path)."""
        with self._lock:
            pending = list(self._drift_futures)
        concurrent.futures.wait(pending, timeout=timeout)

    def test_drift(self, rows: List[Dict[str, object]]) -> Dict:
        """Run the current version's drift test on the given rows now (batch monitoring, tests)."""
        model = self._current
        if model.detectors is None:
            raise VersionError(f"version {model.version} has no detectors")
        return model.detectors.drift_test(detector_core.encode(rows, model.features))

    # ----- feedback --------------------------------------------------------------------------
    def _remember(self, request_id: str, remembered: Remembered):
        self._memory[request_id] = remembered
        self._memory_rows += len(remembered.predictions)
        while self._memory_rows > FEEDBACK_MEMORY_ROWS and self._memory:
            _, old = self._memory.popitem(last=False)
            self._memory_rows -= len(old.predictions)

    def feedback(self, truth: Optional[List[float]], request_id: Optional[str] = None,
                 predictions: Optional[List[float]] = None, version: Optional[str] = None,
                 reward: Optional[float] = None) -> Dict:
        """Join ground truth (or a client's reward in [0, 1]) to what was predicted (by request id,
        else the response sent back); a request an experiment routed also scores its arm."""
        with self._lock:
            known = self._memory.get(request_id) if request_id else None
        if request_id and not known:  # answered by another worker, or before a restart
            known = self._from_log(request_id)
        if known:
            version, predictions = known.version, known.predictions
        if predictions is None:
            raise RequestError("feedback: needs 'response.meta.tags.request_id' of a recent prediction "
                               "or the predictions in 'response.data'", rule="unjoinable")
        if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float))
                                   or not 0 <= reward <= 1):
            raise RequestError(f"field 'reward': expected a number in [0, 1] (the fraction of good answers), "
                               f"got {reward!r}", rule="reward")
        if truth is None and reward is None:
            raise RequestError("feedback: needs 'truth' (one value per predicted row) or a 'reward' in [0, 1]",
                               rule="truth")
        if truth is not None and (not isinstance(truth, list) or len(truth) != len(predictions) or not all(
                isinstance(t, (int, float)) and not isinstance(t, bool) and np.isfinite(t) for t in truth)):
            raise RequestError(f"field 'truth': expected {len(predictions)} finite numbers, one per "
                               f"predicted row", rule="truth")
        # One look at the experiment for the whole feedback: it may end, or another start, meanwhile.
        arm, note, experiment = self._arm_of(known, version, explicit_reward=reward is not None)
        version = version or self.version
        answer = {"version": version, "matched": bool(known), "rows": len(predictions)}
        score = None
        if arm is not None:
            n = len(predictions)
            successes = reward * n if reward is not None else experiment.successes(predictions, truth)
            score = {"successes": float(successes), "trials": float(n)}
        if truth is None:  # a reward alone: the bandit's, no truth to log for training
            self._log_reward(request_id, version, predictions, experiment, arm, score)
        else:
            answer["live_mae"] = self._score(version, predictions, truth, request_id, bool(known),
                                             experiment=(experiment, arm, score) if arm else None)
            if known and known.shadow is not None:
                self._score(known.shadow[0], known.shadow[1], truth, request_id, True, shadow=True)
        if arm is not None:
            answer["experiment"] = {"id": experiment.id, "arm": arm, **score}
        elif note:
            answer["experiment"] = note
        return answer

    def _arm_of(self, known: Optional[Remembered], version: Optional[str], explicit_reward: bool):
        """(arm, None, the experiment) when the running experiment routed this request, else
        (None, why not, None)."""
        routed = known.experiment if known else None
        with self._lock:
            running = self._experiment
        if routed and running is not None and routed == running.id and version in running.arms:
            return version, None, running
        if explicit_reward:  # a reward has no other use: refuse it rather than drop it quietly
            why = (f"experiment {routed} is over" if routed else "no experiment routed this request")
            raise RequestError(f"field 'reward': {why} (running: {running.id if running else 'none'}); "
                               f"nothing was recorded", status=409, rule="experiment_over")
        return None, (f"not counted: experiment {routed} is over" if routed else None), None

    def _from_log(self, request_id: str) -> Optional[Remembered]:
        record = self.predictions_log.find("request_id", request_id)
        if record is None:
            return None
        shadow = record.get("shadow_version")
        return Remembered(record["version"], record["predictions"],
                          (shadow, record["shadow_predictions"]) if shadow else None, record.get("experiment"))

    def _score(self, version: str, predictions, truth, request_id, matched: bool, shadow: bool = False,
               experiment: Optional[Tuple[Experiment, str, Dict]] = None):
        """Fold one labelled request into a version's live MAE (champion or shadow), and into its
        experiment arm's evidence, and log it."""
        errors = [abs(float(p) - float(t)) for p, t in zip(predictions, truth)]
        with self._lock:
            total = self._mae.setdefault(version, [0.0, 0.0])
            total[0] += sum(errors)
            total[1] += len(errors)
            mae = total[0] / total[1]
            self._metrics.add("cd4ml_feedback_rows_total", len(errors), version=version)
            self._metrics.set("cd4ml_live_mae", mae, version=version)
            if experiment:
                self._count(*experiment, errors)
        entry = {"ts": now(), "request_id": request_id, "version": version, "matched": matched,
                 "truth": truth, "predictions": predictions, "abs_errors": errors}
        if shadow:
            entry["shadow"] = True
        if experiment:
            entry.update(experiment=experiment[0].id, arm=experiment[1], reward=experiment[2])
        self.feedback_log.write(entry)
        return mae

    def _count(self, experiment: Experiment, arm: str, score: Dict, errors=()):
        """Add to the running counts only if they are that experiment's (call under the lock)."""
        if self._counts is not None and self._counts.experiment == experiment:
            self._counts.add(arm, score["successes"], score["trials"], errors)

    def _log_reward(self, request_id, version, predictions, experiment: Experiment, arm: str, score: Dict):
        with self._lock:
            self._count(experiment, arm, score)
        self.feedback_log.write({"ts": now(), "request_id": request_id, "version": version, "matched": True,
                                 "predictions": predictions, "experiment": experiment.id, "arm": arm,
                                 "reward": score})

    def live_mae(self, version: Optional[str] = None) -> Optional[float]:
        total = self._mae.get(version or self.version)
        return total[0] / total[1] if total and total[1] else None

    def health(self) -> Dict:
        model = self._current
        return {"status": "ok" if model else "loading", "version": model.version if model else None,
                "since": self._since, "registry": self.registry, "pinned": self.pinned,
                "shadow": self.shadow_version, "experiment": self.experiment_status(),
                "detectors": bool(model and model.detectors), "refused": dict(self.refused),
                "last_drift": self.last_drift and {k: self.last_drift[k]
                                                   for k in ("ts", "version", "is_drift", "drifted")}}

