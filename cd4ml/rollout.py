"""Guarded rollout: a blessed version reaches users through a canary that live evidence promotes
or rolls back, with nobody watching.

Under CD4ML_ROLLOUT=guarded the pipeline pushes a version that says so in its MANIFEST, and the
servers do not serve it by themselves (components/registry.py servable). `step` (run by `cd4ml
rollout watch`, a loop or a CronJob, like the drift trigger) then:
- starts the newest waiting version (complete, blessed, approved where approval is required) as
  a canary: a `canary` experiment (serving/bandit.py) that routes `canary_share` of requests to
  it, and ROLLOUT.json says `canary`;
- reads the evidence from the shared logs (every replica writes them, so every replica's traffic
  counts and one decision holds for all): for the canary and for the serving version over the
  same requests (those the experiment routed), the share of refused or failed requests, p99
  latency, outlier rate, and live MAE from feedback;
- rolls the canary back the moment a guard fires (each compares the canary with the serving
  version, once both have `guard_min_rows`): ROLLOUT.json says `rolled_back` with the guard and
  the experiment file is removed, which every server sees within a second (its control poll);
- promotes it once `canary_min_rows` labelled rows say it is no worse than the serving version
  (P(its success rate >= the serving one's - promote_margin) >= promote_confidence, from the
  bandit's Beta posteriors): ROLLOUT.json says `promoted`, so it is the newest servable version.
Each decision is recorded in ML Metadata (cd4ml.Rollout, linked to the version's push) with its
evidence, appended to the version's model card, and raised as an alert. A person can still
`cd4ml rollout promote|abort`, pin, or roll back.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Dict, List, Optional

import numpy as np

from cd4ml import alerts, promotion
from cd4ml.contract import (CANARY, ERRORS_LOG, EXPERIMENT_FILE, FEEDBACK_LOG, PREDICTIONS_LOG, PROMOTED,
                            ROLLED_BACK, ROLLOUT_FILE, SUPERSEDED, WAITING, default_log_dir)
from cd4ml.logstore import read_records
from components import registry as reg
from pipelines.config import PipelineConfig
from serving import bandit


class RolloutError(ValueError):
    pass


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class ArmEvidence:
    requests: int = 0
    rows: int = 0
    errors: int = 0
    outliers: int = 0
    latencies: List[float] = dataclasses.field(default_factory=list)
    labelled_rows: int = 0
    live_mae: Optional[float] = None
    successes: float = 0.0
    trials: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / max(1, self.requests + self.errors)

    @property
    def p99_ms(self) -> Optional[float]:
        return float(np.percentile(self.latencies, 99)) if self.latencies else None

    @property
    def outlier_rate(self) -> float:
        return (self.outliers + 1) / (self.rows + 1)  # smoothed: no rows is no evidence either way

    def as_dict(self) -> Dict[str, object]:
        return {"requests": self.requests, "rows": self.rows, "errors": self.errors,
                "error_rate": round(self.error_rate, 4), "p99_ms": self.p99_ms and round(self.p99_ms, 2),
                "outlier_rate": round(self.outlier_rate, 4), "labelled_rows": self.labelled_rows,
                "live_mae": self.live_mae and round(self.live_mae, 3)}


P99_FLOOR_MS = 25.0  # a p99 latency guard fires only when the canary is also this much slower


def wilson_lower(k: float, n: float, z: float = 1.645) -> float:
    """The one-sided 95 % lower confidence bound of a rate of k in n (Wilson's score interval)."""
    if n <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, (centre - spread) / (1 + z * z / n)))


@dataclasses.dataclass
class Verdict:
    action: str                    # "rollback", "promote" or "wait"
    why: str
    guard: str = ""
    evidence: Dict[str, object] = dataclasses.field(default_factory=dict)


def evidence(experiment: bandit.Experiment, log_dir: str) -> Dict[str, ArmEvidence]:
    """Each arm's evidence over the requests the experiment routed (the same window for both)."""
    arms = {arm: ArmEvidence() for arm in experiment.arms}
    for p in read_records(log_dir, PREDICTIONS_LOG):
        arm = arms.get(p.get("version"))
        if arm is None or p.get("experiment") != experiment.id:
            continue
        arm.requests += 1
        arm.rows += len(p.get("predictions") or [])
        arm.outliers += int(p.get("outliers") or 0)
        if p.get("latency_ms") is not None:
            arm.latencies.append(float(p["latency_ms"]))
    for e in read_records(log_dir, ERRORS_LOG):
        if e.get("experiment") == experiment.id and e.get("version") in arms:
            arms[e["version"]].errors += 1
    counts = bandit.Counts.from_feedback(experiment, read_records(log_dir, FEEDBACK_LOG))
    for name, arm in counts.arms.items():
        arms[name].labelled_rows, arms[name].live_mae = arm.labelled_rows, arm.live_mae
        arms[name].successes, arms[name].trials = arm.successes, arm.trials
    return arms


def judge(config: PipelineConfig, experiment: bandit.Experiment, arms: Dict[str, ArmEvidence]) -> Verdict:
    """Roll back when a guard fires, promote when the evidence says no worse, else wait."""
    serving, canary = arms[experiment.champion], arms[experiment.challengers[0]]
    doc = {"serving": {"version": experiment.champion, **serving.as_dict()},
           "canary": {"version": experiment.challengers[0], **canary.as_dict()}}
    enough = config.guard_min_rows
    guards = []
    # Rates are judged by the canary's one-sided 95 % lower bound (Wilson): a few unlucky rows on a
    # small canary are no breach; a real one soon is.
    if canary.requests + canary.errors >= enough and \
            wilson_lower(canary.errors, canary.requests + canary.errors) - serving.error_rate > config.guard_error_rate:
        guards.append(("error_rate", f"canary refused or failed {canary.error_rate:.1%} of requests, the serving "
                                     f"version {serving.error_rate:.1%} (bound: +{config.guard_error_rate:.1%})"))
    # p99 over enough requests to have one (a newly loaded model's first calls are slow), and by a
    # margin a user would notice (P99_FLOOR_MS), not a sub-millisecond ratio.
    if min(len(canary.latencies), len(serving.latencies)) >= max(enough, 100) and \
            canary.p99_ms > config.guard_p99_ratio * max(serving.p99_ms, 1e-3) and \
            canary.p99_ms - serving.p99_ms > P99_FLOOR_MS:
        guards.append(("p99_latency_ratio", f"canary p99 {canary.p99_ms:.1f} ms, serving {serving.p99_ms:.1f} ms "
                                            f"(bound: {config.guard_p99_ratio}x)"))
    if min(canary.labelled_rows, serving.labelled_rows) >= enough and \
            canary.live_mae > config.guard_mae_ratio * max(serving.live_mae, 1e-6):
        guards.append(("live_mae_ratio", f"canary live MAE {canary.live_mae:.2f}, serving {serving.live_mae:.2f} "
                                         f"over {canary.labelled_rows} and {serving.labelled_rows} labelled rows "
                                         f"(bound: {config.guard_mae_ratio}x)"))
    # The rows of one request share a day and its weather: their outlier flags are not independent
    # draws, so the bound counts requests (a good canary that drew a few outlier-heavy requests was
    # rolled back when it counted rows).
    if min(canary.rows, serving.rows) >= enough and wilson_lower(
            canary.outliers / max(canary.rows, 1) * canary.requests, canary.requests) > \
            config.guard_outlier_ratio * serving.outlier_rate:
        guards.append(("outlier_rate_ratio", f"canary outlier rate {canary.outlier_rate:.1%}, serving "
                                             f"{serving.outlier_rate:.1%} (bound: {config.guard_outlier_ratio}x)"))
    if guards:
        return Verdict("rollback", "; ".join(why for _, why in guards), guards[0][0], doc)
    if canary.labelled_rows < config.canary_min_rows:
        return Verdict("wait", f"{canary.labelled_rows} of {config.canary_min_rows} labelled rows on the canary",
                       evidence=doc)
    rng = np.random.default_rng(0)
    draws = {name: rng.beta(1 + a.successes, 1 + a.trials - a.successes, 20000) for name, a in
             (("serving", serving), ("canary", canary))}
    p_no_worse = float(np.mean(draws["canary"] >= draws["serving"] - config.promote_margin))
    doc["p_no_worse"] = round(p_no_worse, 4)
    if p_no_worse >= config.promote_confidence:
        return Verdict("promote", f"no worse than the serving version: P = {p_no_worse:.3f} over "
                                  f"{canary.labelled_rows} labelled rows", evidence=doc)
    return Verdict("wait", f"P(no worse) = {p_no_worse:.3f} < {config.promote_confidence}", evidence=doc)


# --- the state in ROLLOUT.json ---------------------------------------------------------------------

def _write_state(registry: str, version: str, state: str, **fields):
    decided = reg.rollouts(registry)
    decided[version] = {"state": state, "at": _now(), **{k: v for k, v in fields.items() if v is not None}}
    promotion.write_atomic(os.path.join(registry, ROLLOUT_FILE),
                           json.dumps({"versions": decided}, indent=2, sort_keys=True))


def canary_running(registry: str) -> Optional[bandit.Experiment]:
    exp = bandit.read_experiment(registry)
    return exp if exp is not None and exp.strategy == bandit.CANARY else None


def waiting(registry: str) -> List[str]:
    """Guarded versions ready for a canary (complete, blessed, approved where required), oldest first."""
    return [v.version for v in promotion.list_versions(registry) if v.blessed_and_approved and v.rollout == WAITING]


@dataclasses.dataclass
class Step:
    action: str      # started, promoted, rolled_back, waiting, nothing
    version: str = ""
    why: str = ""
    guard: str = ""
    evidence: Dict[str, object] = dataclasses.field(default_factory=dict)
    execution_id: Optional[int] = None

    def line(self) -> str:
        return f"{self.action}{' ' + self.version if self.version else ''}: {self.why}"


def step(config: PipelineConfig, log_dir: Optional[str] = None) -> Step:
    """One look: decide on the running canary, or start the next one."""
    registry = config.registry
    log_dir = log_dir or default_log_dir(registry)
    exp = canary_running(registry)
    if exp is not None:
        verdict = judge(config, exp, evidence(exp, log_dir))
        if verdict.action == "rollback":
            return _end(config, exp, ROLLED_BACK, verdict.why, verdict.guard, verdict.evidence)
        if verdict.action == "promote":
            return _end(config, exp, PROMOTED, verdict.why, "", verdict.evidence)
        return Step("waiting", exp.challengers[0], verdict.why, evidence=verdict.evidence)
    if bandit.read_experiment(registry) is not None:
        return Step("nothing", why="a bandit experiment is running; canaries wait for its verdict")
    ready = waiting(registry)
    if not ready:
        return Step("nothing", why="no version waits for a canary")
    return start(config, ready[-1], superseded=ready[:-1])


def start(config: PipelineConfig, version: str, superseded: List[str] = (), reason: str = "") -> Step:
    registry = config.registry
    champion, _ = reg.target(registry)
    if champion is None:  # nothing serves yet: nothing to compare with, so the first version serves
        _write_state(registry, version, PROMOTED, reason="nothing was serving")
        return _decided(config, version, PROMOTED, "promoted", "the first version: nothing was serving to compare with")
    for old in superseded:
        _write_state(registry, old, SUPERSEDED, by=version)
    exp = bandit.Experiment(id=f"canary-{version}", champion=champion, challengers=(version,),
                            strategy=bandit.CANARY, share=config.canary_share,
                            min_feedback=config.canary_min_rows, started_at=_now(),
                            reason=reason or f"guarded rollout of {version}")
    bandit.Experiment.from_json(exp.to_json())  # the checks the servers apply
    _write_state(registry, version, CANARY, champion=champion, share=config.canary_share)
    promotion.write_atomic(os.path.join(registry, EXPERIMENT_FILE), exp.to_json())
    return _decided(config, version, CANARY, "started",
                    f"canary on {config.canary_share:.0%} of traffic beside {champion}", previous=champion)


def _end(config: PipelineConfig, exp: bandit.Experiment, state: str, why: str, guard: str,
         doc: Dict[str, object], user: str = "") -> Step:
    """Promote or roll back the canary: the rollout state first, then the experiment goes."""
    registry, version = config.registry, exp.challengers[0]
    _write_state(registry, version, state, guard=guard or None, reason=why, champion=exp.champion)
    promotion.remove_file(os.path.join(registry, EXPERIMENT_FILE))
    action = "promoted" if state == PROMOTED else "rolled_back"
    return _decided(config, version, state, action, why, guard=guard, evidence=doc, previous=exp.champion, user=user)


def _decided(config: PipelineConfig, version: str, state: str, action: str, why: str, guard: str = "",
             evidence: Optional[Dict] = None, previous: str = "", user: str = "") -> Step:
    """Record the decision: ML Metadata, the model card, an alert."""
    from components import model_card

    user = user or "cd4ml rollout"
    execution_id = record(config, version, action, why, guard, evidence or {}, previous, user)
    model_card.append_decision(os.path.join(config.registry, version),
                               {"action": f"rollout {action}", "user": user, "reason": why,
                                **({"guard": guard} if guard else {})}, promotion.write_atomic)
    kind = {"started": "canary_started", "promoted": "promoted", "rolled_back": "rolled_back"}[action]
    alerts.notify(config.home, kind, f"version {version}", f"version {version}: {action.replace('_', ' ')}"
                  + (f" by the {guard} guard" if guard else "") + f": {why}", guard=guard or None,
                  serving=previous or None, evidence=json.dumps(evidence, sort_keys=True) if evidence else None)
    return Step(action, version, why, guard, evidence or {}, execution_id)


def record(config: PipelineConfig, version: str, action: str, why: str, guard: str, doc: Dict, previous: str,
           user: str) -> int:
    from cd4ml import mlmd
    from cd4ml.mlmd import records

    store = mlmd.open_store(config.metadata_path)
    pushed = [p for p in mlmd.pushed_models(store) if p["version"] == version]
    inputs = {"pushed_model": store.get_artifacts_by_id([pushed[-1]["pushed_model_id"]])[0]} if pushed else {}
    return records.put(store, records.ROLLOUT, {
        "version": version, "action": action, "previous": previous, "guard": guard, "reason": why,
        "evidence": json.dumps(doc, sort_keys=True, default=str) if doc else "", "user": user, "at": _now(),
        "registry": config.registry}, context_name=config.registry, inputs=inputs)


def promote_now(config: PipelineConfig, version: str, reason: str) -> Step:
    """A person promotes the running canary (or a waiting version) without waiting for evidence."""
    return _by_hand(config, version, PROMOTED, reason or "promoted by hand", guard="")


def abort(config: PipelineConfig, version: str, reason: str) -> Step:
    """A person rolls back the running canary (or withdraws a waiting version)."""
    return _by_hand(config, version, ROLLED_BACK, reason or "rolled back by hand", guard="manual")


def _by_hand(config: PipelineConfig, version: str, state: str, reason: str, guard: str) -> Step:
    exp = canary_running(config.registry)
    if exp is not None and exp.challengers[0] == version:
        return _end(config, exp, state, reason, guard, {}, user=promotion.user())
    if version not in waiting(config.registry):
        raise RolloutError(f"version {version} is neither the running canary nor waiting for one")
    _write_state(config.registry, version, state, reason=reason, guard=guard or None)
    action = "promoted" if state == PROMOTED else "rolled_back"
    return _decided(config, version, state, action, reason, guard=guard, user=promotion.user())


def status(config: PipelineConfig, log_dir: Optional[str] = None) -> Dict[str, object]:
    registry = config.registry
    serving, why = reg.target(registry)
    doc: Dict[str, object] = {"serving": serving, "why": why, "policy": config.rollout,
                              "versions": reg.rollouts(registry), "waiting": waiting(registry), "canary": None}
    exp = canary_running(registry)
    if exp is not None:
        verdict = judge(config, exp, evidence(exp, log_dir or default_log_dir(registry)))
        doc["canary"] = {"version": exp.challengers[0], "share": exp.share, "started_at": exp.started_at,
                         "verdict": verdict.action, "why": verdict.why, "evidence": verdict.evidence}
    return doc
