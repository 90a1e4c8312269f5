"""A multi-armed bandit between the served version (the champion) and challengers, on live feedback.

The experiment is a file beside the registry (contract.EXPERIMENT_FILE, written by `cd4ml
experiment start`), followed by the server like the pin and the shadow. Its memory is the
feedback log itself: every labelled request routed by the experiment is logged with the
experiment's id, its arm and its reward, so every worker and replica, and a restarted server, fold
the same log into the same counts (`Counts.from_feedback`). Locally each line is flushed as it is
written, so killing the server loses nothing; with a gs:// log sink at most the unflushed batch.

The reward of a row, for a regression model: a success when the prediction is within the
experiment's tolerance of the truth, |prediction - truth| <= max(abs_tolerance, rel_tolerance *
truth) (default 25 bikers or 25 %, whichever is larger); a request of n rows adds its fraction of
successes to the arm's Beta posterior (successes s, failures n - s). A client that computes its own
reward sends it instead (one value in [0, 1] per request, as Seldon's feedback does).

Routing: Thompson sampling draws a success rate from each arm's Beta(1 + s, 1 + f) and picks the
highest; epsilon-greedy picks a random arm with probability epsilon, else the best mean. The
verdict (`prob_best`) is the Monte Carlo probability that each arm's rate is the highest.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

THOMPSON, EPSILON_GREEDY = "thompson", "epsilon-greedy"
# A guarded rollout's canary (cd4ml/rollout.py): one challenger on a fixed `share` of traffic,
# whatever the evidence; the rollout controller, not the router, decides on it.
CANARY = "canary"
STRATEGIES = (THOMPSON, EPSILON_GREEDY, CANARY)


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What `cd4ml experiment start` wrote: the arms and the rules of the verdict."""

    id: str
    champion: str
    challengers: Sequence[str]
    strategy: str = THOMPSON
    epsilon: float = 0.1
    min_feedback: int = 200         # labelled rows before a verdict
    confidence: float = 0.95        # P(best) needed
    share: float = 0.0              # a canary's share of traffic
    abs_tolerance: float = 25.0
    rel_tolerance: float = 0.25
    started_at: str = ""
    reason: str = ""

    @property
    def arms(self) -> List[str]:
        return [self.champion, *self.challengers]

    def successes(self, predictions: Sequence[float], truth: Sequence[float]) -> float:
        return float(sum(abs(p - t) <= max(self.abs_tolerance, self.rel_tolerance * abs(t))
                         for p, t in zip(predictions, truth)))

    def to_json(self) -> str:
        return json.dumps(dict(dataclasses.asdict(self), challengers=list(self.challengers)), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Experiment":
        """The experiment file; ValueError naming the field and the rule when it is not one."""
        body = json.loads(text)
        if not isinstance(body, dict):
            raise ValueError("an experiment is a JSON object")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(body) - fields)
        if unknown or not body.get("id") or not body.get("champion") or not body.get("challengers"):
            raise ValueError(f"an experiment needs id, champion and challengers (and only {sorted(fields)}); "
                             f"got {sorted(body)}")
        experiment = cls(**dict(body, challengers=tuple(str(c) for c in body["challengers"])))
        if experiment.strategy not in STRATEGIES:
            raise ValueError(f"strategy {experiment.strategy!r}: expected one of {', '.join(STRATEGIES)}")
        if not 0.5 <= experiment.confidence < 1 or not 0 <= experiment.epsilon <= 1:
            raise ValueError("confidence must be in [0.5, 1) and epsilon in [0, 1]")
        if len(set(experiment.arms)) != len(experiment.arms):
            raise ValueError(f"the arms {experiment.arms} name a version twice")
        if experiment.strategy == CANARY and (len(experiment.challengers) != 1 or not 0 < experiment.share < 1):
            raise ValueError("a canary has one challenger and a share of traffic between 0 and 1")
        return experiment


@dataclasses.dataclass
class Arm:
    successes: float = 0.0
    trials: float = 0.0       # labelled rows (or requests, for client rewards)
    abs_error: float = 0.0
    labelled_rows: int = 0

    @property
    def failures(self) -> float:
        return self.trials - self.successes

    @property
    def mean(self) -> float:
        return (1 + self.successes) / (2 + self.trials)

    @property
    def live_mae(self) -> Optional[float]:
        return self.abs_error / self.labelled_rows if self.labelled_rows else None


class Counts:
    """Each arm's evidence in one experiment."""

    def __init__(self, experiment: Experiment):
        self.experiment = experiment
        self.arms: Dict[str, Arm] = {a: Arm() for a in experiment.arms}

    def add(self, arm: str, successes: float, trials: float, abs_errors: Sequence[float] = ()):
        a = self.arms[arm]
        a.successes += successes
        a.trials += trials
        a.abs_error += float(sum(abs_errors))
        a.labelled_rows += len(abs_errors)

    @classmethod
    def from_feedback(cls, experiment: Experiment, records: Iterable[Dict]) -> "Counts":
        """Fold the feedback log: the lines this experiment scored (`experiment`, `arm`, `reward`)."""
        counts = cls(experiment)
        for r in records:
            reward = r.get("reward")
            if r.get("experiment") != experiment.id or r.get("arm") not in counts.arms or not isinstance(reward, dict):
                continue
            counts.add(r["arm"], float(reward.get("successes", 0)), float(reward.get("trials", 0)),
                       r.get("abs_errors") or ())
        return counts

    @property
    def labelled(self) -> float:
        return sum(a.trials for a in self.arms.values())

    def choose(self, rng: np.random.Generator) -> str:
        names = list(self.arms)
        if self.experiment.strategy == CANARY:
            return names[1] if rng.random() < self.experiment.share else names[0]
        if self.experiment.strategy == EPSILON_GREEDY:
            if rng.random() < self.experiment.epsilon:
                return names[int(rng.integers(len(names)))]
            return max(names, key=lambda n: self.arms[n].mean)
        draws = [rng.beta(1 + self.arms[n].successes, 1 + self.arms[n].failures) for n in names]
        return names[int(np.argmax(draws))]

    def prob_best(self, samples: int = 20000, seed: int = 0) -> Dict[str, float]:
        rng = np.random.default_rng(seed)
        names = list(self.arms)
        draws = np.stack([rng.beta(1 + self.arms[n].successes, 1 + self.arms[n].failures, samples) for n in names])
        best = np.bincount(np.argmax(draws, axis=0), minlength=len(names)) / samples
        return {n: float(p) for n, p in zip(names, best)}

    def verdict(self) -> Optional[str]:
        """The winning arm once the evidence is enough (min_feedback rows, P(best) >= confidence)."""
        if self.labelled < self.experiment.min_feedback:
            return None
        best = self.prob_best()
        winner = max(best, key=best.get)
        return winner if best[winner] >= self.experiment.confidence else None


def read_experiment(registry: str) -> Optional[Experiment]:
    """The running experiment from EXPERIMENT.json, or None; an unreadable one is logged and
    ignored, like a bad pin."""
    import logging
    import os

    from cd4ml.contract import EXPERIMENT_FILE
    from components import registry as reg

    path = os.path.join(registry, EXPERIMENT_FILE)
    if not reg.exists(path):
        return None
    try:
        return Experiment.from_json(reg.read_text(path))
    except (ValueError, TypeError, OSError) as err:
        logging.getLogger("cd4ml.serving").error("cd4ml serving: ignoring %s: %s", path, err)
        return None
