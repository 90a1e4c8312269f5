"""Our own records in ML Metadata: decisions and events that are not TFX component runs.

TFX records what its components did. What happens around the pipeline is recorded here, in the
same store, as executions of our own types, so one query answers "who served what, when and why":
a bucket object turned into a span (Drop), a promotion or rollback (Promotion), a retrain asked for
by the drift trigger (RetrainRequest), labelled serving traffic turned into a span (Harvest), a
bandit experiment between versions (Experiment), a guarded rollout's decision (Rollout).
Each type is declared once below; this module is the only one that registers, writes or reads them.

A type is registered with `can_add_fields`, so a newer cd4ml can add a property to a store that
older versions wrote. "Not registered yet" is MLMD's NotFoundError and nothing else: a dead MySQL
connection raises, it never looks like an empty history.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Tuple

from ml_metadata import errors, metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from cd4ml.mlmd.store import STATE_NAMES, plain, prop


@dataclasses.dataclass(frozen=True)
class RecordType:
    """An execution type of ours: its string and integer properties and the context it belongs to."""

    name: str
    strings: Tuple[str, ...]
    ints: Tuple[str, ...] = ()
    context: Optional[str] = None  # context type that groups the records (a bucket, a registry)

    @property
    def properties(self) -> Tuple[str, ...]:
        return self.strings + self.ints


# A bucket object the drop trigger claimed, turned into a span and trained on (or quarantined).
# The object's generation is a string: GCS generations (microsecond stamps, ~1.8e18) overflow the
# 32-bit int_value column of MLMD's MySQL schema. `generation` (int) is what older cd4ml wrote.
DROP = RecordType("cd4ml.Drop", context="cd4ml.Bucket",
                  strings=("bucket", "object", "outcome", "detail", "run_id", "version", "quarantine",
                           "object_generation"),
                  ints=("generation", "span"))
# An operator's (or the demo's) decision about which version serves.
PROMOTION = RecordType("cd4ml.Promotion", context="cd4ml.Registry",
                       strings=("action", "version", "previous", "reason", "user", "at", "registry"))
# A retrain the drift trigger asked for, with its evidence and outcome.
RETRAIN_REQUEST = RecordType("cd4ml.RetrainRequest",
                             strings=("trigger", "requested_at", "drift_ts", "drift_version", "drifted", "outcome",
                                      "run_id", "version", "reason", "labelled_file", "window"),
                             ints=("labelled_rows", "harvest_span"))

# Labelled serving traffic written into the data lake as a span (cd4ml/triggers/harvest.py): where
# it came from, how much, and what became of it. The harvested request ids are in `ledger`, a
# document beside the logs (MLMD's MySQL string column holds 64 KB, not thousands of ids).
HARVEST = RecordType("cd4ml.Harvest", context="cd4ml.LogStore",
                     strings=("log_source", "data_root", "span_dir", "ledger", "first_served", "last_served",
                              "versions", "problems", "outcome", "run_id", "version", "quarantine", "detail"),
                     ints=("span", "rows", "requests"))

# A bandit experiment between the served version and challengers (cd4ml/experiment.py): started,
# stopped, or concluded by its verdict, with the evidence (rows, rewards, live MAE, P(best) per arm).
EXPERIMENT = RecordType("cd4ml.Experiment", context="cd4ml.Registry",
                        strings=("experiment_id", "action", "champion", "challengers", "strategy", "winner",
                                 "evidence", "reason", "user", "at", "registry"))

# A guarded rollout's decision (cd4ml/rollout.py): a canary started, promoted or rolled back, by
# which guard, with the evidence of both versions over the same requests.
ROLLOUT = RecordType("cd4ml.Rollout", context="cd4ml.Registry",
                     strings=("version", "action", "previous", "guard", "reason", "evidence", "user", "at",
                              "registry"))

COMPLETE, RUNNING, FAILED = pb.Execution.COMPLETE, pb.Execution.RUNNING, pb.Execution.FAILED


def register(store: metadata_store.MetadataStore, rtype: RecordType) -> int:
    """The type's id, registering it (or its new properties) first."""
    ex_type = pb.ExecutionType(name=rtype.name)
    for name in rtype.strings:
        ex_type.properties[name] = pb.STRING
    for name in rtype.ints:
        ex_type.properties[name] = pb.INT
    return store.put_execution_type(ex_type, can_add_fields=True)


def context(store: metadata_store.MetadataStore, rtype: RecordType, name: str) -> pb.Context:
    """The context named `name` of the type's context type, created on first use."""
    type_id = store.put_context_type(pb.ContextType(name=rtype.context))
    found = store.get_context_by_type_and_name(rtype.context, name)
    if found is not None:
        return found
    ctx = pb.Context(type_id=type_id, name=name)
    try:
        [ctx.id] = store.put_contexts([ctx])
    except errors.AlreadyExistsError:  # another writer created it between the look-up and the put
        return store.get_context_by_type_and_name(rtype.context, name)
    return ctx


def _set(execution: pb.Execution, rtype: RecordType, values: Mapping[str, object]):
    for key, value in values.items():
        if value is None:
            continue
        if key not in rtype.properties:
            raise KeyError(f"{rtype.name} has no property {key!r} (declared: {', '.join(rtype.properties)})")
        if key in rtype.ints:
            execution.properties[key].int_value = int(value)
        else:
            execution.properties[key].string_value = str(value)


def put(store: metadata_store.MetadataStore, rtype: RecordType, values: Mapping[str, object], *,
        name: str = "", state: int = COMPLETE, context_name: str = "",
        inputs: Optional[Mapping[str, pb.Artifact]] = None) -> int:
    """Record one execution of the type; returns its id.

    `name` makes it unique within the type (MLMD refuses a second one with AlreadyExistsError,
    which is how a drop is claimed exactly once). `inputs` link it to artifacts by event key.
    """
    execution = pb.Execution(type_id=register(store, rtype), last_known_state=state)
    if name:
        execution.name = name
    _set(execution, rtype, values)
    events = []
    for key, artifact in (inputs or {}).items():
        event = pb.Event(type=pb.Event.INPUT)
        event.path.steps.add().key = key
        events.append((artifact, event))
    contexts = [context(store, rtype, context_name)] if context_name and rtype.context else []
    execution_id, _, _ = store.put_execution(execution, events, contexts)
    return execution_id


def update(store: metadata_store.MetadataStore, rtype: RecordType, execution_id: int,
           values: Mapping[str, object], state: Optional[int] = None) -> pb.Execution:
    """Set properties (and the state) of a recorded execution."""
    [execution] = store.get_executions_by_id([execution_id])
    _set(execution, rtype, values)
    if state is not None:
        execution.last_known_state = state
    store.put_execution(execution, [], [])
    return execution


def executions(store: metadata_store.MetadataStore, rtype: RecordType) -> List[pb.Execution]:
    """Every execution of the type, oldest first; [] when the type was never registered."""
    try:
        found = store.get_executions_by_type(rtype.name)
    except errors.NotFoundError:
        return []
    return sorted(found, key=lambda e: e.id)


def by_name(store: metadata_store.MetadataStore, rtype: RecordType, name: str) -> Optional[pb.Execution]:
    try:
        return store.get_execution_by_type_and_name(rtype.name, name)
    except errors.NotFoundError:
        return None


def as_dict(execution: pb.Execution, rtype: RecordType) -> Dict[str, object]:
    """Properties as plain values (missing ones as "" or 0), plus id, name and state."""
    row: Dict[str, object] = {key: plain(prop(execution, key, 0 if key in rtype.ints else ""))
                              for key in rtype.properties}
    row.update(id=execution.id, name=execution.name,
               state=STATE_NAMES.get(execution.last_known_state, "unknown"))
    return row


def generation(drop: Dict[str, object]) -> int:
    """A Drop record's object generation, whichever way it was written."""
    return int(drop["object_generation"]) if drop.get("object_generation") else int(drop.get("generation") or 0)


def read(store: metadata_store.MetadataStore, rtype: RecordType) -> List[Dict[str, object]]:
    """Every execution of the type as a dict, oldest first."""
    return [as_dict(e, rtype) for e in executions(store, rtype)]


def spans_used(store: metadata_store.MetadataStore) -> List[int]:
    """Span numbers a drop or a harvest ever took, placed or quarantined: never to be reused."""
    return sorted({int(r["span"]) for rtype in (DROP, HARVEST) for r in read(store, rtype) if r.get("span")})
