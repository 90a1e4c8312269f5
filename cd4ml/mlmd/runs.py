"""Pipeline runs as ML Metadata recorded them: which components ran or came from the cache, how long
each took, what the run blessed and pushed.

A run is a `pipeline_run` context; each component execution belongs to it and to a `node`
context named `<pipeline>.<node id>`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from cd4ml.contract import (TUNED_BY, TUNED_HYPERPARAMETERS_FILE, TUNED_SOURCE, TUNED_VALUES, USAGE_FIELDS,
                            WINDOW_PROPERTY)
from cd4ml.mlmd.store import STATE_NAMES, event_key, prop, timestamp


@dataclasses.dataclass
class Step:
    node: str
    state: str
    seconds: float
    execution: metadata_store_pb2.Execution
    outputs: Dict[str, List[metadata_store_pb2.Artifact]]
    inputs: Dict[str, List[metadata_store_pb2.Artifact]]

    @property
    def usage(self) -> Dict[str, float]:
        """What the step used, as the runner measured it (record_usage): for a cached step, the cache
        lookup; {} where nothing was measured (a run of another runner, or of an older cd4ml)."""
        found = {name: prop(self.execution, name) for name in USAGE_FIELDS}
        return {k: float(v) for k, v in found.items() if v is not None}


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
            target.setdefault(event_key(ev), []).append(artifacts[ev.artifact_id])
        seconds = max(0.0, (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000)
        state = STATE_NAMES.get(execution.last_known_state, "unknown")
        if state == "ran" and execution.type.endswith(".Resolver"):
            state = "resolved"  # a Resolver only looks artifacts up: it always "runs", it is not work
        steps.append(Step(node, state, seconds, execution, outputs, inputs))
    return steps


def record_usage(store: metadata_store.MetadataStore, usages: Dict[int, Dict[str, float]]):
    """Attach what each execution used (pipelines/usage.py) to it, as custom properties."""
    if not usages:
        return
    executions = store.get_executions_by_id(list(usages))
    for execution in executions:
        for name, value in usages[execution.id].items():
            if name in USAGE_FIELDS:
                execution.custom_properties[name].double_value = float(value)
    store.put_executions(executions)


def run_usage(steps: List[Step]) -> Dict[str, float]:
    """A run's usage: CPU seconds, wall seconds, MB read and written summed over the steps it ran,
    the peak the largest of theirs."""
    measured = [s.usage for s in steps if s.usage]
    if not measured:
        return {}
    total = {name: round(sum(u.get(name, 0.0) for u in measured), 3) for name in USAGE_FIELDS}
    total["peak_mb"] = round(max(u.get("peak_mb", 0.0) for u in measured), 3)
    return total


def _node_id(store, execution) -> str:
    for ctx in store.get_contexts_by_execution(execution.id):
        if ctx.type == "node" or store.get_context_types_by_id([ctx.type_id])[0].name == "node":
            return ctx.name.split(".", 1)[-1]
    return execution.type


def latest_run_id(store: metadata_store.MetadataStore) -> Optional[str]:
    runs = store.get_contexts_by_type("pipeline_run")
    return max(runs, key=lambda c: (c.create_time_since_epoch, c.id)).name if runs else None



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
    # The explainability check (ModelExplainer's infra blessing): passed, and why not.
    explainable: Optional[bool] = None
    explain_reason: str = ""
    span: Optional[int] = None
    window: List[int] = dataclasses.field(default_factory=list)  # spans trained on, newest first
    # Where the Trainer's hyperparameters came from: {"source": "tuned" | "reused" | "defaults",
    # "run_id": the tuning run, "artifact": id, "values": the tuned values} (hyperparameters_of).
    hyperparameters: Dict[str, object] = dataclasses.field(default_factory=dict)

    @property
    def ran(self) -> List[str]:
        return [s.node for s in self.steps if s.state == "ran"]

    @property
    def cached(self) -> List[str]:
        return [s.node for s in self.steps if s.state == "cached"]

    @property
    def failed(self) -> List[str]:
        return [s.node for s in self.steps if s.state == "failed"]

    @property
    def usage(self) -> Dict[str, float]:
        return run_usage(self.steps)

    def to_dict(self) -> Dict[str, object]:
        return {"run_id": self.run_id, "started": self.started, "seconds": self.seconds,
                "status": self.status, "ran": self.ran, "cached": self.cached, "failed": self.failed,
                "span": self.span, "window": self.window, "blessed": self.blessed,
                "explainable": self.explainable, "hyperparameters": self.hyperparameters,
                "pushed_version": self.pushed_version, "new_push": self.new_push, "usage": self.usage,
                "steps": [{"node": s.node, "state": s.state, "seconds": round(s.seconds, 3),
                           "execution_id": s.execution.id, "usage": s.usage} for s in self.steps]}


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
    run = Run(run_id=run_id, started=timestamp(began), seconds=round(max(0, ended - began) / 1000, 2),
              status=status, steps=steps)
    for step in steps:
        if step.node.endswith("ExampleGen") and step.outputs.get("examples"):
            run.span = prop(step.outputs["examples"][0], "span")
        if step.node == "Transform" and step.inputs.get("examples"):
            run.window = window_of(step.inputs["examples"])
        if step.node == "Evaluator" and step.outputs.get("blessing"):
            run.blessed = prop(step.outputs["blessing"][0], "blessed") == 1
        if step.node == "ModelExplainer" and step.outputs.get("blessing"):
            run.explainable = prop(step.outputs["blessing"][0], "blessed") == 1
            run.explain_reason = str(prop(step.outputs["blessing"][0], "reason", ""))
        if step.node == "Trainer":
            run.hyperparameters = hyperparameters_of(store, step)
        if step.node == "Pusher" and step.outputs.get("pushed_model"):
            pushed = step.outputs["pushed_model"][0]
            if prop(pushed, "pushed") == 1:
                run.pushed_version = str(prop(pushed, "pushed_version", ""))
                run.pushed_path = str(prop(pushed, "pushed_destination", ""))
                run.new_push = step.state == "ran"
    return run


def window_of(examples) -> List[int]:
    """The spans a Transform's examples cover, newest first: a training window lists its spans
    (components/window.py); plain ExampleGen outputs carry one each."""
    spans = []
    for artifact in examples:
        text = prop(artifact, WINDOW_PROPERTY, "")
        spans += [int(e["span"]) for e in json.loads(text)] if text else [prop(artifact, "span")]
    return sorted(spans, reverse=True)


def hyperparameters_of(store: metadata_store.MetadataStore, trainer: Step) -> Dict[str, object]:
    """The HyperParameters artifact a Trainer took: tuned by a Tuner of the same run, reused from
    an earlier tuning run (handed on by TunedHyperparameters, components/tuning.py), or none (the
    configured defaults)."""
    from cd4ml.mlmd.graph import Graph

    given = trainer.inputs.get("hyperparameters") or []
    if not given or prop(given[0], TUNED_SOURCE) == "defaults":
        return {"source": "defaults"}
    artifact = given[0]
    graph = Graph(store)
    tuned = artifact
    if prop(artifact, TUNED_BY):  # reused: the Tuner's own artifact is the one at that URI
        found = [a for a in store.get_artifacts_by_uri(prop(artifact, TUNED_BY))
                 if graph.artifact_type(a) == "HyperParameters"]
        tuned = found[0] if found else artifact
    producers = graph.producers(tuned.id)
    tuned_in = graph.run_of(producers[0]) if producers else ""
    values: Dict[str, object] = {}
    if prop(artifact, TUNED_VALUES):
        values = json.loads(prop(artifact, TUNED_VALUES))
    else:
        try:
            with open(os.path.join(artifact.uri, TUNED_HYPERPARAMETERS_FILE)) as fh:
                values = json.load(fh).get("values", {})
        except (OSError, ValueError):
            pass  # a gs:// artifact: the run browser and `cd4ml runs` show the run it came from
    return {"source": "tuned" if tuned_in == graph.run_of(trainer.execution) else "reused",
            "run_id": tuned_in, "artifact": tuned.id, "values": values}


def list_runs(store: metadata_store.MetadataStore) -> List[Run]:
    """Every run, oldest first, with its component executions, state and timing."""
    return [r for r in (get_run(store, run_id) for run_id in run_ids(store)) if r is not None]


def latest_usage(store: metadata_store.MetadataStore) -> Dict[str, Dict[str, float]]:
    """{component: what it used the last time it ran (not from the cache)}, over every run."""
    found: Dict[str, Dict[str, float]] = {}
    for run_id in reversed(run_ids(store)):
        for step in run_steps(store, run_id):
            if step.state == "ran" and step.usage and step.node not in found:
                found[step.node] = step.usage
    return found


# -- models -----------------------------------------------------------------------------------
