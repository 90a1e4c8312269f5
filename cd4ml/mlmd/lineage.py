"""Lineage: the models ML Metadata knows and where each pushed version came from.

`provenance(store, version)` walks the graph (cd4ml.mlmd.graph) backwards from a version's
release to the span files or bucket objects it was trained on, and summarises it by role;
`format_tree` prints it for `cd4ml lineage`, `lineage_edges` gives it to a plot.
"""

from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Tuple

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from cd4ml.contract import BASELINE_VERSION, MAE, METRICS, RELEASE_ARTIFACT as RELEASE_TYPE, USAGE_FIELDS
from cd4ml.mlmd import records
from cd4ml.mlmd.graph import INPUT_EVENTS, LEAF_INPUTS, OUTPUT_EVENTS, Graph, artifact_dict, execution_dict
from cd4ml.mlmd.store import prop, timestamp


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
            "created": timestamp(pushed.create_time_since_epoch),
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
            "blessing_id": blessing.id, "created": timestamp(blessing.create_time_since_epoch),
            "run_id": graph.run_of(producers[0]) if producers else ""}


# The steps that carry a span forward into a model.
TRAINING = ("TrainingWindow", "Transform", "Trainer")


def models_from_span(store: metadata_store.MetadataStore, span: int) -> List[Dict[str, object]]:
    """Models trained on a span's examples (following Transform), blessed or not, with versions."""
    graph = Graph(store)
    # The span's own examples, and the training windows that took them in (components/window.py).
    examples = [a for a in store.get_artifacts_by_type("Examples")
                if prop(a, "span") == span or any(prop(s, "span") == span for s in graph.window_sources(a))]
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
            if graph.node_of(execution) not in TRAINING and \
                    graph.execution_type(execution).rsplit(".", 1)[-1] not in TRAINING:
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
                       "run_id": graph.run_of(trainer), "trained": timestamp(model.create_time_since_epoch),
                       "blessed": blessed.get(model_id), "versions": versions.get(model_id, [])})
    return result


# -- provenance -------------------------------------------------------------------------------

def _find_release(store, version: str):
    for release in store.get_artifacts_by_type(RELEASE_TYPE):
        if str(prop(release, "version", "")) == version:
            return release
    return None


def _pushed_entry(store, version: Optional[str]) -> Optional[Dict[str, object]]:
    """The pushed_models() entry of `version` (the newest push when None)."""
    pushed_list = pushed_models(store)
    if version is not None:
        pushed_list = [p for p in pushed_list if p["version"] == str(version)]
    return pushed_list[-1] if pushed_list else None


def _leaf(graph: Graph, artifact, key: str) -> Dict[str, object]:
    info = artifact_dict(graph, artifact)
    leaf = f"{key}: compared against, not an ancestor" if graph.is_baseline(artifact) else \
        f"{key}: none, nothing was served yet"
    info.update(produced_by=None, leaf=leaf, baseline=graph.is_baseline(artifact), reused_by_runs=[])
    return info


def _walk_back(graph: Graph, root) -> Tuple[Dict[int, Dict], Dict[int, Dict]]:
    """({artifact id: info}, {execution id: info}) of everything `root` was made from.

    Each artifact follows the execution that really produced it (not the cached reuses, which
    are listed as `reused_by_runs`); inputs in LEAF_INPUTS are shown but not walked."""
    artifacts: Dict[int, Dict] = {}
    executions: Dict[int, Dict] = {}
    frontier = [root]
    while frontier:
        artifact = frontier.pop()
        if artifact.id in artifacts:
            continue
        info = artifacts[artifact.id] = artifact_dict(graph, artifact)
        producers = graph.producers(artifact.id)
        info["produced_by"] = producers[0].id if producers else None
        info["reused_by_runs"] = (sorted({graph.run_of(p) for p in producers[1:]} - {graph.run_of(producers[0])})
                                  if producers else [])
        if not producers or producers[0].id in executions:
            continue
        execution = producers[0]
        e_info = executions[execution.id] = execution_dict(graph, execution)
        inputs = graph.io(execution.id, INPUT_EVENTS)
        e_info["inputs"] = {key: [a.id for a in arts] for key, arts in sorted(inputs.items())}
        for key, arts in inputs.items():
            for a in arts:
                if key not in LEAF_INPUTS:
                    frontier.append(a)
                elif a.id not in artifacts:
                    artifacts[a.id] = _leaf(graph, a, key)
    return artifacts, executions


def provenance(store: metadata_store.MetadataStore, version: Optional[str] = None) -> Optional[Dict[str, object]]:
    """Where a pushed version came from, by walking ML Metadata backwards from it.

    Returns {'version', 'root', 'artifacts': {id: ...}, 'executions': {id: ...}, 'summary': {...}}
    where every artifact names the execution that produced it ('produced_by') and every execution
    its inputs ({key: [artifact ids]}), and 'summary' answers the usual questions by role (span
    files, schema, statistics, anomalies, transform graph, trainer, evaluation, blessing,
    detectors, pusher, release, bucket objects, decisions). None when the version was never
    pushed (the latest push when `version` is omitted).
    """
    entry = _pushed_entry(store, version)
    if entry is None:
        return None
    graph = Graph(store)
    root = _find_release(store, entry["version"]) or graph.artifacts([entry["pushed_model_id"]])[0]
    artifacts, executions = _walk_back(graph, root)
    doc = {"version": entry["version"], "destination": entry["destination"], "root": root.id,
           "artifacts": artifacts, "executions": executions}
    summary = doc["summary"] = _summarize(doc, entry)
    summary["window"] = training_window(store, doc)
    newest = summary["window"][0] if summary["window"] else {}
    summary["bucket_objects"] = newest.get("bucket_objects", [])
    summary["harvest"] = newest.get("harvest")
    summary["decisions"] = decisions_for(store, entry["version"])
    return doc


def training_window(store: metadata_store.MetadataStore, doc) -> List[Dict[str, object]]:
    """Every span the version was trained on, newest first: its ExampleGen run, its files, the
    bucket objects a drop placed there, and for a harvested span where its rows came from."""
    window = []
    for a in _by(doc, artifact_type="Examples"):
        gen = doc["executions"].get(a["produced_by"]) if a["produced_by"] else None
        if gen is None or not gen["type"].endswith("ExampleGen"):
            continue
        span = a["properties"].get("span")
        base = gen.get("properties", {}).get("input_base", "")
        window.append({"span": span, "examples": a["uri"], "execution": gen["id"], "run_id": gen["run_id"],
                       "files": span_files(gen), "bucket_objects": bucket_objects(store, span, gen["run_id"]),
                       "harvest": harvest_for(store, base, span)})
    return sorted(window, key=lambda w: (w["span"] or 0, w["execution"]), reverse=True)


def harvest_for(store: metadata_store.MetadataStore, data_root: str, span) -> Optional[Dict[str, object]]:
    """The harvest (cd4ml.Harvest) that wrote `span` under `data_root`, if it was harvested."""
    found = [h for h in records.read(store, records.HARVEST)
             if h["span"] == span and os.path.normpath(h["data_root"]) == os.path.normpath(data_root or ".")]
    return found[-1] if found else None


def decisions_for(store: metadata_store.MetadataStore, version: str) -> List[Dict[str, object]]:
    """Decisions that named this version, oldest first: an operator's (promote, rollback, unpin,
    shadow, approve, reject), experiments it took part in (start, conclude with the evidence) and
    its guarded rollout (canary started, promoted or rolled back, with the guard and the evidence)."""
    found = [row for row in records.read(store, records.PROMOTION) if version in (row["version"], row["previous"])]
    for e in records.read(store, records.EXPERIMENT):
        arms = [e["champion"], *e["challengers"].split(",")]
        if version in arms:
            found.append({"action": f"experiment {e['action']}", "version": e["winner"] or e["challengers"],
                          "previous": e["champion"], "reason": f"{e['experiment_id']}: {e['reason']}",
                          "user": e["user"], "at": e["at"], "evidence": e["evidence"]})
    for r in records.read(store, records.ROLLOUT):  # guarded rollout: canary started, promoted, rolled back
        if version in (r["version"], r["previous"]):
            found.append({"action": f"rollout {r['action']}", "version": r["version"], "previous": r["previous"],
                          "reason": r["reason"] + (f" (guard: {r['guard']})" if r["guard"] else ""),
                          "user": r["user"], "at": r["at"], "evidence": r["evidence"]})
    return sorted(found, key=lambda d: d["at"])


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


def bucket_objects(store: metadata_store.MetadataStore, span, run_id: str = "") -> List[Dict[str, object]]:
    """The bucket objects (with generation) a trigger placed as `span`, from its Drop records.

    Drops whose recorded run is `run_id` come first; a span re-run later by hand still names the
    object it came from."""
    if span is None:
        return []
    found = [{"name": f"gs://{d['bucket']}/{d['object']}", "generation": records.generation(d),
              "drop_run_id": d["run_id"], "outcome": d["outcome"], "source": "bucket drop"}
             for d in records.read(store, records.DROP) if d["span"] == span]
    return sorted(found, key=lambda d: (d["drop_run_id"] != run_id, str(d["generation"])))


def _first(items):
    return items[0] if items else None


def _uris(items) -> List[str]:
    return [a["uri"] for a in items]


def _data_summary(doc) -> Dict[str, object]:
    """What the version was trained on: span, its files, the schema, statistics and anomalies."""
    execs = {e["node"]: e for e in doc["executions"].values()}
    # The newest span of the training window: the one this version's run ingested.
    examples = sorted(_by(doc, node="CsvExampleGen", artifact_type="Examples") or
                      [a for a in _by(doc, artifact_type="Examples") if "span" in a["properties"]],
                      key=lambda a: (a["properties"].get("span") or 0, a["id"]), reverse=True)
    gen = doc["executions"].get(examples[0]["produced_by"]) if examples else None
    gen_props = (gen or {}).get("properties", {})
    anomalies = _by(doc, node="ExampleValidator", artifact_type="ExampleAnomalies")
    return {
        "span": examples[0]["properties"].get("span") if examples else None,
        "span_files": span_files(gen) if gen else [],
        "input_base": gen_props.get("input_base"),
        "input_fingerprint": gen_props.get("input_fingerprint"),
        "examples": _uris(examples),
        "schema": _uris(_by(doc, node="ImportSchemaGen", artifact_type="Schema")),
        "schema_file": execs.get("ImportSchemaGen", {}).get("properties", {}).get("schema_file"),
        "validated_schema": _uris(_by(doc, node="DataValidationGate", artifact_type="Schema")),
        "statistics": _uris(_by(doc, node="StatisticsGen", artifact_type="ExampleStatistics")),
        "anomalies": [{"uri": a["uri"], "clean_splits": a["properties"].get("blessed")} for a in anomalies],
    }


def _model_summary(doc) -> Dict[str, object]:
    """How the version was made and judged: transform, trainer, evaluation, blessing, detectors."""
    execs = {e["node"]: e for e in doc["executions"].values()}
    blessing = _first(_by(doc, artifact_type="ModelBlessing"))
    model = _first(_by(doc, node="Trainer", artifact_type="Model"))
    trainer = doc["executions"].get(model["produced_by"]) if model else None
    detectors = [a for a in doc["artifacts"].values()
                 if "detector" in a["type"].lower() or
                 "detector" in (doc["executions"].get(a["produced_by"]) or {}).get("node", "").lower()]
    return {
        "transform_graph": _uris(_by(doc, artifact_type="TransformGraph")),
        "transform_module": execs.get("Transform", {}).get("properties", {}).get("module_file"),
        "model": model["uri"] if model else None,
        "trainer": {"run_id": trainer["run_id"], "module_file": trainer["properties"].get("module_file"),
                    "custom_config": trainer["properties"].get("custom_config"),
                    "seconds": trainer["seconds"]} if trainer else None,
        "evaluation": _uris(_by(doc, artifact_type="ModelEvaluation")),
        "blessed": (blessing["properties"].get("blessed") == 1) if blessing else None,
        "blessing": blessing["uri"] if blessing else None,
        "baseline_model": [a["uri"] for a in doc["artifacts"].values() if a.get("baseline")],
        "baseline_version": next((a["properties"].get(BASELINE_VERSION) for a in doc["artifacts"].values()
                                  if a.get("baseline")), None),
        "detectors": _uris(detectors),
    }


def _release_summary(doc, entry) -> Dict[str, object]:
    """Where the version went: pusher, release bundle, its metrics and the runs involved."""
    execs = {e["node"]: e for e in doc["executions"].values()}
    release = _first(_by(doc, artifact_type=RELEASE_TYPE))
    return {
        "pusher": {"run_id": execs["Pusher"]["run_id"], "destination": entry["destination"]}
        if "Pusher" in execs else None,
        "release": release["uri"] if release else None,
        "metrics": {k: v for k, v in (release or {"properties": {}})["properties"].items() if k in METRICS},
        "runs": sorted({e["run_id"] for e in doc["executions"].values() if e["run_id"]}),
    }


def _summarize(doc, entry) -> Dict[str, object]:
    return {"version": entry["version"], "destination": entry["destination"],
            **_data_summary(doc), **_model_summary(doc), **_release_summary(doc, entry), "usage": version_usage(doc)}


def version_usage(doc) -> Dict[str, object]:
    """What every execution that led to the version used (each once, in whichever run it ran:
    an earlier span's ingestion included), as the runners measured it; {} when none was measured."""
    measured = [e for e in doc["executions"].values()
                if all(isinstance(e["properties"].get(name), (int, float)) for name in USAGE_FIELDS)]
    if not measured:
        return {}
    total = {name: round(sum(e["properties"][name] for e in measured), 3) for name in USAGE_FIELDS}
    total["peak_mb"] = round(max(e["properties"]["peak_mb"] for e in measured), 3)
    return dict(total, executions=len(measured), runs=sorted({e["run_id"] for e in measured}))


# Inputs shown first in the tree: the model's own chain before the side branches.
TREE_ORDER = ["pushed_model", "model", "model_blessing", "evaluation_result", "detectors", "examples",
              "transform_graph", "schema", "anomalies", "statistics", "baseline_model"]
# Properties worth a glance on each line of the tree.
TREE_PROPERTIES = ("span", "pushed_version", "version", "blessed", MAE)


def _describe(artifact: Dict[str, object]) -> str:
    props = artifact["properties"]
    extras = []
    for name in TREE_PROPERTIES:
        if name in props and (props[name] not in (None, "", 0) or name == "blessed"):
            value = props[name]
            extras.append(f"{name}={value:.3f}" if isinstance(value, float) else f"{name}={value}")
    return f"{artifact['type']} #{artifact['id']} {artifact['uri']}" + (f" [{', '.join(extras)}]" if extras else "")


def harvest_line(h: Dict[str, object]) -> str:
    """One harvest's provenance in words."""
    versions = ", ".join(f"{v} ({n} rows)" for v, n in sorted(json.loads(h["versions"] or "{}").items()))
    return (f"harvested from the serving logs at {h['log_source']}: {h['rows']} labelled rows of {h['requests']} "
            f"requests served {h['first_served']} .. {h['last_served']} by {versions or '-'} (ledger {h['ledger']})")


def _source_lines(summary: Dict[str, object], prefix: str, execution_id: int) -> List[str]:
    """The files, bucket objects and harvest an ExampleGen read, under it in the tree."""
    lines = []
    for entry in summary.get("window", []):
        if entry["execution"] != execution_id:
            continue
        for f in entry["files"]:
            note = " (changed since the run)" if f.get("changed_since_run") else ""
            gen = f" generation {f['generation']}" if f.get("generation") else ""
            lines.append(f"{prefix}       <- file {f['name']}{gen}{note}")
        for o in entry["bucket_objects"]:
            lines.append(f"{prefix}       <- bucket object {o['name']} generation {o['generation']} "
                         f"(dropped; trigger outcome {o['outcome'] or 'unknown'})")
        if entry["harvest"]:
            lines.append(f"{prefix}       <- {harvest_line(entry['harvest'])}")
    return lines


class _TreePrinter:
    """Walks a provenance from its root; prints each artifact and execution once."""

    def __init__(self, doc: Dict[str, object]):
        self.doc = doc
        self.lines = [f"model version {doc['version']}  ({doc['destination']})"]
        self.seen_artifacts, self.seen_executions = set(), set()

    def artifact(self, artifact_id: int, prefix: str, key: str):
        a = self.doc["artifacts"][artifact_id]
        label = f"{key}: " if key else ""
        if artifact_id in self.seen_artifacts:
            self.lines.append(f"{prefix}{label}{a['type']} #{artifact_id} (see above)")
            return
        self.seen_artifacts.add(artifact_id)
        self.lines.append(f"{prefix}{label}{_describe(a)}")
        if a.get("leaf"):
            self.lines.append(f"{prefix}    ({a['leaf']})")
            return
        execution = self.doc["executions"].get(a["produced_by"]) if a["produced_by"] else None
        if execution is not None:
            self.execution(execution, a, prefix)

    def execution(self, execution: Dict[str, object], made: Dict[str, object], prefix: str):
        if execution["id"] in self.seen_executions:
            self.lines.append(f"{prefix}  <- {execution['node']} (execution #{execution['id']}, see above)")
            return
        self.seen_executions.add(execution["id"])
        reused = f", reused by {len(made['reused_by_runs'])} later run(s)" if made["reused_by_runs"] else ""
        self.lines.append(f"{prefix}  <- {execution['node']} (execution #{execution['id']}, {execution['state']} "
                          f"in run {execution['run_id']}, {execution['seconds']:.1f} s{reused})")
        if execution["type"].endswith("ExampleGen"):
            self.lines.extend(_source_lines(self.doc.get("summary") or {}, prefix, execution["id"]))
        inputs = execution.get("inputs", {})
        order = sorted(inputs, key=lambda k: (TREE_ORDER.index(k) if k in TREE_ORDER else len(TREE_ORDER), k))
        for key in order:
            for artifact_id in inputs[key]:
                self.artifact(artifact_id, prefix + "       ", key)


def format_tree(doc: Dict[str, object]) -> str:
    """The provenance as an indented tree, newest first: each artifact under what it was made from.

    An artifact reached a second time (examples feed statistics, transform and evaluation) is
    printed once and referred to afterwards as "(see above)".
    """
    printer = _TreePrinter(doc)
    printer.artifact(doc["root"], "  ", "")
    return "\n".join(printer.lines)


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
