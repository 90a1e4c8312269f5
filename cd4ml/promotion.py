"""The model registry seen by operators: list versions, pin one (promote), roll back, unpin.

Registry layout (components/release.py, components/registry.py): `<registry>/<version>/`, complete
once MANIFEST.json exists. The server serves the version named in `<registry>/SERVING.json`, else
the newest complete one, and re-reads the registry every few seconds: writing the pin file is
how `promote` and `rollback` take effect without a restart.

Every decision is also recorded in ML Metadata (cd4ml.mlmd.records.PROMOTION: action, version,
previous, reason, user) attributed to a `cd4ml.Registry` context named by the registry path, with
the version's PushedModel artifact as its input. So "who served what, when and why" is answered
from the same store as the lineage. A version that store never saw pushed (pushed from another
store, or copied by hand) is recorded without that link, and the decision says so.

No TensorFlow here for local registries (plain files); gs:// registries go through tf.io.gfile.
"""

from __future__ import annotations

import dataclasses
import datetime
import getpass
import json
import os
from typing import Dict, List, Optional

from cd4ml.contract import (APPROVAL_FILE, APPROVED, EVALUATION_FILE, MAE, MANIFEST, OVERALL_SLICE, PENDING,
                            PIN_FILE, PROMOTED, REJECTED, RMSE, SHADOW_FILE)
from components import model_card
from components.registry import approval as _approval, order as _order, read_shadow
from components.registry import rollout_state as _rollout_state, rollouts as _rollouts
from components.registry import read_text as _read, remote as _remote, target as serving_target, versions as _versions


class PromotionError(ValueError):
    pass


# --- file access: reads and the serving rule come from components.registry (one statement of it) --

def write_atomic(path: str, text: str):
    tmp = path + ".tmp"
    if _remote(path):
        import tensorflow as tf
        with tf.io.gfile.GFile(tmp, "w") as fh:
            fh.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        return
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def remove_file(path: str):
    if _remote(path):
        import tensorflow as tf
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    elif os.path.exists(path):
        os.remove(path)


# --- versions ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Version:
    version: str
    complete: bool
    created: str = ""
    span: Optional[int] = None
    metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    blessed: Optional[bool] = None
    run_id: str = ""
    serving: bool = False
    why: str = ""
    approval: Optional[str] = None  # None (not needed), pending, approved or rejected
    rollout: Optional[str] = None   # None (pushed immediate), or a guarded version's state (cd4ml/rollout.py)

    @property
    def blessed_and_approved(self) -> bool:
        return self.complete and self.blessed is not False and self.approval in (None, APPROVED)

    @property
    def good(self) -> bool:
        """Fit to serve: blessed, approved where needed, and a guarded version only once promoted
        (a rollback never lands on a canary that was rolled back, or one never tried)."""
        return self.blessed_and_approved and self.rollout in (None, PROMOTED)


def _json(path: str) -> Dict:
    try:
        return json.loads(_read(path))
    except (OSError, ValueError):
        return {}


def list_versions(registry: str, metadata_path: Optional[str] = None) -> List[Version]:
    """Every version directory, oldest first, with what the server would do with it."""
    names = _versions(registry)
    runs = _runs_by_version(metadata_path) if metadata_path else {}
    out = []
    for name in names:
        base = os.path.join(registry, name)
        manifest = _json(os.path.join(base, MANIFEST))
        evaluation = _json(os.path.join(base, EVALUATION_FILE))
        complete = bool(manifest)
        out.append(Version(
            version=name, complete=complete, created=manifest.get("created", ""),
            span=manifest.get("span") or runs.get(name, {}).get("span"),
            metrics=manifest.get("metrics") or evaluation.get("slices", {}).get(OVERALL_SLICE, {}),
            blessed=evaluation.get("blessed") if evaluation else (True if complete else None),
            run_id=runs.get(name, {}).get("run_id", ""), approval=_approval(registry, name) if complete else None))
    decided = _rollouts(registry)
    for v in out:
        v.rollout = _rollout_state(registry, v.version, decided) if v.complete else None
    serving, why = serving_target(registry)
    for v in out:
        if v.version == serving:
            v.serving, v.why = True, why
    return out


def _runs_by_version(metadata_path: str) -> Dict[str, Dict]:
    """{version: {run_id, pushed_model_id}} from ML Metadata; {} when there is no store yet."""
    from cd4ml import mlmd

    if not mlmd.exists(metadata_path):
        return {}
    return {m["version"]: {"run_id": m.get("run_id", ""), "pushed_model_id": m.get("pushed_model_id")}
            for m in mlmd.pushed_models(mlmd.open_store(metadata_path))}


# --- decisions --------------------------------------------------------------------------------

@dataclasses.dataclass
class Decision:
    action: str          # promote | rollback | unpin | shadow | unshadow
    version: Optional[str]
    previous: Optional[str]
    reason: str
    at: str
    execution_id: Optional[int] = None
    note: str = ""  # e.g. why the record has no link to a PushedModel


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def promote(registry: str, version: str, reason: str = "", metadata_path: Optional[str] = None,
            action: str = "promote", force: bool = False) -> Decision:
    """Pin `version`: the server switches to it at its next registry poll."""
    versions = {v.version: v for v in list_versions(registry)}
    if version not in versions:
        raise PromotionError(f"version {version} is not in {registry} (have {', '.join(versions) or 'none'})")
    target = versions[version]
    if not target.complete:
        raise PromotionError(f"version {version} is incomplete (no {MANIFEST}); the server would refuse it")
    if target.blessed is False and not force:
        raise PromotionError(f"version {version} was not blessed by the Evaluator; use --force to pin it anyway")
    if target.approval in (PENDING, REJECTED) and not force and action not in ("approve", "experiment"):
        raise PromotionError(f"version {version} is {target.approval} approval: `cd4ml approve {version}` "
                             f"serves it (or --force)")
    previous, _ = serving_target(registry)
    decision = Decision(action, version, previous, reason or action, _now())
    write_atomic(os.path.join(registry, PIN_FILE), json.dumps(
        {"version": version, "reason": decision.reason, "at": decision.at, "action": action,
         "previous": previous}, indent=2, sort_keys=True))
    _recorded(registry, decision, metadata_path)
    return decision


def rollback(registry: str, reason: str = "", metadata_path: Optional[str] = None) -> Decision:
    """Pin the newest good (complete, blessed) version older than the one being served."""
    versions = list_versions(registry)
    current, _ = serving_target(registry)
    if current is None:
        raise PromotionError(f"nothing is being served from {registry}; nothing to roll back")
    names = [v.version for v in versions]
    older = [v for v in versions if v.good and current in names
             and _order(v.version) < _order(current)]
    if not older:
        raise PromotionError(f"no good version older than {current} in {registry}")
    return promote(registry, older[-1].version, reason or f"rollback from {current}", metadata_path,
                   action="rollback")


def shadow(registry: str, version: Optional[str], reason: str = "",
           metadata_path: Optional[str] = None) -> Decision:
    """Score `version` beside the served one on live traffic without changing any answer
    (None stops the shadow). Both predictions are logged; `cd4ml compare` reports their live MAE."""
    previous = read_shadow(registry)
    path = os.path.join(registry, SHADOW_FILE)
    if version is None:
        remove_file(path)
        decision = Decision("unshadow", None, previous, reason or "stop the shadow", _now())
    else:
        known = {v.version: v for v in list_versions(registry)}
        if version not in known or not known[version].complete:
            raise PromotionError(f"version {version} is not a complete version in {registry}")
        decision = Decision("shadow", version, previous, reason or "shadow", _now())
        write_atomic(path, json.dumps({"version": version, "reason": decision.reason, "at": decision.at},
                                       indent=2, sort_keys=True))
    _recorded(registry, decision, metadata_path)
    return decision


def unpin(registry: str, reason: str = "", metadata_path: Optional[str] = None) -> Decision:
    """Remove the pin: the server goes back to the newest complete version (roll forward)."""
    previous, _ = serving_target(registry)
    remove_file(os.path.join(registry, PIN_FILE))
    version, _ = serving_target(registry)
    decision = Decision("unpin", version, previous, reason or "serve the newest version", _now())
    _recorded(registry, decision, metadata_path)
    return decision


def pending(registry: str) -> List[Version]:
    """Blessed versions pushed under CD4ML_PROMOTION=manual that wait for a person's decision."""
    return [v for v in list_versions(registry) if v.complete and v.approval == PENDING]


def approve(registry: str, version: str, reason: str, metadata_path: Optional[str] = None,
            reject: bool = False) -> Decision:
    """A person's decision on a waiting version: approved, it serves (pinned if a pin or a newer
    version would otherwise win); rejected, the server never picks it. Who, when and why go to
    `<version>/APPROVAL.json` and to ML Metadata."""
    if not reason:
        raise PromotionError("a decision needs --reason: it is recorded with who and when")
    waiting = {v.version: v for v in list_versions(registry)}
    if version not in waiting or waiting[version].approval != PENDING:
        state = waiting[version].approval or "needs no approval" if version in waiting else "is not in the registry"
        raise PromotionError(f"version {version} is not waiting for approval ({state}); waiting: "
                             f"{', '.join(v.version for v in pending(registry)) or 'none'}")
    action = "reject" if reject else "approve"
    previous, _ = serving_target(registry)
    decision = Decision(action, version, previous, reason, _now())
    write_atomic(os.path.join(registry, version, APPROVAL_FILE), json.dumps(
        {"decision": REJECTED if reject else APPROVED, "user": user(), "at": decision.at, "reason": reason},
        indent=2, sort_keys=True))
    if not reject and serving_target(registry)[0] != version:
        return promote(registry, version, reason, metadata_path, action="approve")
    _recorded(registry, decision, metadata_path)
    return decision


def _recorded(registry: str, decision: Decision, metadata_path: Optional[str]):
    """The decision in the model card of each version it concerns (components/model_card.py), and
    in ML Metadata when there is a store."""
    entry = {"action": decision.action, "user": user(), "reason": decision.reason, "at": decision.at}
    if decision.version:
        model_card.append_decision(os.path.join(registry, decision.version),
                                   dict(entry, previous=decision.previous or ""), write_atomic)
    if decision.previous and decision.previous != decision.version:
        model_card.append_decision(os.path.join(registry, decision.previous),
                                   dict(entry, action=f"{decision.action}: {decision.version or 'none'} instead"),
                                   write_atomic)
    if metadata_path:
        decision.execution_id = record(metadata_path, registry, decision)


def record(metadata_path: str, registry: str, decision: Decision) -> int:
    """The decision as a Promotion record in MLMD, linked to the version's PushedModel."""
    from cd4ml import mlmd
    from cd4ml.mlmd import records

    store = mlmd.open_store(metadata_path)
    inputs = {}
    if decision.version:
        pushed = [p for p in mlmd.pushed_models(store) if p["version"] == decision.version]
        if pushed:
            inputs["pushed_model"] = store.get_artifacts_by_id([pushed[-1]["pushed_model_id"]])[0]
        else:
            decision.note = (f"ML Metadata at {mlmd.describe(metadata_path)} has no push of version "
                             f"{decision.version}: the decision is recorded without a link to its model")
    values = {"action": decision.action, "version": decision.version or "", "previous": decision.previous or "",
              "reason": decision.reason, "user": user(), "at": decision.at, "registry": registry}
    return records.put(store, records.PROMOTION, values, context_name=registry, inputs=inputs)


def history(metadata_path: str, registry: Optional[str] = None) -> List[Dict[str, object]]:
    """Every promotion/rollback/unpin/shadow decision recorded in MLMD, oldest first."""
    from cd4ml import mlmd
    from cd4ml.mlmd import records

    if not mlmd.exists(metadata_path):
        return []
    rows = records.read(mlmd.open_store(metadata_path), records.PROMOTION)
    return [row for row in rows if registry is None or row["registry"] == registry]


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return os.environ.get("USER", "unknown")


def format_versions(versions: List[Version]) -> str:
    if not versions:
        return "no versions in the registry"
    lines = [f"{'':2}{'version':<12} {'span':>4} {'MAE':>8} {'RMSE':>8} {'blessed':>7}  {'created':<25} run"]
    for v in versions:
        mae = v.metrics.get(MAE)
        rmse = v.metrics.get(RMSE)
        mark = "*" if v.serving else " "
        state = ("yes" if v.blessed else "NO" if v.blessed is False else "?") if v.complete else "incomplete"
        if v.approval in (PENDING, REJECTED):
            state = {PENDING: "waiting", REJECTED: "rejected"}[v.approval]
        elif v.rollout not in (None, PROMOTED):  # guarded rollout: waiting, canary, rolled_back, superseded
            state = v.rollout.replace("_", " ")
        mae_text = f"{mae:.2f}" if mae is not None else "-"
        rmse_text = f"{rmse:.2f}" if rmse is not None else "-"
        lines.append(f"{mark} {v.version:<12} {v.span if v.span else '-':>4} {mae_text:>8} {rmse_text:>8} "
                     f"{state:>7}  {v.created:<25} {v.run_id}")
    serving = [v for v in versions if v.serving]
    if serving:
        lines.append(f"* served: {serving[0].version} ({serving[0].why})")
    served_mae = serving[0].metrics.get(MAE) if serving else None
    for v in versions:
        if v.approval == PENDING:
            mae = v.metrics.get(MAE)
            versus = (f"MAE {mae:.2f} vs {served_mae:.2f} of the served version ({mae - served_mae:+.2f})"
                      if mae is not None and served_mae is not None else "no comparable evaluation")
            lines.append(f"waiting for approval: {v.version} (blessed; {versus}): "
                         f"`cd4ml approve {v.version} --reason ...` or `cd4ml reject {v.version} --reason ...`")
    return "\n".join(lines)
