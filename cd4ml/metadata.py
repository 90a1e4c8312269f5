"""Queries over ML Metadata that answer operators' questions, not raw MLMD calls.

A run is a `pipeline_run` context; each component execution belongs to it and to a `node`
context named `<pipeline>.<node id>`. Everything here goes through the MLMD client API (no SQL),
so it works the same on the embedded SQLite store and on a cluster's MySQL.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
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


def connection_config(spec: str) -> metadata_store_pb2.ConnectionConfig:
    """The MLMD connection for CD4ML_METADATA_PATH: a SQLite file (the embedded default) or
    `mysql://user:password@host:port/database` (a shared store, as on a Kubeflow cluster)."""
    if not spec.startswith("mysql://"):
        return sqlite_config(spec)
    url = urllib.parse.urlparse(spec)
    config = metadata_store_pb2.ConnectionConfig()
    config.mysql.host = url.hostname or "localhost"
    config.mysql.port = url.port or 3306
    config.mysql.database = url.path.lstrip("/")
    config.mysql.user = urllib.parse.unquote(url.username or "")
    config.mysql.password = urllib.parse.unquote(url.password or "")
    return config


def open_store(spec: str) -> metadata_store.MetadataStore:
    return metadata_store.MetadataStore(connection_config(spec))


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
    """The executions of one pipeline run, in the order they started, with their artifacts.

    State: ran, cached, failed, running, ... and "resolved" for Resolver nodes (lookups)."""
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
        state = STATE_NAMES.get(execution.last_known_state, "unknown")
        if state == "ran" and execution.type.endswith(".Resolver"):
            state = "resolved"  # a Resolver only looks artifacts up: it always "runs", it is not work
        steps.append(Step(node, state, seconds, execution, outputs, inputs))
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


# ---------------------------------------------------------------------------------------------
# Lineage: runs, models and the provenance of a pushed version.
#
# ML Metadata records a graph: artifacts, executions, and events (an execution read or wrote an
# artifact). A cached execution records the same input and output artifacts as the execution
# that first produced them, so an artifact can have several "producers"; provenance always
# follows the one that actually ran, and says which runs reused it.
# ---------------------------------------------------------------------------------------------

INPUT_EVENTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
# Inputs that are not ancestry: the baseline a candidate was compared with came from an earlier
# run; the provenance shows it as a leaf instead of walking the previous run's whole history.
LEAF_INPUTS = ("baseline_model",)
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
    def artifacts(self, ids) -> List[metadata_store_pb2.Artifact]:
        missing = [i for i in set(ids) if i not in self._artifacts]
        if missing:
            for a in self.store.get_artifacts_by_id(missing):
                self._artifacts[a.id] = a
        return [self._artifacts[i] for i in ids if i in self._artifacts]

    def executions(self, ids) -> List[metadata_store_pb2.Execution]:
        missing = [i for i in set(ids) if i not in self._executions]
        if missing:
            for e in self.store.get_executions_by_id(missing):
                self._executions[e.id] = e
        return [self._executions[i] for i in ids if i in self._executions]

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
        """{event key: [artifacts]} of an execution's inputs (kinds=INPUT_EVENTS) or outputs."""
        events = [e for e in self.store.get_events_by_execution_ids([execution_id]) if e.type in kinds]
        by_id = {a.id: a for a in self.artifacts([ev.artifact_id for ev in events])}
        result: Dict[str, List] = {}
        for ev in events:
            if ev.artifact_id in by_id:
                result.setdefault(_key(ev), []).append(by_id[ev.artifact_id])
        return result


def _ms(value: int) -> str:
    import datetime
    if not value:
        return ""
    return datetime.datetime.fromtimestamp(value / 1000, datetime.timezone.utc).isoformat(timespec="seconds")


def _plain(value):
    """Property values made JSON-friendly (struct values decoded, bytes as text)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def artifact_dict(graph: Graph, artifact) -> Dict[str, object]:
    props = {}
    for name in list(artifact.properties) + list(artifact.custom_properties):
        if name in ("tfx_version", "is_external"):
            continue
        props[name] = _plain(prop(artifact, name))
    return {"id": artifact.id, "type": graph.artifact_type(artifact), "uri": artifact.uri,
            "created": _ms(artifact.create_time_since_epoch), "properties": props}


def execution_dict(graph: Graph, execution) -> Dict[str, object]:
    props = {}
    for name in list(execution.properties) + list(execution.custom_properties):
        value = _plain(prop(execution, name))
        if isinstance(value, str) and value[:1] in "{[" and len(value) > 2:
            try:
                value = json.loads(value)
            except ValueError:
                pass
        props[name] = value
    seconds = max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000)
    return {"id": execution.id, "node": graph.node_of(execution), "type": graph.execution_type(execution),
            "state": STATE_NAMES.get(execution.last_known_state, "unknown"), "run_id": graph.run_of(execution),
            "started": _ms(execution.create_time_since_epoch), "seconds": round(seconds, 3),
            "properties": props}


# -- runs -------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    run_id: str
    started: str
    seconds: float
    status: str                  # complete | failed | running | empty
    steps: List[Step]
    pushed_version: str = ""
    pushed_path: str = ""
    new_push: bool = False
    blessed: Optional[bool] = None
    span: Optional[int] = None

    @property
    def ran(self) -> List[str]:
        return [s.node for s in self.steps if s.state == "ran"]

    @property
    def cached(self) -> List[str]:
        return [s.node for s in self.steps if s.state == "cached"]

    @property
    def failed(self) -> List[str]:
        return [s.node for s in self.steps if s.state == "failed"]

    def to_dict(self) -> Dict[str, object]:
        return {"run_id": self.run_id, "started": self.started, "seconds": self.seconds,
                "status": self.status, "ran": self.ran, "cached": self.cached, "failed": self.failed,
                "span": self.span, "blessed": self.blessed, "pushed_version": self.pushed_version,
                "new_push": self.new_push,
                "steps": [{"node": s.node, "state": s.state, "seconds": round(s.seconds, 3),
                           "execution_id": s.execution.id} for s in self.steps]}


def run_ids(store: metadata_store.MetadataStore) -> List[str]:
    """Every pipeline run recorded, oldest first."""
    runs = store.get_contexts_by_type("pipeline_run")
    return [c.name for c in sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))]


def get_run(store: metadata_store.MetadataStore, run_id: str) -> Optional[Run]:
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        return None
    steps = run_steps(store, run_id)
    states = {s.state for s in steps}
    if not steps:
        status = "empty"
    elif "failed" in states:
        status = "failed"
    elif states & {"running", "new"}:
        status = "running"
    else:
        status = "complete"
    if steps:
        began = min(s.execution.create_time_since_epoch for s in steps)
        ended = max(s.execution.last_update_time_since_epoch for s in steps)
    else:
        began = ended = context.create_time_since_epoch
    run = Run(run_id=run_id, started=_ms(began), seconds=round(max(0, ended - began) / 1000, 2),
              status=status, steps=steps)
    for step in steps:
        if step.node.endswith("ExampleGen") and step.outputs.get("examples"):
            run.span = prop(step.outputs["examples"][0], "span")
        if step.node == "Evaluator" and step.outputs.get("blessing"):
            run.blessed = prop(step.outputs["blessing"][0], "blessed") == 1
        if step.node == "Pusher" and step.outputs.get("pushed_model"):
            pushed = step.outputs["pushed_model"][0]
            if prop(pushed, "pushed") == 1:
                run.pushed_version = str(prop(pushed, "pushed_version", ""))
                run.pushed_path = str(prop(pushed, "pushed_destination", ""))
                run.new_push = step.state == "ran"
    return run


def list_runs(store: metadata_store.MetadataStore) -> List[Run]:
    """Every run, oldest first, with its component executions, state and timing."""
    return [r for r in (get_run(store, run_id) for run_id in run_ids(store)) if r is not None]


# -- models -----------------------------------------------------------------------------------

def _latest(artifacts):
    return max(artifacts, key=lambda a: (a.create_time_since_epoch, a.id)) if artifacts else None


def pushed_models(store: metadata_store.MetadataStore) -> List[Dict[str, object]]:
    """Every version pushed to the registry, oldest first: version, destination, model, run."""
    graph = Graph(store)
    found = []
    for pushed in store.get_artifacts_by_type("PushedModel"):
        if prop(pushed, "pushed") != 1:
            continue
        producers = graph.producers(pushed.id)
        pusher = producers[0] if producers else None
        model = None
        if pusher is not None:
            models = graph.io(pusher.id, INPUT_EVENTS).get("model", [])
            model = models[0] if models else None
        found.append({
            "version": str(prop(pushed, "pushed_version", "")),
            "destination": prop(pushed, "pushed_destination", ""),
            "pushed_model_id": pushed.id,
            "model_id": model.id if model else None,
            "model_uri": model.uri if model else "",
            "run_id": graph.run_of(pusher) if pusher else "",
            "created": _ms(pushed.create_time_since_epoch),
            "_order": (pushed.create_time_since_epoch, pushed.id),
        })
    found.sort(key=lambda d: d.pop("_order"))
    return found


def latest_pushed_model(store: metadata_store.MetadataStore) -> Optional[Dict[str, object]]:
    models = pushed_models(store)
    return models[-1] if models else None


def latest_blessed_model(store: metadata_store.MetadataStore) -> Optional[Dict[str, object]]:
    """The model of the newest positive ModelBlessing: model id and uri, blessing, run."""
    graph = Graph(store)
    blessings = [b for b in store.get_artifacts_by_type("ModelBlessing") if prop(b, "blessed") == 1]
    blessing = _latest(blessings)
    if blessing is None:
        return None
    model_id = prop(blessing, "current_model_id")
    models = graph.artifacts([model_id]) if model_id else []
    producers = graph.producers(blessing.id)
    return {"model_id": model_id, "model_uri": models[0].uri if models else prop(blessing, "current_model", ""),
            "blessing_id": blessing.id, "created": _ms(blessing.create_time_since_epoch),
            "run_id": graph.run_of(producers[0]) if producers else ""}


def models_from_span(store: metadata_store.MetadataStore, span: int) -> List[Dict[str, object]]:
    """Models trained on a span's examples (following Transform), blessed or not, with versions."""
    graph = Graph(store)
    examples = [a for a in store.get_artifacts_by_type("Examples") if prop(a, "span") == span]
    seen_executions, seen_artifacts, models = set(), set(), {}
    frontier = [a.id for a in examples]
    while frontier:
        artifact_id = frontier.pop()
        if artifact_id in seen_artifacts:
            continue
        seen_artifacts.add(artifact_id)
        for execution in graph.consumers(artifact_id):
            if execution.id in seen_executions:
                continue
            seen_executions.add(execution.id)
            # Only training carries a span forward; evaluation, pushing and bundling read a model
            # that already exists (the baseline included), so the walk stops there.
            if graph.node_of(execution) not in ("Transform", "Trainer") and \
                    graph.execution_type(execution).rsplit(".", 1)[-1] not in ("Transform", "Trainer"):
                continue
            for outputs in graph.io(execution.id, OUTPUT_EVENTS).values():
                for artifact in outputs:
                    if graph.artifact_type(artifact) == "Model":
                        models[artifact.id] = (artifact, execution)
                    else:
                        frontier.append(artifact.id)
    versions = {}
    for pushed in pushed_models(store):
        versions.setdefault(pushed["model_id"], []).append(pushed["version"])
    blessed = {}
    for blessing in store.get_artifacts_by_type("ModelBlessing"):
        model_id = prop(blessing, "current_model_id")
        if model_id is not None:
            blessed[model_id] = blessed.get(model_id, False) or prop(blessing, "blessed") == 1
    result = []
    for model_id, (model, trainer) in sorted(models.items()):
        if trainer.last_known_state != metadata_store_pb2.Execution.COMPLETE:
            producers = graph.producers(model_id)
            trainer = producers[0] if producers else trainer
        result.append({"model_id": model_id, "uri": model.uri, "span": span,
                       "run_id": graph.run_of(trainer), "trained": _ms(model.create_time_since_epoch),
                       "blessed": blessed.get(model_id), "versions": versions.get(model_id, [])})
    return result


# -- provenance -------------------------------------------------------------------------------

def _find_release(store, graph: Graph, version: str):
    for release in store.get_artifacts_by_type("cd4ml.ModelRelease"):
        if str(prop(release, "version", "")) == version:
            return release
    return None


def provenance(store: metadata_store.MetadataStore, version: Optional[str] = None) -> Optional[Dict[str, object]]:
    """Where a pushed version came from, by walking ML Metadata backwards from it.

    Returns {'version', 'root', 'artifacts': {id: ...}, 'executions': {id: ...}, 'summary': {...}}
    where every artifact names the execution that produced it ('produced_by') and every execution
    its inputs ({key: [artifact ids]}), and 'summary' answers the usual questions by role (span
    files, schema, statistics, anomalies, transform graph, trainer, evaluation, blessing,
    detectors, pusher, release). None when the version was never pushed (latest when omitted).
    """
    pushed_list = pushed_models(store)
    if not pushed_list:
        return None
    if version is None:
        entry = pushed_list[-1]
    else:
        matches = [p for p in pushed_list if p["version"] == str(version)]
        if not matches:
            return None
        entry = matches[-1]
    graph = Graph(store)
    root = _find_release(store, graph, entry["version"])
    if root is None:
        root = graph.artifacts([entry["pushed_model_id"]])[0]

    artifacts: Dict[int, Dict] = {}
    executions: Dict[int, Dict] = {}
    frontier = [root]
    while frontier:
        artifact = frontier.pop()
        if artifact.id in artifacts:
            continue
        info = artifact_dict(graph, artifact)
        artifacts[artifact.id] = info
        producers = graph.producers(artifact.id)
        info["produced_by"] = producers[0].id if producers else None
        info["reused_by_runs"] = sorted({graph.run_of(p) for p in producers[1:]} - {graph.run_of(producers[0])}) \
            if producers else []
        if not producers or producers[0].id in executions:
            continue
        execution = producers[0]
        e_info = execution_dict(graph, execution)
        executions[execution.id] = e_info
        inputs = graph.io(execution.id, INPUT_EVENTS)
        e_info["inputs"] = {key: [a.id for a in arts] for key, arts in sorted(inputs.items())}
        for key, arts in inputs.items():
            for a in arts:
                if key in LEAF_INPUTS:
                    if a.id not in artifacts:
                        leaf = artifact_dict(graph, a)
                        leaf["produced_by"] = None
                        leaf["leaf"] = f"{key}: compared against, not an ancestor"
                        leaf["reused_by_runs"] = []
                        artifacts[a.id] = leaf
                else:
                    frontier.append(a)
    doc = {"version": entry["version"], "destination": entry["destination"], "root": root.id,
           "artifacts": artifacts, "executions": executions}
    doc["summary"] = _summarize(doc, entry)
    gen = next((e for e in executions.values() if e["node"] == "CsvExampleGen"), None)
    objects = bucket_objects(store, doc["summary"]["span"], gen["run_id"] if gen else "")
    doc["summary"]["bucket_objects"] = objects
    doc["summary"]["decisions"] = decisions_for(store, entry["version"])
    return doc


PROMOTION_TYPE = "cd4ml.Promotion"  # recorded by cd4ml.promotion for promote/rollback/unpin


def decisions_for(store: metadata_store.MetadataStore, version: str) -> List[Dict[str, str]]:
    """Operator decisions (promote, rollback, unpin) that named this version, oldest first."""
    try:
        executions = store.get_executions_by_type(PROMOTION_TYPE)
    except Exception:  # noqa: BLE001 - nobody has promoted anything in this store
        return []
    found = []
    for ex in sorted(executions, key=lambda e: e.id):
        row = {k: str(prop(ex, k, "")) for k in ("action", "version", "previous", "reason", "user", "at")}
        if version in (row["version"], row["previous"]):
            found.append(row)
    return found


def _by(doc, node=None, artifact_type=None, key=None) -> List[Dict]:
    """Artifacts of the provenance produced by `node` and/or of `artifact_type`."""
    found = []
    for a in doc["artifacts"].values():
        if a.get("leaf"):
            continue
        producer = doc["executions"].get(a["produced_by"]) if a["produced_by"] else None
        if node and (producer is None or producer["node"] != node):
            continue
        if artifact_type and a["type"] != artifact_type:
            continue
        found.append(a)
    return sorted(found, key=lambda a: a["id"])


def span_files(example_gen: Dict[str, object]) -> List[Dict[str, object]]:
    """The files (or bucket objects) an ExampleGen execution read, as far as they can be named.

    MLMD records the input base, span and a fingerprint of the files (count, bytes, checksum).
    Bucket objects recorded by a trigger (`source_objects`: [{name, generation}]) are listed as
    such; a local span directory is listed as it is now, flagged when it no longer matches the
    recorded fingerprint.
    """
    import glob
    import os

    props = example_gen.get("properties", {})
    objects = props.get("source_objects")
    if isinstance(objects, list):
        return [dict(o) if isinstance(o, dict) else {"name": str(o)} for o in objects]
    base, span = props.get("input_base", ""), props.get("span")
    pattern = ""
    config = props.get("input_config")
    if isinstance(config, dict) and config.get("splits"):
        pattern = config["splits"][0].get("pattern", "")
    if not base or not pattern:
        return []
    pattern = pattern.replace("{SPAN}", str(span))
    files = []
    if base.startswith("gs://"):
        return [{"name": os.path.join(base, pattern)}]
    for path in sorted(glob.glob(os.path.join(base, pattern))):
        files.append({"name": path, "bytes": os.path.getsize(path)})
    fingerprint = str(props.get("input_fingerprint", ""))
    if "total_bytes:" in fingerprint and files:
        recorded = int(fingerprint.split("total_bytes:")[1].split(",")[0])
        if recorded != sum(f["bytes"] for f in files):
            for f in files:
                f["changed_since_run"] = True
    return files


DROP_TYPE = "cd4ml.Drop"  # recorded by cd4ml.triggers for each bucket object it turned into a span


def bucket_objects(store: metadata_store.MetadataStore, span, run_id: str = "") -> List[Dict[str, object]]:
    """The bucket objects (with generation) a trigger placed as `span`, from its cd4ml.Drop records.

    Drops whose recorded run is `run_id` come first; a span re-run later by hand still names the
    object it came from."""
    if span is None:
        return []
    try:
        drops = store.get_executions_by_type(DROP_TYPE)
    except Exception:  # noqa: BLE001 - no trigger has ever run against this store
        return []
    found = []
    for drop in drops:
        if prop(drop, "span") != span:
            continue
        found.append({"name": f"gs://{prop(drop, 'bucket', '')}/{prop(drop, 'object', '')}",
                      "generation": prop(drop, "generation"), "drop_run_id": prop(drop, "run_id", ""),
                      "outcome": prop(drop, "outcome", ""), "source": "bucket drop"})
    return sorted(found, key=lambda d: (d["drop_run_id"] != run_id, str(d["generation"])))


def _summarize(doc, entry) -> Dict[str, object]:
    def first(items):
        return items[0] if items else None

    def uris(items):
        return [a["uri"] for a in items]

    execs = {e["node"]: e for e in doc["executions"].values()}
    examples = _by(doc, node="CsvExampleGen", artifact_type="Examples") or \
        [a for a in _by(doc, artifact_type="Examples") if "span" in a["properties"]]
    gen = doc["executions"].get(examples[0]["produced_by"]) if examples else None
    anomalies = _by(doc, node="ExampleValidator", artifact_type="ExampleAnomalies")
    blessing = first(_by(doc, artifact_type="ModelBlessing"))
    model = first(_by(doc, node="Trainer", artifact_type="Model"))
    trainer = doc["executions"].get(model["produced_by"]) if model else None
    baseline = [a for a in doc["artifacts"].values() if a.get("leaf")]
    detectors = [a for a in doc["artifacts"].values()
                 if "detector" in a["type"].lower() or
                 "detector" in (doc["executions"].get(a["produced_by"]) or {}).get("node", "").lower()]
    release = first(_by(doc, artifact_type="cd4ml.ModelRelease"))
    return {
        "version": entry["version"],
        "destination": entry["destination"],
        "span": examples[0]["properties"].get("span") if examples else None,
        "span_files": span_files(gen) if gen else [],
        "input_base": (gen or {}).get("properties", {}).get("input_base"),
        "input_fingerprint": (gen or {}).get("properties", {}).get("input_fingerprint"),
        "examples": uris(examples),
        "schema": uris(_by(doc, node="ImportSchemaGen", artifact_type="Schema")),
        "schema_file": execs.get("ImportSchemaGen", {}).get("properties", {}).get("schema_file"),
        "validated_schema": uris(_by(doc, node="DataValidationGate", artifact_type="Schema")),
        "statistics": uris(_by(doc, node="StatisticsGen", artifact_type="ExampleStatistics")),
        "anomalies": [{"uri": a["uri"], "clean_splits": a["properties"].get("blessed")} for a in anomalies],
        "transform_graph": uris(_by(doc, artifact_type="TransformGraph")),
        "transform_module": execs.get("Transform", {}).get("properties", {}).get("module_file"),
        "model": model["uri"] if model else None,
        "trainer": {"run_id": trainer["run_id"], "module_file": trainer["properties"].get("module_file"),
                    "custom_config": trainer["properties"].get("custom_config"),
                    "seconds": trainer["seconds"]} if trainer else None,
        "evaluation": uris(_by(doc, artifact_type="ModelEvaluation")),
        "blessed": (blessing["properties"].get("blessed") == 1) if blessing else None,
        "blessing": blessing["uri"] if blessing else None,
        "baseline_model": [a["uri"] for a in baseline],
        "detectors": uris(detectors),
        "pusher": {"run_id": execs["Pusher"]["run_id"], "destination": entry["destination"]}
        if "Pusher" in execs else None,
        "release": release["uri"] if release else None,
        "metrics": {k: v for k, v in (release or {"properties": {}})["properties"].items()
                    if k in ("mean_absolute_error", "root_mean_squared_error", "example_count")},
        "runs": sorted({e["run_id"] for e in doc["executions"].values() if e["run_id"]}),
    }


# Inputs shown first in the tree: the model's own chain before the side branches.
TREE_ORDER = ["pushed_model", "model", "model_blessing", "evaluation_result", "detectors", "examples",
              "transform_graph", "schema", "anomalies", "statistics", "baseline_model"]


def format_tree(doc: Dict[str, object]) -> str:
    """The provenance as an indented tree, newest first: each artifact under what it was made from.

    An artifact reached a second time (examples feed statistics, transform and evaluation) is
    printed once and referred to afterwards as "(see #id above)".
    """
    lines = [f"model version {doc['version']}  ({doc['destination']})"]
    seen, seen_executions = set(), set()

    def describe(a):
        props = a["properties"]
        extras = []
        for name in ("span", "pushed_version", "version", "blessed", "mean_absolute_error"):
            if name in props and props[name] not in (None, "", 0) or (name == "blessed" and name in props):
                value = props[name]
                extras.append(f"{name}={value:.3f}" if isinstance(value, float) else f"{name}={value}")
        return f"{a['type']} #{a['id']} {a['uri']}" + (f" [{', '.join(extras)}]" if extras else "")

    def walk_artifact(artifact_id, prefix, key):
        a = doc["artifacts"][artifact_id]
        label = f"{key}: " if key else ""
        if artifact_id in seen:
            lines.append(f"{prefix}{label}{a['type']} #{artifact_id} (see above)")
            return
        seen.add(artifact_id)
        lines.append(f"{prefix}{label}{describe(a)}")
        if a.get("leaf"):
            lines.append(f"{prefix}    ({a['leaf']})")
            return
        execution = doc["executions"].get(a["produced_by"]) if a["produced_by"] else None
        if execution is None:
            return
        if execution["id"] in seen_executions:
            lines.append(f"{prefix}  <- {execution['node']} (execution #{execution['id']}, see above)")
            return
        seen_executions.add(execution["id"])
        reused = f", reused by {len(a['reused_by_runs'])} later run(s)" if a["reused_by_runs"] else ""
        lines.append(f"{prefix}  <- {execution['node']} (execution #{execution['id']}, {execution['state']} "
                     f"in run {execution['run_id']}, {execution['seconds']:.1f} s{reused})")
        if execution["node"] == "CsvExampleGen" or execution["type"].endswith("ExampleGen"):
            for f in doc["summary"]["span_files"] if doc.get("summary") else []:
                note = " (changed since the run)" if f.get("changed_since_run") else ""
                gen = f" generation {f['generation']}" if f.get("generation") else ""
                lines.append(f"{prefix}       <- file {f['name']}{gen}{note}")
            for o in doc.get("summary", {}).get("bucket_objects", []):
                lines.append(f"{prefix}       <- bucket object {o['name']} generation {o['generation']} "
                             f"(dropped; trigger outcome {o['outcome'] or 'unknown'})")
        inputs = execution.get("inputs", {})
        for in_key in sorted(inputs, key=lambda k: (TREE_ORDER.index(k) if k in TREE_ORDER else len(TREE_ORDER), k)):
            ids = inputs[in_key]
            for in_id in ids:
                walk_artifact(in_id, prefix + "       ", in_key)

    walk_artifact(doc["root"], "  ", "")
    return "\n".join(lines)


def statistics_for_span(store: metadata_store.MetadataStore, span: int) -> Optional[Dict[str, object]]:
    """The newest StatisticsGen output computed on a span's examples: {uri, run_id, examples_uri}."""
    graph = Graph(store)
    best = None
    for examples in store.get_artifacts_by_type("Examples"):
        if prop(examples, "span") != span:
            continue
        for execution in graph.consumers(examples.id):
            if graph.node_of(execution) != "StatisticsGen":
                continue
            for stats in graph.io(execution.id, OUTPUT_EVENTS).get("statistics", []):
                if best is None or (stats.create_time_since_epoch, stats.id) > best[0]:
                    best = ((stats.create_time_since_epoch, stats.id),
                            {"uri": stats.uri, "run_id": graph.run_of(execution), "examples_uri": examples.uri,
                             "span": span})
    return best[1] if best else None


def lineage_edges(doc: Dict[str, object]):
    """The provenance as a graph: (nodes, edges). Nodes are ('a', id) artifacts and ('e', id)
    executions with a label; edges point from what was read to what was made."""
    nodes, edges = {}, []
    for a in doc["artifacts"].values():
        nodes[("a", a["id"])] = f"{a['type'].rsplit('.', 1)[-1]}\n#{a['id']}"
        if a.get("produced_by"):
            edges.append((("e", a["produced_by"]), ("a", a["id"])))
    for e in doc["executions"].values():
        nodes[("e", e["id"])] = e["node"]
        for ids in e.get("inputs", {}).values():
            for artifact_id in ids:
                if artifact_id in doc["artifacts"]:
                    edges.append((("a", artifact_id), ("e", e["id"])))
    return nodes, edges
