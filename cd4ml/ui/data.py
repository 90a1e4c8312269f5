"""What each page of the run browser shows, read from ML Metadata, the registry, the data root and
the serving logs. Read-only: nothing here writes anywhere (SQLite is even opened read-only).

A finished run, an artifact's contents (statistics, anomalies, evaluation) and a pushed version's
lineage never change once written, so they are computed once per process and kept: the runs page
of a store with hundreds of runs then costs one look-up per new run, not a walk of every run.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os
import threading
from typing import Dict, List, Optional

from cd4ml import mlmd
from cd4ml.contract import DRIFT_LOG, HARVEST_PROVENANCE, MAE, OVERALL_SLICE, SCHEMA_FILE, default_log_dir
from cd4ml.mlmd import records
from cd4ml.ui.graph import Drawing, Edge, Node, layout
from pipelines import spans
from pipelines.config import PipelineConfig

FINISHED = ("complete", "failed")
EXAMPLE_GEN = "CsvExampleGen"


def open_read_only(spec: str):
    """The store, SQLite in read-only mode (MySQL: the UI simply never writes)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = mlmd.connection_config(spec)
    if config.HasField("sqlite"):
        config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


# Rows of the comparison that say what a run used (pipelines/usage.py), not what changed.
CPU_LABEL, PEAK_LABEL = "CPU seconds (all components)", "peak MB (largest component)"


@dataclasses.dataclass
class RunRow:
    run_id: str
    started: str
    status: str            # ok, validation failed, not blessed, error, running, not started
    span: Optional[int]
    window: List[int]
    rows: Optional[int]
    seconds: Optional[float]
    ran: int
    cached: int
    blessed: Optional[bool]
    pushed_version: str
    new_push: bool
    trigger: str           # manual, drop, drift, harvest
    trigger_detail: str = ""
    recorded: bool = True  # in ML Metadata (False: it stopped before the pipeline started)
    usage: Dict[str, float] = dataclasses.field(default_factory=dict)  # mlmd.run_usage: CPU s, peak MB, ...


class Browser:
    """The data behind every page, for one project home."""

    def __init__(self, config: PipelineConfig, log_dir: Optional[str] = None):
        self.config = config
        self.log_dir = log_dir or default_log_dir(config.registry)
        self._runs: Dict[str, mlmd.Run] = {}
        self._lineage: Dict[str, Optional[Dict]] = {}
        self._lock = threading.Lock()
        self._store = None

    @property
    def store(self):
        if self._store is None:
            self._store = open_read_only(self.config.metadata_path)
        return self._store

    @property
    def has_store(self) -> bool:
        return mlmd.exists(self.config.metadata_path)

    # --- runs ---------------------------------------------------------------------------------
    def run(self, run_id: str) -> Optional[mlmd.Run]:
        with self._lock:
            known = self._runs.get(run_id)
        if known is not None:
            return known
        run = mlmd.get_run(self.store, run_id)
        if run is not None and run.status in FINISHED:
            with self._lock:
                self._runs[run_id] = run
        return run

    def summary(self, run_id: str) -> Dict:
        try:
            with open(os.path.join(self.config.runs_dir, run_id, "summary.json")) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def triggers(self) -> Dict[str, tuple]:
        """run id -> (trigger, detail), from our own records: a drop, a drift request, a harvest."""
        found: Dict[str, tuple] = {}
        for h in records.read(self.store, records.HARVEST):
            if h["run_id"]:
                found[h["run_id"]] = ("harvest", f"span {h['span']}: {h['rows']} rows from {h['log_source']}")
        for r in records.read(self.store, records.RETRAIN_REQUEST):
            if r["run_id"]:
                found[r["run_id"]] = ("drift", f"drift on {r['drifted'] or '-'}; {r['labelled_rows']} labelled rows")
        for d in records.read(self.store, records.DROP):
            if d["run_id"]:
                found[d["run_id"]] = ("drop", f"gs://{d['bucket']}/{d['object']}#{records.generation(d)}")
        return found

    def runs(self) -> List[RunRow]:
        """Every run, newest first."""
        rows: List[RunRow] = []
        ids = mlmd.run_ids(self.store) if self.has_store else []
        triggers = self.triggers() if ids else {}
        for run_id in ids:
            run = self.run(run_id)
            if run is None:
                continue
            s = self.summary(run_id)
            trigger, detail = triggers.get(run_id, ("manual", ""))
            rows.append(RunRow(run_id, run.started, s.get("status") or {"complete": "ok"}.get(run.status, run.status),
                               run.span, run.window or ([run.span] if run.span else []), s.get("rows"),
                               s.get("seconds", run.seconds), len(run.ran), len(run.cached), run.blessed,
                               run.pushed_version, run.new_push, trigger, detail, usage=run.usage))
        known = set(ids)
        if os.path.isdir(self.config.runs_dir):  # runs that stopped before the pipeline (bad span files)
            for run_id in os.listdir(self.config.runs_dir):
                s = self.summary(run_id)
                if run_id not in known and s:
                    rows.append(RunRow(run_id, "", s.get("status", "not started"), s.get("span"), [], s.get("rows"),
                                       s.get("seconds"), 0, 0, None, "", False, "manual", s.get("error", ""),
                                       recorded=False))
        return sorted(rows, key=lambda r: r.run_id, reverse=True)

    @staticmethod
    def previous(rows: List[RunRow]) -> Dict[str, str]:
        """Each recorded run's previous recorded run (rows newest first): what it is compared with."""
        recorded = [r.run_id for r in rows if r.recorded]
        return dict(zip(recorded, recorded[1:]))

    # --- one run --------------------------------------------------------------------------------
    def run_page(self, run_id: str) -> Optional[Dict]:
        run = self.run(run_id) if self.has_store else None
        summary = self.summary(run_id)
        if run is None and not summary:
            return None
        steps = run.steps if run else []
        by_node = {s.node: s for s in steps}
        page = {"run": run, "summary": summary, "drawing": run_dag(steps), "steps": [step_view(s) for s in steps],
                "statistics": [], "anomalies": list(summary.get("problems") or []), "evaluation": None,
                "thresholds": [], "schema": [], "report": os.path.exists(self.report_path(run_id))}
        stats = by_node.get("StatisticsGen")
        if stats and stats.outputs.get("statistics"):
            page["statistics"] = statistics_table(stats.outputs["statistics"][0].uri)
        validator = by_node.get("ExampleValidator")
        if validator and validator.outputs.get("anomalies") and not page["anomalies"]:
            a = validator.outputs["anomalies"][0]
            page["anomalies"] = anomalies(a.uri, mlmd.prop(a, "split_names", "[]") or "[]")
        gate = by_node.get("DataValidationGate") or by_node.get("ImportSchemaGen")
        schema = (gate.outputs.get("validated_schema") or gate.outputs.get("schema")) if gate else None
        if schema:
            page["schema"] = schema_table(schema[0].uri)
        evaluator = by_node.get("Evaluator")
        if evaluator and evaluator.outputs.get("evaluation"):
            page["evaluation"] = evaluation(evaluator.outputs["evaluation"][0].uri)
            from cd4ml.report.evaluation import thresholds

            config = mlmd.execution_dict(mlmd.Graph(self.store), evaluator.execution)["properties"].get("eval_config")
            page["thresholds"] = thresholds(config)
            page["baseline"] = [a.uri for a in evaluator.inputs.get("baseline_model", []) if mlmd.Graph.is_baseline(a)]
        return page

    def report_path(self, run_id: str) -> str:
        return os.path.join(self.config.runs_dir, run_id, "report.html")

    # --- a version --------------------------------------------------------------------------------
    def provenance(self, version: str) -> Optional[Dict]:
        with self._lock:
            if version in self._lineage:
                return self._lineage[version]
        doc = mlmd.provenance(self.store, version) if self.has_store else None
        with self._lock:
            self._lineage[version] = doc
        return doc

    def version_page(self, version: str) -> Optional[Dict]:
        doc = self.provenance(version)
        if doc is None:
            return None
        summary = doc["summary"]
        decisions = mlmd.decisions_for(self.store, version)  # new ones may come: never cached
        from components import model_card

        return {"doc": doc, "summary": summary, "drawing": lineage_dag(doc, decisions), "decisions": decisions,
                "run_id": (summary.get("pusher") or {}).get("run_id", ""), "live": self.live(version),
                "drift": self.drift_windows(version),
                "card": model_card.read(doc["destination"]) if doc.get("destination") else None}

    def live(self, version: str) -> Optional[Dict]:
        from cd4ml.compare import live

        try:
            return live(self.log_dir).get(version)
        except OSError:
            return None

    def drift_windows(self, version: str, last: int = 20) -> List[Dict]:
        from cd4ml.logstore import read_records

        try:
            found = [d for d in read_records(self.log_dir, DRIFT_LOG) if str(d.get("version")) == version]
        except OSError:
            return []
        return found[-last:]

    # --- a span -----------------------------------------------------------------------------------
    def span_page(self, span: int) -> Dict:
        directory = spans.span_dir(self.config.data_root, span)
        files = []
        for path in sorted(glob.glob(os.path.join(glob.escape(directory), "*"))):
            entry = {"name": path, "bytes": os.path.getsize(path)}
            if path.endswith(".csv"):
                try:
                    entry["rows"] = spans.check_csv(path)
                except spans.SpanError as err:
                    entry["problem"] = str(err)
            files.append(entry)
        provenance = None
        harvest_file = os.path.join(directory, HARVEST_PROVENANCE)
        if os.path.exists(harvest_file):
            with open(harvest_file) as fh:
                provenance = json.load(fh)
        ingested, drops, harvests, models = [], [], [], []
        if self.has_store:
            graph = mlmd.Graph(self.store)
            for a in self.store.get_artifacts_by_type("Examples"):
                if mlmd.prop(a, "span") == span and f"/{EXAMPLE_GEN}/" in a.uri:
                    producers = graph.producers(a.id)
                    if producers:
                        ingested.append({"run_id": graph.run_of(producers[0]), "uri": a.uri})
            drops = [d for d in records.read(self.store, records.DROP) if d["span"] == span]
            harvests = [h for h in records.read(self.store, records.HARVEST) if h["span"] == span]
            models = mlmd.models_from_span(self.store, span)
        return {"span": span, "directory": directory, "files": files, "provenance": provenance,
                "ingested": ingested, "drops": drops, "harvests": harvests, "models": models}

    # --- compare ----------------------------------------------------------------------------------
    def compare(self, a: str, b: str) -> Optional[Dict]:
        sides = [self.compare_side(r) for r in (a, b)]
        if None in sides:
            return None
        rows = []
        for label, key in (("status", "status"), ("spans trained on", "window"), ("rows in the span", "rows"),
                           ("trigger", "trigger"), ("hyperparameters", "hyperparameters"),
                           ("trainer module", "trainer_module"), ("schema", "schema_file"),
                           ("blessed", "blessed"), ("pushed version", "pushed_version"),
                           (CPU_LABEL, "cpu_seconds"), (PEAK_LABEL, "peak_mb")):
            left, right = sides[0].get(key), sides[1].get(key)
            rows.append({"label": label, "a": left, "b": right, "changed": left != right})
        slices = sorted(set(sides[0]["metrics"]) | set(sides[1]["metrics"]), key=_slice_order)
        metrics = []
        for name in slices:
            left, right = sides[0]["metrics"].get(name, {}).get(MAE), sides[1]["metrics"].get(name, {}).get(MAE)
            metrics.append({"slice": name, "a": left, "b": right,
                            "delta": (right - left) if left is not None and right is not None else None})
        return {"a": sides[0], "b": sides[1], "rows": rows, "metrics": metrics,
                # What changed in data, code or configuration: not the outcome, not what the run used.
                "changed": [r["label"] for r in rows if r["changed"]
                            and r["label"] not in ("status", CPU_LABEL, PEAK_LABEL)]}

    def compare_side(self, run_id: str) -> Optional[Dict]:
        run = self.run(run_id) if self.has_store else None
        if run is None:
            return None
        by_node = {s.node: s for s in run.steps}
        trainer = by_node.get("Trainer")
        graph = mlmd.Graph(self.store)
        props = mlmd.execution_dict(graph, trainer.execution)["properties"] if trainer else {}
        schema_step = by_node.get("ImportSchemaGen")
        evaluator = by_node.get("Evaluator")
        summary = self.summary(run_id)
        trigger = self.triggers().get(run_id, ("manual", ""))[0]
        evaluated = evaluation(evaluator.outputs["evaluation"][0].uri) if evaluator and evaluator.outputs.get(
            "evaluation") else {"slices": {}}
        usage = run.usage
        return {"run_id": run_id, "status": summary.get("status", run.status), "window": run.window or [run.span],
                "cpu_seconds": round(usage["cpu_seconds"], 1) if usage else None,
                "peak_mb": round(usage["peak_mb"]) if usage else None,
                "rows": summary.get("rows"), "trigger": trigger,
                "hyperparameters": props.get("custom_config"), "trainer_module": props.get("module_path")
                or props.get("module_file") or props.get("run_fn"),
                "schema_file": mlmd.execution_dict(graph, schema_step.execution)["properties"].get("schema_file")
                if schema_step else None,
                "blessed": run.blessed, "pushed_version": run.pushed_version, "metrics": evaluated["slices"]}


# --- immutable artifacts, read once -------------------------------------------------------------

@functools.lru_cache(maxsize=512)
def statistics_table(uri: str) -> List[Dict]:
    from cd4ml.report.statistics import load_statistics, statistics_summary

    try:
        return statistics_summary(load_statistics(uri, "train"))
    except Exception:  # noqa: BLE001 - a page without statistics, not a broken page
        return []


@functools.lru_cache(maxsize=512)
def anomalies(uri: str, split_names: str) -> List[Dict]:
    from components.validation_gate import anomaly_report

    return anomaly_report(uri, json.loads(split_names))


@functools.lru_cache(maxsize=512)
def evaluation(uri: str) -> Dict:
    from components import evaluation as ev

    return ev.summarize(uri)


@functools.lru_cache(maxsize=64)
def schema_table(uri: str) -> List[Dict]:
    from components import schema as curated

    path = os.path.join(uri, SCHEMA_FILE)
    if not os.path.exists(path):
        return []
    rows = []
    for f in curated.load(path).feature:
        domain = ""
        if f.HasField("int_domain"):
            domain = f"[{f.int_domain.min}, {f.int_domain.max}]" + (" categorical" if f.int_domain.is_categorical
                                                                    else "")
        elif f.HasField("float_domain"):
            domain = f"[{f.float_domain.min:g}, {f.float_domain.max:g}]"
        elif f.HasField("string_domain"):
            domain = ", ".join(f.string_domain.value)
        rows.append({"name": f.name, "type": {1: "BYTES", 2: "INT", 3: "FLOAT"}.get(f.type, str(f.type)),
                     "domain": domain, "required": f.presence.min_fraction == 1.0,
                     "serving": "SERVING" not in f.not_in_environment})
    return rows


def _slice_order(name: str):
    if name == OVERALL_SLICE:
        return (0, "", 0)
    column, _, value = name.partition("=")
    return (1, column, int(value) if value.lstrip("-").isdigit() else value)


# --- the drawn graphs ---------------------------------------------------------------------------

def step_view(step) -> Dict:
    def arts(group):
        # Only examples carry a meaningful span (TFX copies the property onto their statistics too).
        return [{"key": k, "id": a.id, "uri": a.uri, "span": mlmd.prop(a, "span") if "examples" in k else None}
                for k, items in group.items() for a in items]
    return {"node": step.node, "state": step.state, "seconds": step.seconds, "inputs": arts(step.inputs),
            "outputs": arts(step.outputs), "usage": step.usage}


def run_dag(steps) -> Drawing:
    """A run's components as a graph: an edge where one step's output is another's input; an
    input made outside this run (an earlier span the training window took in, a step answered
    from the cache) is an external box. A resolver, which runs of older cd4ml versions recorded,
    is drawn between what it found and who took it."""
    made = {a.id: s.node for s in steps if s.state != "resolved" for items in s.outputs.values() for a in items}
    found = {a.id: s.node for s in steps if s.state == "resolved" for items in s.outputs.values() for a in items}
    nodes = [Node(s.node, s.node, f"{s.state} {s.seconds:.1f} s", "step", s.state) for s in steps]
    edges, external = [], {}

    def source_of(a, key: str, consumer: str) -> str:
        if a.id in made and made[a.id] != consumer:
            return made[a.id]
        if a.id in found and found[a.id] != consumer and consumer not in found.values():
            return found[a.id]
        ext = f"artifact-{a.id}"
        span = mlmd.prop(a, "span")
        external.setdefault(ext, Node(ext, f"{key}: span {span}" if span is not None else key,
                                      f"#{a.id}, made by an earlier run", "external"))
        return ext

    for s in steps:
        group = s.outputs if s.state == "resolved" else s.inputs  # a resolver's "inputs" are what it found
        for key, items in group.items():
            edges += [Edge(source_of(a, key, s.node), s.node) for a in items]
    unique = list({(e.source, e.target): e for e in edges}.values())
    return layout(list(external.values()) + nodes, unique)


def lineage_dag(doc: Dict, decisions: List[Dict]) -> Drawing:
    """A version's lineage: its files (or bucket objects, or harvest) through every execution to the
    release, then the decisions taken about it. Executions are the boxes; an edge means the later
    one took an artifact the earlier one made (the artifacts themselves are listed on the page)."""
    nodes: List[Node] = []
    edges: List[Edge] = []
    maker = {a["id"]: a.get("produced_by") for a in doc["artifacts"].values()}
    for e in doc["executions"].values():
        nodes.append(Node(f"e{e['id']}", e["node"], f"{e['state']} in run {e['run_id']}", "step", e["state"]))
        for ids in e.get("inputs", {}).values():
            for i in ids:
                if maker.get(i):
                    edges.append(Edge(f"e{maker[i]}", f"e{e['id']}"))
    for w in doc["summary"].get("window", []):
        source = f"span-{w['span']}"
        label = f"harvested span {w['span']}" if w.get("harvest") else f"span {w['span']}"
        files = ", ".join(os.path.basename(f["name"]) for f in w["files"]) or "files not recorded"
        nodes.insert(0, Node(source, label, files, "file", href=f"span:{w['span']}"))
        edges.append(Edge(source, f"e{w['execution']}"))
        if w.get("harvest"):
            nodes.insert(0, Node(f"{source}-logs", "serving logs", w["harvest"]["log_source"], "file"))
            edges.append(Edge(f"{source}-logs", source))
        for i, o in enumerate(w["bucket_objects"]):
            nodes.insert(0, Node(f"{source}-obj{i}", "bucket object", o["name"], "file"))
            edges.append(Edge(f"{source}-obj{i}", source))
    root = doc["artifacts"][doc["root"]]
    nodes.append(Node("release", f"version {doc['version']}", root["type"], "artifact"))
    if root.get("produced_by"):
        edges.append(Edge(f"e{root['produced_by']}", "release"))
    for i, d in enumerate(decisions):
        nodes.append(Node(f"d{i}", d["action"], f"{d['at']} {d['user']}", "decision"))
        edges.append(Edge("release", f"d{i}"))
    unique = list({(e.source, e.target): e for e in edges}.values())
    return layout(nodes, unique)
