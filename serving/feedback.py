"""Feedback: ground truth (or a client's reward) joined to what was answered, and scored.

A label is joined by request id to what this server remembers of the answer (who answered, with
what, how it was routed), else to the shared prediction log (another worker, or before a
restart), else to the predictions the client sends back. It then scores the answering version's
live MAE, its shadow's, and, when an experiment routed the request, that experiment's arm: the
experiment is read once, from the snapshot the feedback started with, so one that ends or is
replaced meanwhile is still the one credited (and the new one never is).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from serving.bandit import Experiment
from serving.logs import now
from serving.request import RequestError

# Predictions kept in memory for joining feedback by request id (rows, not requests); older ones,
# and those another worker answered, are looked up in the shared prediction log.
FEEDBACK_MEMORY_ROWS = 100_000


@dataclass
class Remembered:
    """What feedback joins to: who answered a request, with what, and how it was routed."""
    version: str
    predictions: List[float]
    shadow: Optional[Tuple[str, List[float]]] = None
    experiment: Optional[str] = None


class FeedbackDesk:
    def __init__(self, repository, telemetry, memory_rows: int = FEEDBACK_MEMORY_ROWS):
        self.repository, self.telemetry, self.memory_rows = repository, telemetry, memory_rows
        self._lock = threading.Lock()
        self._memory: "collections.OrderedDict[str, Remembered]" = collections.OrderedDict()
        self._rows = 0
        self._mae: Dict[str, List[float]] = {}

    def remember(self, request_id: str, remembered: Remembered):
        with self._lock:
            self._memory[request_id] = remembered
            self._rows += len(remembered.predictions)
            while self._rows > self.memory_rows and self._memory:
                _, old = self._memory.popitem(last=False)
                self._rows -= len(old.predictions)

    def _recall(self, request_id: str) -> Optional[Remembered]:
        known = self._memory.get(request_id)
        if known is not None:
            return known
        record = self.telemetry.predictions_log.find("request_id", request_id)
        if record is None:  # answered by another worker, or before a restart: the shared log
            return None
        shadow = record.get("shadow_version")
        return Remembered(record["version"], record["predictions"],
                          (shadow, record["shadow_predictions"]) if shadow else None, record.get("experiment"))

    def feedback(self, truth: Optional[List[float]], request_id: Optional[str] = None,
                 predictions: Optional[List[float]] = None, version: Optional[str] = None,
                 reward: Optional[float] = None) -> Dict:
        """Join ground truth (or a client's reward in [0, 1]) to what was predicted (by request id,
        else the response sent back); a request an experiment routed also scores its arm."""
        snapshot = self.repository.snapshot  # one look at what serves, for the whole feedback
        known = self._recall(request_id) if request_id else None
        if known:
            version, predictions = known.version, known.predictions
        _check(truth, predictions, reward)
        arm, note, experiment = self._arm_of(snapshot, known, version, explicit_reward=reward is not None)
        version = version or snapshot.current.version
        answer = {"version": version, "matched": bool(known), "rows": len(predictions)}
        score = None
        if arm is not None:
            n = len(predictions)
            successes = reward * n if reward is not None else experiment.successes(predictions, truth)
            score = {"successes": float(successes), "trials": float(n)}
        if truth is None:  # a reward alone: the bandit's, no truth to log for training
            self._count(experiment, arm, score)
            self.telemetry.labelled({"ts": now(), "request_id": request_id, "version": version, "matched": True,
                                     "predictions": predictions, "experiment": experiment.id, "arm": arm,
                                     "reward": score}, None)
        else:
            answer["live_mae"] = self._score(snapshot, version, predictions, truth, request_id, bool(known),
                                             experiment=(experiment, arm, score) if arm else None)
            if known and known.shadow is not None:
                self._score(snapshot, known.shadow[0], known.shadow[1], truth, request_id, True, shadow=True)
        if arm is not None:
            answer["experiment"] = {"id": experiment.id, "arm": arm, **score}
        elif note:
            answer["experiment"] = note
        return answer

    @staticmethod
    def _arm_of(snapshot, known: Optional[Remembered], version: Optional[str], explicit_reward: bool):
        """(arm, None, the experiment) when the snapshot's experiment routed this request, else
        (None, why not, None)."""
        routed, running = (known.experiment if known else None), snapshot.experiment
        if routed and running is not None and routed == running.id and version in running.arms:
            return version, None, running
        if explicit_reward:  # a reward has no other use: refuse it rather than drop it quietly
            why = (f"experiment {routed} is over" if routed else "no experiment routed this request")
            raise RequestError(f"field 'reward': {why} (running: {running.id if running else 'none'}); "
                               f"nothing was recorded", status=409, rule="experiment_over")
        return None, (f"not counted: experiment {routed} is over" if routed else None), None

    def _score(self, snapshot, version: str, predictions, truth, request_id, matched: bool, shadow: bool = False,
               experiment: Optional[Tuple[Experiment, str, Dict]] = None) -> float:
        """Fold one labelled request into a version's live MAE (champion or shadow), and into its
        experiment arm's evidence, and log it."""
        errors = [abs(float(p) - float(t)) for p, t in zip(predictions, truth)]
        with self._lock:
            total = self._mae.setdefault(version, [0.0, 0.0])
            total[0] += sum(errors)
            total[1] += len(errors)
            mae = total[0] / total[1]
        entry = {"ts": now(), "request_id": request_id, "version": version, "matched": matched,
                 "truth": truth, "predictions": predictions, "abs_errors": errors}
        if shadow:
            entry["shadow"] = True
        if experiment:
            self._count(*experiment, errors)
            entry.update(experiment=experiment[0].id, arm=experiment[1], reward=experiment[2])
        self.telemetry.labelled(entry, mae)
        return mae

    def _count(self, experiment: Experiment, arm: str, score: Dict, errors=()):
        """Add to the evidence the experiment routes on, if that is still the experiment's own; a
        newer snapshot's experiment re-reads its evidence from the feedback log this writes."""
        counts = self.repository.snapshot.counts
        if counts is not None and counts.experiment == experiment:
            with self._lock:
                counts.add(arm, score["successes"], score["trials"], errors)

    def live_mae(self, version: str) -> Optional[float]:
        total = self._mae.get(version)
        return total[0] / total[1] if total and total[1] else None


def _check(truth, predictions, reward):
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
