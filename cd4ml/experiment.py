"""Competing models under governance: start a bandit experiment, read its evidence, conclude it.

The running server routes each request to an arm (serving/bandit.py, serving/service.py) and logs
its reward with the feedback; this module is the operator's side. `start` checks the challengers
(complete, blessed, not rejected) and writes `<registry>/EXPERIMENT.json`, which every server
follows at its next poll. `status` folds the same logs the servers fold: traffic share, rewards,
live MAE, the probability that each arm is best, regret. `verdict` concludes once the evidence
says so with the experiment's confidence after its minimum of labelled rows: the winner is
promoted (pinned) when it is a challenger, the experiment ends either way, and the decision is
recorded in ML Metadata with its evidence (cd4ml.Experiment, linked to the winner's push, so
`cd4ml lineage` of the winner shows it). Every step is also a cd4ml.Experiment record.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Dict, List, Optional

from cd4ml import promotion
from cd4ml.contract import EXPERIMENT_FILE, FEEDBACK_LOG, PREDICTIONS_LOG, default_log_dir
from cd4ml.logstore import read_records
from components import registry as reg
from serving.bandit import STRATEGIES, THOMPSON, Counts, Experiment, read_experiment


class ExperimentError(ValueError):
    pass


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def running(registry: str) -> Optional[Experiment]:
    return read_experiment(registry)


def start(registry: str, challengers: List[str], strategy: str = THOMPSON, min_feedback: int = 200,
          confidence: float = 0.95, epsilon: float = 0.1, reason: str = "",
          metadata_path: Optional[str] = None) -> Experiment:
    """Route live traffic between the served version and `challengers`; nothing changes on error."""
    if running(registry) is not None:
        raise ExperimentError(f"experiment {running(registry).id} is running: `cd4ml experiment stop` first")
    if strategy not in STRATEGIES:
        raise ExperimentError(f"--strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    champion, _ = reg.target(registry)
    if champion is None:
        raise ExperimentError(f"nothing is served from {registry}: no champion to compare with")
    versions = {v.version: v for v in promotion.list_versions(registry)}
    for c in challengers:
        v = versions.get(c)
        if v is None:
            raise ExperimentError(f"challenger {c} is not a version in {registry} (have {', '.join(versions)})")
        if not v.complete or v.blessed is False or v.approval == "rejected":
            why = "incomplete" if not v.complete else "not blessed" if v.blessed is False else "rejected"
            raise ExperimentError(f"challenger {c} is {why}: only complete, blessed versions compete")
        if c == champion:
            raise ExperimentError(f"challenger {c} is the served version (the champion) already")
    experiment = Experiment(id=f"exp-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}",
                            champion=champion, challengers=tuple(challengers), strategy=strategy,
                            epsilon=epsilon, min_feedback=min_feedback, confidence=confidence,
                            started_at=_now(), reason=reason or "experiment")
    Experiment.from_json(experiment.to_json())  # the same checks the server applies
    promotion.write_atomic(os.path.join(registry, EXPERIMENT_FILE), experiment.to_json())
    _in_cards(registry, experiment, "experiment start", experiment.reason)
    if metadata_path:
        _record(metadata_path, registry, experiment, "start", reason=experiment.reason)
    return experiment


@dataclasses.dataclass
class Status:
    experiment: Experiment
    counts: Counts
    traffic_rows: Dict[str, int]
    prob_best: Dict[str, float]
    regret: float
    winner: Optional[str]

    def as_dict(self) -> Dict:
        arms = {}
        total = sum(self.traffic_rows.values()) or 1
        for name, arm in self.counts.arms.items():
            arms[name] = {"role": "champion" if name == self.experiment.champion else "challenger",
                          "traffic_rows": self.traffic_rows.get(name, 0),
                          "traffic_share": self.traffic_rows.get(name, 0) / total,
                          "labelled_rows": arm.trials, "successes": arm.successes,
                          "success_rate": arm.mean, "live_mae": arm.live_mae, "prob_best": self.prob_best[name]}
        return {"experiment": dataclasses.asdict(self.experiment), "arms": arms, "regret": self.regret,
                "labelled_rows": self.counts.labelled, "verdict": self.winner}


def status(registry: str, log_dir: Optional[str] = None, experiment: Optional[Experiment] = None) -> Status:
    experiment = experiment or running(registry)
    if experiment is None:
        raise ExperimentError(f"no experiment is running on {registry} (`cd4ml experiment start CHALLENGER`)")
    log_dir = log_dir or default_log_dir(registry)
    counts = Counts.from_feedback(experiment, read_records(log_dir, FEEDBACK_LOG))
    traffic = {arm: 0 for arm in experiment.arms}
    for p in read_records(log_dir, PREDICTIONS_LOG):
        if p.get("experiment") == experiment.id and p.get("version") in traffic:
            traffic[p["version"]] += len(p.get("predictions") or [])
    best_rate = max(a.mean for a in counts.arms.values())
    regret = sum(rows * (best_rate - counts.arms[arm].mean) for arm, rows in traffic.items())
    return Status(experiment, counts, traffic, counts.prob_best(), regret, counts.verdict())


def conclude(registry: str, log_dir: Optional[str] = None, metadata_path: Optional[str] = None,
             force_stop: bool = False, reason: str = "") -> Optional[Dict]:
    """End the experiment if the verdict is in (or `force_stop`): promote a winning challenger,
    remove the experiment file, record the decision with its evidence. None while undecided."""
    state = status(registry, log_dir)
    winner = state.winner
    if winner is None and not force_stop:
        return None
    evidence = state.as_dict()
    exp = state.experiment
    decision = None
    if winner is not None and winner != exp.champion:
        decision = promotion.promote(registry, winner, f"experiment {exp.id}: {winner} is best with P="
                                     f"{state.prob_best[winner]:.3f}", metadata_path, action="experiment")
    promotion.remove_file(os.path.join(registry, EXPERIMENT_FILE))
    action = "conclude" if winner is not None else "stop"
    why = reason or (f"{winner} is best with P={state.prob_best[winner]:.3f} after "
                     f"{state.counts.labelled:.0f} labelled rows" if winner else "stopped by an operator")
    _in_cards(registry, exp, f"experiment {action}" + (f": {winner} won" if winner else ""), why)
    execution_id = _record(metadata_path, registry, exp, action, winner=winner or "", evidence=evidence,
                           reason=why) if metadata_path else None
    return {"action": action, "winner": winner, "promoted": decision.version if decision else None,
            "evidence": evidence, "execution_id": execution_id, "reason": why}


def _in_cards(registry: str, exp: Experiment, action: str, reason: str):
    """The experiment in the model card of every arm (components/model_card.py)."""
    from components import model_card

    for arm in (exp.champion, *exp.challengers):
        model_card.append_decision(os.path.join(registry, arm),
                                   {"action": action, "user": promotion.user(), "reason": f"{exp.id}: {reason}",
                                    "arms": [exp.champion, *exp.challengers]}, promotion.write_atomic)


def _record(metadata_path: str, registry: str, exp: Experiment, action: str, winner: str = "",
            evidence: Optional[Dict] = None, reason: str = "") -> int:
    from cd4ml import mlmd
    from cd4ml.mlmd import records

    store = mlmd.open_store(metadata_path)
    inputs = {}
    linked = winner or (exp.challengers[0] if action == "start" else "")
    pushed = [p for p in mlmd.pushed_models(store) if p["version"] == linked] if linked else []
    if pushed:
        inputs["pushed_model"] = store.get_artifacts_by_id([pushed[-1]["pushed_model_id"]])[0]
    return records.put(store, records.EXPERIMENT, {
        "experiment_id": exp.id, "action": action, "champion": exp.champion,
        "challengers": ",".join(exp.challengers), "strategy": exp.strategy, "winner": winner,
        "evidence": json.dumps(evidence, sort_keys=True, default=str) if evidence else "",
        "reason": reason, "user": promotion.user(), "at": _now(), "registry": registry},
        context_name=registry, inputs=inputs)


def format_status(state: Status) -> str:
    doc = state.as_dict()
    exp = state.experiment
    lines = [f"experiment {exp.id} ({exp.strategy}, started {exp.started_at}): verdict after "
             f"{exp.min_feedback} labelled rows at P(best) >= {exp.confidence}",
             f"  {'arm':<14}{'role':<12}{'traffic':>9}{'labelled':>10}{'success':>9}{'live MAE':>10}{'P(best)':>9}"]
    for name, a in doc["arms"].items():
        mae = f"{a['live_mae']:.2f}" if a["live_mae"] is not None else "-"
        lines.append(f"  {name:<14}{a['role']:<12}{a['traffic_share']:>8.0%} {a['labelled_rows']:>9.0f}"
                     f"{a['success_rate']:>9.2f}{mae:>10}{a['prob_best']:>9.3f}")
    lines.append(f"  labelled rows {doc['labelled_rows']:.0f}; regret {doc['regret']:.1f} expected successes; "
                 + (f"verdict: {doc['verdict']} wins" if doc["verdict"] else "no verdict yet"))
    return "\n".join(lines)
