"""Complete a pushed model version so it can be audited, served and reproduced on its own.

Pusher copies only the SavedModel. A version in the registry also needs what the server and an
auditor need next to it: the schema it was validated against, the evaluation that blessed it, the
detectors fitted on its training data, the explainer's background with the global importances,
and a small holdout sample with the predictions the
SavedModel gave for it (the serving contract test replays these over HTTP). MANIFEST.json is
written last; a version without it is incomplete and the server refuses to load it.
"""

import datetime
import json
import os
from typing import Dict, List

import tensorflow as tf
from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.types.system_artifacts import Metrics

from cd4ml.contract import (BASELINE_VERSION, DETECTORS_DIR, EVALUATION_FILE, EXAMPLE_SIGNATURE, EXAMPLES_INPUT,
                            EXPLAINER_DIR, FEATURES_FILE, GUARDED, HOLDOUT, MANIFEST, OVERALL_SLICE, PENDING,
                            PREDICTIONS, MODEL_CARD, MODEL_CARD_PAGE, RELEASE_ARTIFACT, SAVED_MODEL_FILES, SCHEMA_FILE,
                            WINDOW_PROPERTY)
from components import evaluation, features, model_card
from components.registry import SERVING_STATE
from components.detectors import Detectors
from components.explainer import ModelExplanation
from components.files import copy_tree, write_text

HOLDOUT_ROWS = 50


class ModelRelease(types.Artifact):
    """A complete model version in the registry (SavedModel + schema + evaluation + detectors)."""

    TYPE_NAME = RELEASE_ARTIFACT
    TYPE_ANNOTATION = Metrics


def _decode(example: tf.train.Example) -> Dict[str, object]:
    row = {}
    for name, feat in example.features.feature.items():
        kind = feat.WhichOneof("kind")
        values = list(getattr(feat, kind).value) if kind else []
        value = values[0] if values else None
        row[name] = value.decode() if isinstance(value, bytes) else value
    return row


def holdout_sample(examples_uri: str, model_dir: str, rows: int = HOLDOUT_ROWS) -> List[Dict]:
    """The first `rows` eval examples with their label and the SavedModel's prediction."""
    files = sorted(tf.io.gfile.glob(os.path.join(examples_uri, "Split-eval", "*")))
    serialized = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP").take(rows):
        serialized.append(record.numpy())
    predict = tf.saved_model.load(model_dir).signatures[EXAMPLE_SIGNATURE]
    predictions = predict(**{EXAMPLES_INPUT: tf.constant(serialized)})[PREDICTIONS].numpy()
    sample = []
    for raw, prediction in zip(serialized, predictions):
        row = _decode(tf.train.Example.FromString(raw))
        sample.append({"features": {name: row[name] for name in features.FEATURE_NAMES},
                       "label": row[features.LABEL_KEY], "expected": float(prediction)})
    return sample


def write_version(destination: str, schema_uri: str, eval_uri: str, examples: types.Artifact,
                  detectors_uri: str, pipeline_name: str, promotion: str = "auto",
                  explanation_uri: str = "", compared: Dict[str, object] = None,
                  card: Dict[str, object] = None, rollout: str = "immediate") -> Dict[str, object]:
    """`compared`: what the pipeline's baseline lookup needs back (components/registry.py
    baseline_version, serving_state): the candidate model's URI, the version it was compared
    with and the registry state of its run. `card`: {"window": spans, "bounds": {...}, "data_root"}
    for the model card (components/model_card.py), written before the manifest."""
    summary = evaluation.summarize(eval_uri)
    tf.io.gfile.copy(os.path.join(schema_uri, SCHEMA_FILE), os.path.join(destination, SCHEMA_FILE), overwrite=True)
    write_text(os.path.join(destination, EVALUATION_FILE), json.dumps(summary, indent=2, sort_keys=True))
    write_text(os.path.join(destination, FEATURES_FILE), json.dumps(features.spec_to_json(), indent=2))
    sample = holdout_sample(examples.uri, destination)
    write_text(os.path.join(destination, HOLDOUT), "".join(json.dumps(r) + "\n" for r in sample))
    files = [*SAVED_MODEL_FILES, SCHEMA_FILE, FEATURES_FILE, EVALUATION_FILE, HOLDOUT]
    if detectors_uri:
        for src in tf.io.gfile.glob(os.path.join(detectors_uri, "*")):
            copy_tree(src, os.path.join(destination, DETECTORS_DIR, os.path.basename(src)))
        files.append(f"{DETECTORS_DIR}/")
    if explanation_uri:
        copy_tree(explanation_uri, os.path.join(destination, EXPLAINER_DIR))
        files.append(f"{EXPLAINER_DIR}/")
    manifest = {
        "version": os.path.basename(destination.rstrip("/")),
        "pipeline": pipeline_name,
        "span": examples.get_int_custom_property("span"),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metrics": summary["slices"].get(OVERALL_SLICE, {}),
        "features": features.FEATURE_NAMES,
        "files": files,
        **(compared or {}),
    }
    if promotion == "manual":  # pushed, but served only once a person approves it (cd4ml approve)
        manifest["approval"] = PENDING
    if rollout == GUARDED:  # served only once its canary is promoted (cd4ml/rollout.py)
        manifest["rollout"] = GUARDED
    if card is not None:
        model_card.write(destination, model_card.build(destination, manifest, **card), write_text)
        manifest["files"] += [MODEL_CARD, MODEL_CARD_PAGE]
    write_text(os.path.join(destination, MANIFEST), json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


@component
def ReleaseBundle(
    pushed_model: InputArtifact[standard_artifacts.PushedModel],
    schema: InputArtifact[standard_artifacts.Schema],
    evaluation_result: InputArtifact[standard_artifacts.ModelEvaluation],
    examples: InputArtifact[standard_artifacts.Examples],
    release: OutputArtifact[ModelRelease],
    model: InputArtifact[standard_artifacts.Model] = None,
    baseline: InputArtifact[standard_artifacts.Model] = None,
    window: InputArtifact[standard_artifacts.Examples] = None,
    detectors: InputArtifact[Detectors] = None,
    explanation: InputArtifact[ModelExplanation] = None,
    pipeline_name: Parameter[str] = "cd4ml",
    promotion: Parameter[str] = "auto",
    rollout: Parameter[str] = "immediate",
    mae_bound: Parameter[float] = 0.0,
    mae_regression_tolerance: Parameter[float] = 0.0,
    data_root: Parameter[str] = "",
):
    pushed = pushed_model.get_int_custom_property("pushed") == 1
    release.set_int_custom_property("released", int(pushed))
    if not pushed:
        return
    destination = pushed_model.get_string_custom_property("pushed_destination")
    compared = {}
    if model is not None:
        compared["model"] = model.uri
    if baseline is not None:
        compared["baseline"] = baseline.get_string_custom_property(BASELINE_VERSION) or None
        compared[SERVING_STATE] = baseline.get_string_custom_property(SERVING_STATE)
    spans = [int(w["span"]) for w in json.loads(window.get_string_custom_property(WINDOW_PROPERTY) or "[]")] \
        if window is not None else []
    card = {"window": spans or [examples.get_int_custom_property("span")], "data_root": data_root,
            "bounds": {"mae_bound": mae_bound, "mae_regression_tolerance": mae_regression_tolerance}}
    manifest = write_version(destination, schema.uri, evaluation_result.uri, examples,
                             detectors.uri if detectors else "", pipeline_name, promotion,
                             explanation.uri if explanation else "", compared, card, rollout)
    release.set_string_custom_property("version", manifest["version"])
    release.set_string_custom_property("destination", destination)
    release.set_string_custom_property("approval", manifest.get("approval", "not needed"))
    release.set_string_custom_property("rollout", manifest.get("rollout", "immediate"))
    release.set_int_custom_property("span", int(manifest["span"] or 0))
    for name, value in manifest["metrics"].items():
        release.set_float_custom_property(name, float(value))
