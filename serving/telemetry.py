"""The telemetry sink: what answered requests, refusals and labels leave behind.

Metrics (through the server's own exporter, serving/metrics.py), the four logs (predictions,
feedback, drift, errors) and the drift window. Nothing here decides an answer: the request path
hands an answered request over after the answer (serving/inference.py), so its own lock (held for
microseconds, around the window) is never on the way to a client.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Dict, List, Optional

import numpy as np

from cd4ml.contract import DRIFT_LOG, ERRORS_LOG, FEEDBACK_LOG, PREDICTIONS_LOG
from serving.logs import now, open_log
from serving.metrics import DeltaMetrics

log = logging.getLogger("cd4ml.serving")

# Rows per drift test. Hours of one day share their weather, so KS over hourly rows is
# over-sensitive on large windows (docs/stack.md): measured on span 1 (fitted on even days, 20 random
# windows of odd days) 200 rows gave 0 false alarms and 20/20 detections on span 2; 500 gave 2.
DEFAULT_DRIFT_WINDOW = 200


class Telemetry:
    def __init__(self, log_dir: str, metrics=None, drift_window: int = DEFAULT_DRIFT_WINDOW,
                 log_max_bytes: Optional[int] = None, log_flush_seconds: Optional[float] = None):
        self.log_dir = log_dir
        self.metrics = metrics if metrics is not None else DeltaMetrics()
        self.drift_window = drift_window
        self._log_options = {"max_bytes": log_max_bytes, "flush_seconds": log_flush_seconds}
        self.predictions_log = self.feedback_log = self.drift_log = self.errors_log = None
        self._lock = threading.Lock()
        self._window: List[np.ndarray] = []
        self.window_rows = 0
        self._window_version: Optional[str] = None
        self._drift_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cd4ml-drift")
        self._drift_futures: List[concurrent.futures.Future] = []
        self.last_drift: Optional[Dict] = None

    def open(self) -> "Telemetry":
        self.predictions_log, self.feedback_log, self.drift_log, self.errors_log = (
            open_log(self.log_dir, name, **self._log_options)
            for name in (PREDICTIONS_LOG, FEEDBACK_LOG, DRIFT_LOG, ERRORS_LOG))
        return self

    def close(self):
        self._drift_pool.shutdown(wait=True)
        for handle in (self.predictions_log, self.feedback_log, self.drift_log, self.errors_log):
            if handle:
                handle.close()

    # ----- the repository's events -----------------------------------------------------------
    def version_loaded(self, version: str):
        self.metrics.add("cd4ml_version_loads_total", version=version)

    def version_refused(self, version: str):
        self.metrics.add("cd4ml_versions_refused_total", version=version)

    # ----- requests --------------------------------------------------------------------------
    def answered(self, record: Dict, model, encoded: np.ndarray, is_current: bool,
                 shadow_version: Optional[str] = None):
        """One answered request: its metrics, its log line and, when the served version answered,
        its rows in that version's drift window."""
        version, rows = record["version"], len(record["predictions"])
        m = self.metrics
        m.add("cd4ml_requests_total", version=version)
        m.add("cd4ml_rows_total", rows, version=version)
        # Milliseconds in; Seldon and Prometheus publish a histogram in seconds.
        m.observe("cd4ml_request_duration_seconds", record["latency_ms"], version=version)
        if record["outliers"]:
            m.add("cd4ml_outliers_total", record["outliers"], version=version)
        if record.get("experiment"):
            m.add("cd4ml_experiment_rows_total", rows, version=version, experiment=record["experiment"])
        if shadow_version is not None:
            m.add("cd4ml_shadow_rows_total", rows, version=shadow_version)
        if model.detectors is not None and is_current:
            self._feed_window(model, encoded)
        self.predictions_log.write(record)

    def rejected(self, version: str, status: int, rule: str, experiment: Optional[str] = None):
        """A refused (4xx) or failed (5xx) request, by the version it was routed to: a canary's
        guard counts them in the errors log."""
        if status < 500:
            self.metrics.add("cd4ml_rejected_requests_total", version=version, rule=rule)
        if self.errors_log is not None:
            record = {"ts": now(), "version": version, "status": status, "rule": rule}
            if experiment is not None:
                record["experiment"] = experiment
            self.errors_log.write(record)

    def explained(self, version: str, rows: int, latency_ms: float):
        self.metrics.add("cd4ml_explained_rows_total", rows, version=version)
        self.metrics.observe("cd4ml_explain_duration_seconds", latency_ms, version=version)

    def labelled(self, entry: Dict, live_mae: float):
        """One labelled (or rewarded) request, already joined and scored by serving/feedback.py."""
        if "abs_errors" in entry:
            self.metrics.add("cd4ml_feedback_rows_total", len(entry["abs_errors"]), version=entry["version"])
            self.metrics.set("cd4ml_live_mae", live_mae, version=entry["version"])
        self.feedback_log.write(entry)

    # ----- drift -----------------------------------------------------------------------------
    def _feed_window(self, model, encoded: np.ndarray):
        with self._lock:
            if model.version != self._window_version:  # a window is tested against its own detectors
                self._window, self.window_rows, self._window_version = [], 0, model.version
            self._window.append(encoded)
            self.window_rows += len(encoded)
            if self.window_rows < self.drift_window:
                return
            window = np.concatenate(self._window)
            self._window, self.window_rows = [], 0
            self._drift_futures = [f for f in self._drift_futures if not f.done()]
            self._drift_futures.append(self._drift_pool.submit(self._run_drift, model, window))

    def _run_drift(self, model, window: np.ndarray):
        try:
            result = model.detectors.drift_test(window)
        except Exception:  # noqa: BLE001 - a failed test must not take serving down
            log.exception("cd4ml serving: drift test failed")
            return None
        result = {"ts": now(), "version": model.version, **result}
        self.drift_log.write(result)
        self.last_drift = result
        m = self.metrics
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
