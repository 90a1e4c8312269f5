"""The version repository: which versions serve, published as one immutable snapshot.

It owns everything that decides what answers (as KServe's model_repository.py owns loading apart
from a request's stages): the registry poll, the pin, the shadow, the experiment and its arms,
and versions refused. Whatever it changes, it builds a new `Snapshot` and publishes it in one
assignment. A request reads `repository.snapshot` once and uses that value to the end, so it
takes no lock, a swap never fails or mixes an in-flight request, and an experiment ending
mid-request cannot pair one experiment's arm with another's evidence.

A version that fails to load is refused with a log line and the previous snapshot keeps serving.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from cd4ml.contract import FEEDBACK_LOG
from cd4ml.logstore import read_records
from components import registry as reg
from serving.bandit import Counts, Experiment, read_experiment
from serving.logs import now
from serving.version import LoadedVersion, VersionError

log = logging.getLogger("cd4ml.serving")

DEFAULT_POLL_SECONDS = 5.0
# The control files (pin, shadow, experiment, rollout: contract.CONTROL_FILES) are looked at this
# often, so that a rollback or a canary's end reaches every replica within a second.
CONTROL_POLL_SECONDS = 0.25


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """What serves at one moment. Never changed: the repository publishes a new one."""
    current: LoadedVersion
    since: str
    shadow: Optional[LoadedVersion] = None
    experiment: Optional[Experiment] = None
    arms: Mapping[str, LoadedVersion] = dataclasses.field(default_factory=dict)
    counts: Optional[Counts] = None   # the experiment's evidence, which feedback adds to

    def route(self, rng: np.random.Generator) -> Tuple[LoadedVersion, Optional[Experiment]]:
        """The version that answers a request: an experiment's arm, else the served version."""
        if self.experiment is None:
            return self.current, None
        return self.arms[self.counts.choose(rng)], self.experiment


class VersionRepository:
    def __init__(self, registry: str, pinned: Optional[str] = None, log_dir: Optional[str] = None,
                 poll_seconds: float = DEFAULT_POLL_SECONDS,
                 on_load: Callable[[str], None] = lambda version: None,
                 on_refuse: Callable[[str], None] = lambda version: None):
        self.registry, self.pinned, self.log_dir, self.poll_seconds = registry, pinned, log_dir, poll_seconds
        self._on_load, self._on_refuse = on_load, on_refuse
        self.snapshot: Optional[Snapshot] = None
        self.refused: Dict[str, str] = {}
        self._refused_stamp: Dict[str, object] = {}
        self._warm: Dict[str, LoadedVersion] = {}  # the version replaced last: a rollback to it is instant
        self._publishing = threading.Lock()  # publishers only (the poller, a test): never a request
        self._stop = threading.Event()
        self._control = None

    def _publish(self, **changes):
        self.snapshot = dataclasses.replace(self.snapshot, **changes)  # the one assignment

    # ----- lifecycle -------------------------------------------------------------------------
    def load(self, poll: bool = True) -> "VersionRepository":
        """Load the version to serve (or the newest one that loads) and start watching the registry."""
        self._control = reg.control_stamp(self.registry)
        wanted, why = reg.target(self.registry, self.pinned)
        candidates = [wanted] if wanted else []
        if not self.pinned:
            candidates += [v for v in reversed(reg.servable_versions(self.registry)) if v != wanted]
        for version in candidates:
            if self._try_load(version, why if version == wanted else "newest complete version that loads"):
                break
        if self.snapshot is None:
            reasons = "; ".join(f"{v}: {r}" for v, r in self.refused.items()) or why
            raise VersionError(f"nothing to serve from {self.registry} ({reasons})")
        self.refresh_shadow()
        self.refresh_experiment()
        if poll and self.poll_seconds > 0:
            threading.Thread(target=self._poll, name="cd4ml-registry-poller", daemon=True).start()
        return self

    def close(self):
        self._stop.set()

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
                log.exception("cd4ml serving: registry poll failed; still serving %s", self.snapshot.current.version)

    # ----- the served version ----------------------------------------------------------------
    def refresh(self) -> bool:
        """One look at the registry; True when another version now serves."""
        self.refresh_shadow()
        self.refresh_experiment()
        serving = self.snapshot.current.version
        wanted, why = reg.target(self.registry, self.pinned)
        if not wanted or wanted == serving:
            return False
        if not reg.is_complete(self.registry, wanted):
            if self.refused.get(wanted) != "incomplete":
                log.warning("cd4ml serving: version %s (%s) is incomplete (no %s yet); still serving %s",
                            wanted, why, reg.MANIFEST, serving)
                self.refused[wanted] = "incomplete"
            return False
        stamp = tf.io.gfile.stat(os.path.join(self.registry, wanted, reg.MANIFEST)).mtime_nsec
        if self._refused_stamp.get(wanted) == stamp:
            return False  # refused before and unchanged since: do not reload it every poll
        return self._try_load(wanted, why, stamp)

    def _try_load(self, version: str, why: str, stamp=None) -> bool:
        previous = self.snapshot.current if self.snapshot else None
        started = time.perf_counter()
        try:
            loaded = self._warm.pop(version, None) or LoadedVersion(self.registry, version)
        except Exception as err:  # noqa: BLE001 - any failure refuses the version, never the server
            self.refused[version], self._refused_stamp[version] = str(err), stamp
            log.error("cd4ml serving: REFUSED version %s (%s): %s; %s", version, why, err,
                      f"still serving {previous.version}" if previous else "not serving yet")
            self._on_refuse(version)
            return False
        with self._publishing:
            if previous is None:
                self.snapshot = Snapshot(current=loaded, since=now())
            else:
                self._warm = {previous.version: previous}
                self._publish(current=loaded, since=now())
        self._on_load(version)
        self.refused.pop(version, None)
        log.info("cd4ml serving: now serving version %s (%s) after %.1f s of loading%s", version, why,
                 time.perf_counter() - started, f", was {previous.version}" if previous else "")
        return True

    # ----- shadow and experiment -------------------------------------------------------------
    def refresh_shadow(self):
        """Follow SHADOW.json: load, swap or drop the challenger. A challenger that fails to load
        is logged and skipped; it can never affect the answers."""
        wanted = reg.read_shadow(self.registry)
        shadow = self.snapshot.shadow
        if wanted == (shadow.version if shadow else None):
            return
        loaded = None
        if wanted is None:
            log.info("cd4ml serving: shadow %s stopped", shadow.version)
        else:
            try:
                loaded = LoadedVersion(self.registry, wanted)
                log.info("cd4ml serving: shadow version %s scores beside %s", wanted, self.snapshot.current.version)
            except Exception as err:  # noqa: BLE001 - a bad challenger must not touch the champion
                if self.refused.get(wanted) != str(err):
                    log.error("cd4ml serving: REFUSED shadow version %s: %s", wanted, err)
                self.refused[wanted] = str(err)
        with self._publishing:
            self._publish(shadow=loaded)

    def refresh_experiment(self):
        """Follow EXPERIMENT.json: load its arms, and re-read its evidence from the feedback log
        (every worker's, so all route on the same counts). An arm that fails to load ends
        nothing: the experiment is not run, and the served version answers alone."""
        wanted, snap = read_experiment(self.registry), self.snapshot
        if wanted is None:
            if snap.experiment is not None:
                log.info("cd4ml serving: experiment %s is over; %s answers alone", snap.experiment.id,
                         snap.current.version)
            with self._publishing:
                self._publish(experiment=None, arms={}, counts=None)
            return
        arms = snap.arms
        if wanted != snap.experiment:
            try:
                arms = {v: (snap.current if v == snap.current.version else snap.arms.get(v)
                            or LoadedVersion(self.registry, v)) for v in wanted.arms}
            except Exception as err:  # noqa: BLE001 - a bad arm must not touch the served version
                if self.refused.get(wanted.id) != str(err):
                    log.error("cd4ml serving: REFUSED experiment %s: %s", wanted.id, err)
                self.refused[wanted.id] = str(err)
                with self._publishing:
                    self._publish(experiment=None, arms={}, counts=None)
                return
            log.info("cd4ml serving: experiment %s routes between %s (%s)", wanted.id, ", ".join(wanted.arms),
                     wanted.strategy)
        counts = Counts.from_feedback(wanted, read_records(self.log_dir, FEEDBACK_LOG))
        with self._publishing:  # the experiment, its arms and its evidence change together
            self._publish(experiment=wanted, arms=arms, counts=counts)
