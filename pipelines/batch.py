"""Batch scoring: a version's model over a file, a span or a bucket prefix, on Beam.

`cd4ml predict [--version V] INPUT OUTPUT`: Beam's own batch inference (`RunInference`) with a
model handler that loads the version's SavedModel once per worker and calls its `serving_encoded`
signature on batches Beam sizes itself. Each row is checked against the version's own feature
specification, as the server checks a request (`features.json`, Feature.check): a bad row goes
to the rejects with the field and the rule, never dropped in silence. Each prediction carries the
version that made it. The DirectRunner here; Dataflow with the flags `cd4ml compile --dataflow`
uses (`--beam-args`). INPUT: a CSV or JSON-lines file, a folder or `gs://` prefix of them, or a
span of the data root (`span:N`); OUTPUT: a folder or `gs://` prefix, written as sharded JSON lines.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

PREDICTIONS, REJECTS = "predictions", "rejects"


@dataclasses.dataclass
class BatchResult:
    version: str
    inputs: List[str]
    output: str
    scored: int = 0
    rejected: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        out = self.output.rstrip("/")
        return (f"cd4ml predict: version {self.version} scored {self.scored} rows, rejected {self.rejected} "
                f"(with the field and the rule) in {self.seconds:.1f} s from {len(self.inputs)} file(s);\n"
                f"  predictions: {out}/{PREDICTIONS}-*.jsonl\n  rejects:     {out}/{REJECTS}-*.jsonl")


def input_files(source: str, data_root: str) -> List[str]:
    """The files INPUT names: a file, every CSV/JSON-lines file under a folder or prefix, a span."""
    from apache_beam.io.filesystems import FileSystems

    if source.startswith("span:"):
        source = os.path.join(data_root, f"span-{int(source[5:])}")
    if FileSystems.exists(source) and not _is_folder(source):
        return [source]
    pattern = source.rstrip("/") + "/*"
    found = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list
             if m.path.endswith((".csv", ".jsonl", ".json"))]
    if not found:
        raise ValueError(f"{source}: no .csv or .jsonl file to score")
    return sorted(found)


def _is_folder(path: str) -> bool:
    return not path.startswith("gs://") and os.path.isdir(path)


def read_rows(path: str) -> Iterable[Tuple[str, Dict[str, object]]]:
    """(where, row) for each row of a CSV (cells as text) or JSON-lines file (values typed)."""
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        if path.endswith(".csv"):
            for number, row in enumerate(csv.DictReader(text), start=2):
                yield f"{path}:{number}", row
        else:
            for number, line in enumerate(text, start=1):
                if line.strip():
                    yield f"{path}:{number}", json.loads(line)


def check_row(row: Dict[str, object], spec) -> Tuple[Optional[Dict[str, object]], str]:
    """(the row's feature values, "") or (None, the first broken rule, naming the field): a CSV
    cell is read as its column's type first, then every value is checked as the server checks it."""
    values = {}
    for f in spec:
        value = row.get(f.name)
        if value is None or value == "":
            return None, f"feature '{f.name}': missing"
        if isinstance(value, str) and f.dtype != "string":
            try:
                value = float(value) if f.dtype == "float" or not value.lstrip("-").isdigit() else int(value)
            except ValueError:
                return None, f"feature '{f.name}': expected a number ({f.dtype}), got the string {value!r}"
        problem = f.check(value)
        if problem:
            return None, problem
        values[f.name] = value
    return values, ""


@dataclasses.dataclass
class Loaded:
    """What a worker loads once (Beam shares it between threads by a weak reference)."""

    signature: object
    explainer: Optional[object] = None


class VersionModel(ModelHandler):
    """The version's SavedModel as a RunInference model: rows encoded as the server encodes them
    in, one prediction each out (with `explain`, also each feature's exact Shapley attribution
    against the background the version ships, as the servers' explain endpoints answer). Beam
    pickles the handler (a path); each worker loads the model once and shares it across threads."""

    def __init__(self, version_dir: str, spec, explain: bool = False):
        self.version_dir, self.spec, self.explain = version_dir, tuple(spec), explain

    def load_model(self):
        from scoring import explain
        from components import registry as reg
        from scoring.raw_signature import RawSignature

        signature = RawSignature(self.version_dir, self.spec)
        if not self.explain:
            return Loaded(signature)
        background = reg.read_text(background_path(self.version_dir))
        return Loaded(signature, explain.Explainer(signature.predict_encoded,
                                                   explain.background_from_json(background, self.spec), self.spec))

    def run_inference(self, batch: Sequence[np.ndarray], model: "Loaded", inference_args=None):
        signature, explainer = model.signature, model.explainer
        rows = np.stack(batch).astype(np.float32)
        if explainer is None:
            return [PredictionResult(x, float(y)) for x, y in zip(batch, np.ravel(signature.predict_encoded(rows)))]
        explained = explainer.explain(rows)
        return [PredictionResult(x, {"prediction": p, "base_value": explained.base_value, "attributions": a})
                for x, p, a in zip(batch, explained.predictions, explained.attributions)]

    def get_metrics_namespace(self) -> str:
        return "cd4ml_predict"


def background_path(version_dir: str) -> str:
    from cd4ml.contract import EXPLAINER_DIR
    from scoring.explain import BACKGROUND_FILE

    return os.path.join(version_dir, EXPLAINER_DIR, BACKGROUND_FILE)


def predict(registry: str, source: str, output: str, version: Optional[str] = None, data_root: str = "",
            beam_args: Sequence[str] = (), explain: bool = False, progress=print) -> BatchResult:
    from cd4ml.contract import FEATURES_FILE
    from components import features
    from components import registry as reg

    started = time.monotonic()
    version = version or reg.target(registry)[0]
    if not version or not reg.is_complete(registry, version):
        raise ValueError(f"no complete version {version or ''} to score with in {registry}")
    version_dir = os.path.join(registry, version)
    spec = features.spec_from_json(json.loads(reg.read_text(os.path.join(version_dir, FEATURES_FILE))))
    if explain and not reg.exists(background_path(version_dir)):
        raise ValueError(f"version {version} ships no explainer (pushed before cd4ml explained): --explain needs one")
    files = input_files(source, data_root)
    progress(f"cd4ml predict: version {version}, {len(files)} file(s) from {source} -> {output}")

    def checked(item):
        where, row = item
        values, problem = check_row(row, spec)
        if values is None:
            yield beam.pvalue.TaggedOutput(REJECTS, {"where": where, "problem": problem, "row": row})
        else:  # the values ride along in the key: RunInference hands keys back untouched
            yield (where, json.dumps(values)), np.asarray(features.encode_row(values, spec), dtype=np.float32)

    def line(key, result) -> str:
        where, row = key
        answer = result.inference if isinstance(result.inference, dict) else {"prediction": result.inference}
        return json.dumps({"where": where, "version": version, "features": json.loads(row), **answer},
                          sort_keys=True)

    out = output.rstrip("/")
    with beam.Pipeline(options=PipelineOptions(list(beam_args) or ["--runner=DirectRunner"])) as p:
        parts = (p | "Files" >> beam.Create(files) | "Rows" >> beam.FlatMap(read_rows)
                 | "Check" >> beam.FlatMap(checked).with_outputs(REJECTS, main="valid"))
        _ = (parts.valid | "Predict" >> RunInference(KeyedModelHandler(VersionModel(version_dir, spec, explain)))
             | "Line" >> beam.MapTuple(line)
             | "WritePredictions" >> beam.io.WriteToText(f"{out}/{PREDICTIONS}", ".jsonl"))
        _ = (parts[REJECTS] | "RejectLine" >> beam.Map(lambda r: json.dumps(r, sort_keys=True, default=str))
             | "WriteRejects" >> beam.io.WriteToText(f"{out}/{REJECTS}", ".jsonl"))
    result = BatchResult(version, files, output, seconds=round(time.monotonic() - started, 1))
    result.scored, result.rejected = (_count_lines(output, name) for name in (PREDICTIONS, REJECTS))
    return result


def _count_lines(output: str, name: str) -> int:
    from apache_beam.io.filesystems import FileSystems

    total = 0
    for match in FileSystems.match([f"{output.rstrip('/')}/{name}-*"]):
        for found in match.metadata_list:
            with FileSystems.open(found.path) as fh:
                total += sum(1 for line in io.TextIOWrapper(fh, encoding="utf-8") if line.strip())
    return total
