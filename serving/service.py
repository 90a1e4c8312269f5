"""The model service: the rooms of serving, put together for a server to call.

    VersionRepository   serving/repository.py   what serves: poll, pin, shadow, experiment -> Snapshot
    RequestPath         serving/inference.py    a request's stages over one snapshot, no lock
    FeedbackDesk        serving/feedback.py     labels joined to answers; live MAE, bandit evidence
    Telemetry           serving/telemetry.py    metrics (exported each server's own way), logs, drift

Independent of any web framework: the Seldon v1 wrapper (serving/seldon_model.py) and the Open
Inference Protocol runtime (serving/mlserver_runtime.py) are thin shells over it, and it runs
and is tested in the pipeline environment as well as in the serving ones. Each server builds its
own; nothing is shared at module level, so a server can run several worker processes.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from cd4ml.contract import default_log_dir
from scoring import detector_core
from serving.bandit import Experiment
from serving.feedback import FeedbackDesk
from serving.inference import RequestPath
from serving.repository import DEFAULT_POLL_SECONDS, Snapshot, VersionRepository
from serving.request import DEFAULT_MAX_ROWS
from serving.telemetry import DEFAULT_DRIFT_WINDOW, Telemetry
from serving.version import LoadedVersion, VersionError


class ModelService:
    def __init__(self, registry: str, version: Optional[str] = None, log_dir: Optional[str] = None,
                 drift_window: int = DEFAULT_DRIFT_WINDOW, poll_seconds: float = DEFAULT_POLL_SECONDS,
                 max_rows: int = DEFAULT_MAX_ROWS, log_max_bytes: Optional[int] = None,
                 log_flush_seconds: Optional[float] = None, metrics=None):
        self.registry, self.pinned = registry, version
        self.log_dir = log_dir or default_log_dir(registry)
        self.telemetry = Telemetry(self.log_dir, metrics, drift_window, log_max_bytes, log_flush_seconds)
        self.repository = VersionRepository(registry, version, self.log_dir, poll_seconds,
                                            on_load=self.telemetry.version_loaded,
                                            on_refuse=self.telemetry.version_refused)
        self.desk = FeedbackDesk(self.repository, self.telemetry)
        self.requests = RequestPath(self.repository, self.telemetry, self.desk, max_rows)
        # What a server calls, by the room that answers it.
        self.predict, self.explain, self.reject = self.requests.predict, self.requests.explain, self.requests.reject
        self.feedback = self.desk.feedback
        repo = self.repository
        self.refresh, self.refresh_shadow, self.refresh_experiment = (
            repo.refresh, repo.refresh_shadow, repo.refresh_experiment)
        self.wait_for_drift_tests = self.telemetry.wait_for_drift_tests

    def load(self, poll: bool = True) -> "ModelService":
        """Open the logs, load the version to serve (or the newest one that loads) and start
        watching the registry."""
        self.telemetry.open()
        self.repository.load(poll)
        return self

    def close(self):
        self.repository.close()
        self.telemetry.close()

    # ----- what serves -----------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        return self.repository.snapshot

    @property
    def current(self) -> LoadedVersion:
        return self.repository.snapshot.current

    @property
    def version(self) -> str:
        return self.current.version

    @property
    def shadow_version(self) -> Optional[str]:
        shadow = self.repository.snapshot.shadow
        return shadow.version if shadow else None

    @property
    def experiment(self) -> Optional[Experiment]:
        return self.repository.snapshot.experiment

    def experiment_status(self) -> Optional[Dict]:
        snapshot = self.repository.snapshot
        if snapshot.experiment is None:
            return None
        return {"id": snapshot.experiment.id, "strategy": snapshot.experiment.strategy,
                "arms": {n: dataclasses.asdict(a) for n, a in snapshot.counts.arms.items()}}

    # ----- telemetry -------------------------------------------------------------------------
    @property
    def last_drift(self) -> Optional[Dict]:
        return self.telemetry.last_drift

    def metrics(self) -> List[Dict]:
        """Metric increments and gauges since the last call, as Seldon's custom-metric dicts."""
        return self.telemetry.metrics.drain()

    def live_mae(self, version: Optional[str] = None) -> Optional[float]:
        return self.desk.live_mae(version or self.version)

    def test_drift(self, rows: List[Dict[str, object]]) -> Dict:
        """Run the current version's drift test on the given rows now (batch monitoring, tests)."""
        model = self.current
        if model.detectors is None:
            raise VersionError(f"version {model.version} has no detectors")
        return model.detectors.drift_test(detector_core.encode(rows, model.features))

    def health(self) -> Dict:
        snapshot = self.repository.snapshot
        model = snapshot.current if snapshot else None
        last = self.telemetry.last_drift
        return {"status": "ok" if model else "loading", "version": model.version if model else None,
                "since": snapshot.since if snapshot else "", "registry": self.registry, "pinned": self.pinned,
                "shadow": self.shadow_version if snapshot else None,
                "experiment": self.experiment_status() if snapshot else None,
                "detectors": bool(model and model.detectors), "refused": dict(self.repository.refused),
                "last_drift": last and {k: last[k] for k in ("ts", "version", "is_drift", "drifted")}}

