"""Queries over ML Metadata that answer operators' questions, not raw MLMD calls.

A run is a `pipeline_run` context; each component execution belongs to it and to a `node`
context named `<pipeline>.<node id>`. Everything here goes through the MLMD client API (no SQL),
so it works the same on the embedded SQLite store and on a cluster's MySQL.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

STATE_NAMES = {
    metadata_store_pb2.Execution.UNKNOWN: "unknown",
    metadata_store_pb2.Execution.NEW: "new",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


def sqlite_config(path: str) -> metadata_store_pb2.ConnectionConfig:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return config


def open_store(path: str) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(sqlite_config(path))


@dataclasses.dataclass
class Step:
    node: str
    state: str
    seconds: float
    execution: metadata_store_pb2.Execution
    outputs: Dict[str, List[metadata_store_pb2.Artifact]]
    inputs: Dict[str, List[metadata_store_pb2.Artifact]]


def _key(event: metadata_store_pb2.Event) -> str:
    for step in event.path.steps:
        if step.HasField("key"):
            return step.key
    return ""


def run_steps(store: metadata_store.MetadataStore, run_id: str) -> List[Step]:
    """The executions of one pipeline run, in the order they started, with their artifacts."""
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        return []
    executions = sorted(store.get_executions_by_context(context.id),
                        key=lambda e: (e.create_time_since_epoch, e.id))
    events = store.get_events_by_execution_ids([e.id for e in executions])
    artifacts = {a.id: a for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in events}))}
    steps = []
    for execution in executions:
        node = _node_id(store, execution)
        outputs: Dict[str, List] = {}
        inputs: Dict[str, List] = {}
        for ev in events:
            if ev.execution_id != execution.id or ev.artifact_id not in artifacts:
                continue
            target = inputs if ev.type in (ev.INPUT, ev.DECLARED_INPUT) else outputs
            target.setdefault(_key(ev), []).append(artifacts[ev.artifact_id])
        seconds = max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000)
        steps.append(Step(node, STATE_NAMES.get(execution.last_known_state, "unknown"), seconds,
                          execution, outputs, inputs))
    return steps


def _node_id(store, execution) -> str:
    for ctx in store.get_contexts_by_execution(execution.id):
        if ctx.type == "node" or store.get_context_types_by_id([ctx.type_id])[0].name == "node":
            return ctx.name.split(".", 1)[-1]
    return execution.type


def prop(artifact: metadata_store_pb2.Artifact, name: str, default=None):
    """A (custom) property value of an artifact, whatever its value type."""
    for props in (artifact.custom_properties, artifact.properties):
        if name in props:
            value = props[name]
            kind = value.WhichOneof("value")
            if kind == "struct_value":
                from google.protobuf import json_format
                return json_format.MessageToDict(value.struct_value)
            return getattr(value, kind) if kind else default
    return default


def latest_run_id(store: metadata_store.MetadataStore) -> Optional[str]:
    runs = store.get_contexts_by_type("pipeline_run")
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id)).name if runs else None
