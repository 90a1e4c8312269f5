"""ML Metadata as a graph: artifacts, executions, and the events that join them.

An event says an execution read or wrote an artifact. A cached execution records the same input
and output artifacts as the execution that first produced them, so an artifact can have several
"producers"; lineage always follows the one that actually ran, and says which runs reused it.
"""

from __future__ import annotations

import json
from typing import Dict, List

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from cd4ml.contract import HAS_BASELINE, WINDOW_PROPERTY
from cd4ml.mlmd.store import STATE_NAMES, event_key, plain, prop, timestamp

INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
# Inputs that are not ancestry: the baseline a candidate was compared with (the Evaluator's and the
# explainer's `baseline_model`, the release's `baseline`) is a copy of the version serving; the
# provenance shows it as a leaf instead of walking what made it.
LEAF_INPUTS = ("baseline_model", "baseline")
RESOLVER_TYPE = "tfx.dsl.components.common.resolver.Resolver"


class Graph:
    """Cached look-ups over one store: type names, node ids and run ids of executions."""

    def __init__(self, store: metadata_store.MetadataStore):
        self.store = store
        self._artifact_types = {t.id: t.name for t in store.get_artifact_types()}
        self._execution_types = {t.id: t.name for t in store.get_execution_types()}
        self._context_types = {t.id: t.name for t in store.get_context_types()}
        self._artifacts: Dict[int, metadata_store_pb2.Artifact] = {}
        self._executions: Dict[int, metadata_store_pb2.Execution] = {}
        self._contexts: Dict[int, Dict[str, str]] = {}

    # -- objects ------------------------------------------------------------------------------
    @staticmethod
    def _cached(cache: Dict[int, object], ids, fetch) -> list:
        """The objects with these ids, fetching only those not seen yet."""
        missing = [i for i in set(ids) if i not in cache]
        if missing:
            cache.update((o.id, o) for o in fetch(missing))
        return [cache[i] for i in ids if i in cache]

    def artifacts(self, ids) -> List[metadata_store_pb2.Artifact]:
        return self._cached(self._artifacts, ids, self.store.get_artifacts_by_id)

    def executions(self, ids) -> List[metadata_store_pb2.Execution]:
        return self._cached(self._executions, ids, self.store.get_executions_by_id)

    def artifact_type(self, artifact) -> str:
        if artifact.type_id not in self._artifact_types:
            self._artifact_types = {t.id: t.name for t in self.store.get_artifact_types()}
        return self._artifact_types.get(artifact.type_id, artifact.type or "?")

    def execution_type(self, execution) -> str:
        if execution.type_id not in self._execution_types:
            self._execution_types = {t.id: t.name for t in self.store.get_execution_types()}
        return self._execution_types.get(execution.type_id, execution.type or "?")

    def contexts_of(self, execution_id: int) -> Dict[str, str]:
        """{context type name: context name} of an execution ('pipeline_run', 'node', ...)."""
        if execution_id not in self._contexts:
            found = {}
            for ctx in self.store.get_contexts_by_execution(execution_id):
                if ctx.type_id not in self._context_types:
                    self._context_types = {t.id: t.name for t in self.store.get_context_types()}
                found[self._context_types.get(ctx.type_id, "?")] = ctx.name
            self._contexts[execution_id] = found
        return self._contexts[execution_id]

    def node_of(self, execution) -> str:
        node = self.contexts_of(execution.id).get("node")
        return node.split(".", 1)[-1] if node else self.execution_type(execution).rsplit(".", 1)[-1]

    def run_of(self, execution) -> str:
        return self.contexts_of(execution.id).get("pipeline_run", "")

    # -- edges --------------------------------------------------------------------------------
    def producers(self, artifact_id: int) -> List[metadata_store_pb2.Execution]:
        """Executions that output the artifact: the one that ran first, then those that reused it."""
        events = [e for e in self.store.get_events_by_artifact_ids([artifact_id]) if e.type in OUTPUT_EVENTS]
        executions = [e for e in self.executions([ev.execution_id for ev in events])
                      if self.execution_type(e) != RESOLVER_TYPE]
        return sorted(executions, key=lambda e: (e.last_known_state != metadata_store_pb2.Execution.COMPLETE,
                                                 e.create_time_since_epoch, e.id))

    def consumers(self, artifact_id: int) -> List[metadata_store_pb2.Execution]:
        events = [e for e in self.store.get_events_by_artifact_ids([artifact_id]) if e.type in INPUT_EVENTS]
        return self.executions(sorted({ev.execution_id for ev in events}))

    def io(self, execution_id: int, kinds) -> Dict[str, List[metadata_store_pb2.Artifact]]:
        """{event key: [artifacts]} of an execution's inputs (kinds=INPUT_EVENTS) or outputs.

        A training window (components/window.py) is assembled from earlier spans' examples that
        it names by URI, not as ML Metadata inputs: they are listed among its inputs here, so
        that every walk of the graph reaches the spans a model was trained on."""
        events = [e for e in self.store.get_events_by_execution_ids([execution_id])
                  if e.type in kinds or (kinds == INPUT_EVENTS and e.type in OUTPUT_EVENTS)]
        by_id = {a.id: a for a in self.artifacts([ev.artifact_id for ev in events])}
        result: Dict[str, List] = {}
        for ev in events:
            if ev.artifact_id in by_id and ev.type in kinds:
                result.setdefault(event_key(ev), []).append(by_id[ev.artifact_id])
        if kinds == INPUT_EVENTS and "examples" in result:
            outputs = [by_id[ev.artifact_id] for ev in events if ev.type in OUTPUT_EVENTS and ev.artifact_id in by_id]
            for output in outputs:
                known = {a.id for a in result["examples"]}
                result["examples"] += [a for a in self.window_sources(output) if a.id not in known]
        return result

    @staticmethod
    def is_baseline(artifact) -> bool:
        """A baseline a candidate was really compared with: not ServingBaseline's empty artifact
        for "nothing was served yet"."""
        return prop(artifact, HAS_BASELINE, 1) != 0

    def window_sources(self, artifact) -> List[metadata_store_pb2.Artifact]:
        """The Examples a window artifact was assembled from, newest span first ([] otherwise)."""
        text = prop(artifact, WINDOW_PROPERTY, "")
        found = []
        for entry in (json.loads(text) if text else []):
            same = self.store.get_artifacts_by_uri(entry["examples"])
            found += sorted((a for a in same if self.artifact_type(a) == "Examples"), key=lambda a: a.id)[:1]
        return found



def artifact_dict(graph: Graph, artifact) -> Dict[str, object]:
    props = {}
    for name in list(artifact.properties) + list(artifact.custom_properties):
        if name in ("tfx_version", "is_external"):
            continue
        props[name] = plain(prop(artifact, name))
    return {"id": artifact.id, "type": graph.artifact_type(artifact), "uri": artifact.uri,
            "created": timestamp(artifact.create_time_since_epoch), "properties": props}


def execution_dict(graph: Graph, execution) -> Dict[str, object]:
    props = {}
    for name in list(execution.properties) + list(execution.custom_properties):
        value = plain(prop(execution, name))
        if isinstance(value, str) and value[:1] in "{[" and len(value) > 2:
            try:
                value = json.loads(value)
            except ValueError:
                pass
        props[name] = value
    seconds = max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000)
    return {"id": execution.id, "node": graph.node_of(execution), "type": graph.execution_type(execution),
            "state": STATE_NAMES.get(execution.last_known_state, "unknown"), "run_id": graph.run_of(execution),
            "started": timestamp(execution.create_time_since_epoch), "seconds": round(seconds, 3),
            "properties": props}


# -- runs -------------------------------------------------------------------------------------
