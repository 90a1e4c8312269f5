"""Executor tests in TFX's style (tfx/components/example_validator/executor_test.py): each of our
components' executors called through `Do()` with real artifacts, and its outputs on TensorFlow's
`ram://` filesystem, a URI that local-file calls (open, os, shutil, np.save) cannot reach. On
Kubeflow an artifact URI is gs://; a component that writes with local-file calls there writes into
a folder named `gs:` inside the pod and loses its output: here that fails the test instead.

Also: our artifact types load the way a Kubeflow pod loads them (TFX's entrypoint imports a
type by its schema title), and ExampleGen resolves its span without the driver open-source KFP
never runs.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from cd4ml.contract import DETECTORS_ARTIFACT, EXPLANATION_ARTIFACT, RELEASE_ARTIFACT, SCHEMA_FILE
from components import features, schema as curated_schema
from scoring import detector_core
from tests.conftest import sample_rows, write_rows


@pytest.fixture
def ram():
    """A fresh ram:// folder; the filesystem is per process and forgets it afterwards."""
    root = f"ram://cd4ml-test-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(root)
    yield root
    try:
        tf.io.gfile.rmtree(root)
    except tf.errors.NotFoundError:  # ram:// rmtree fails where a folder's name prefixes a sibling's
        pass  # (gen-1, gen-1b): TensorFlow's, seen in 2.16; the files go with the process anyway


def _artifact(cls, uri: str, split_names=None):
    artifact = cls()
    artifact.uri = uri
    if split_names is not None:
        artifact.split_names = artifact_utils.encode_split_names(split_names)
    tf.io.gfile.makedirs(uri)
    return artifact


def _curated_schema(uri: str):
    with open(curated_schema.SCHEMA_PATH, "rb") as fh:
        data = fh.read()
    with tf.io.gfile.GFile(os.path.join(uri, SCHEMA_FILE), "wb") as fh:
        fh.write(data)


def _executor(component):
    return component.EXECUTOR_SPEC.executor_class()


def _not_on_local_disk(uri: str):
    """The URI's path as a local path does not exist: nothing was written through local-file calls."""
    local = uri.split("://", 1)[1]
    assert not os.path.exists(local) and not os.path.exists(os.path.join(os.getcwd(), "ram:"))


def test_validation_gate_passes_the_schema_through_on_a_ram_uri(ram):
    from components.validation_gate import DataValidationGate

    anomalies = _artifact(standard_artifacts.ExampleAnomalies, f"{ram}/anomalies", ["train", "eval"])
    schema = _artifact(standard_artifacts.Schema, f"{ram}/schema")
    _curated_schema(schema.uri)
    validated = _artifact(standard_artifacts.Schema, f"{ram}/validated")

    _executor(DataValidationGate).Do({"anomalies": [anomalies], "schema": [schema]},
                                     {"validated_schema": [validated]}, {})

    with tf.io.gfile.GFile(os.path.join(validated.uri, SCHEMA_FILE)) as out, \
            open(curated_schema.SCHEMA_PATH) as source:
        assert out.read() == source.read()
    _not_on_local_disk(validated.uri)


def test_validation_gate_stops_on_an_anomaly_read_from_a_ram_uri(ram):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from components.validation_gate import ANOMALIES_FILE, DataValidationError, DataValidationGate

    anomalies = _artifact(standard_artifacts.ExampleAnomalies, f"{ram}/anomalies", ["train", "eval"])
    found = anomalies_pb2.Anomalies()
    info = found.anomaly_info["hum"]
    info.short_description = "Out-of-range values"
    info.reason.add(short_description="Out-of-range values", description="Unexpectedly large value: 7.")
    tf.io.gfile.makedirs(f"{anomalies.uri}/Split-eval")
    with tf.io.gfile.GFile(f"{anomalies.uri}/Split-eval/{ANOMALIES_FILE}", "wb") as fh:
        fh.write(found.SerializeToString())
    schema = _artifact(standard_artifacts.Schema, f"{ram}/schema")
    _curated_schema(schema.uri)
    validated = _artifact(standard_artifacts.Schema, f"{ram}/validated")

    with pytest.raises(DataValidationError) as refused:
        _executor(DataValidationGate).Do({"anomalies": [anomalies], "schema": [schema]},
                                         {"validated_schema": [validated]}, {})
    assert refused.value.problems == [{"split": "eval", "feature": "hum", "rule": "Out-of-range values",
                                       "description": "Unexpectedly large value: 7."}]
    assert not tf.io.gfile.exists(os.path.join(validated.uri, SCHEMA_FILE))


def _examples_on(uri: str, rows):
    """An Examples artifact at `uri` holding `rows` (all in Split-train) as ExampleGen writes them."""
    examples = _artifact(standard_artifacts.Examples, uri, ["train", "eval"])
    for split, part in (("train", rows), ("eval", rows[:20])):
        tf.io.gfile.makedirs(f"{uri}/Split-{split}")
        with tf.io.TFRecordWriter(f"{uri}/Split-{split}/data_tfrecord-00000-of-00001.gz",
                                  options="GZIP") as writer:
            for row in part:
                example = tf.train.Example()
                for f in features.all_columns():
                    value = features.parse_row(row).get(f.name)
                    if value is None:
                        continue
                    feature = example.features.feature[f.name]
                    if f.dtype == "string":
                        feature.bytes_list.value.append(str(value).encode())
                    elif f.dtype == "int":
                        feature.int64_list.value.append(int(value))
                    else:
                        feature.float_list.value.append(float(value))
                writer.write(example.SerializeToString())
    examples.set_int_custom_property("span", 1)
    return examples


def test_detector_trainer_writes_its_set_to_a_ram_uri_and_it_loads(ram, tmp_path):
    from components.detectors import DetectorTrainer, Detectors

    rows = sample_rows(1, every=4)
    examples = _examples_on(f"{ram}/examples", rows)
    schema = _artifact(standard_artifacts.Schema, f"{ram}/schema")
    _curated_schema(schema.uri)
    detectors = _artifact(Detectors, f"{ram}/detectors")

    _executor(DetectorTrainer).Do({"examples": [examples], "schema": [schema]},
                                  {"detectors": [detectors]}, {"seed": 7})

    written = sorted(tf.io.gfile.listdir(detectors.uri))
    assert written == sorted([detector_core.DRIFT_FILE, detector_core.OUTLIER_FILE, detector_core.META])
    _not_on_local_disk(detectors.uri)
    assert detectors.get_int_custom_property("n_reference") > 0
    # What was written through gfile is a complete set: the server's loader takes it where it was
    # written (through the same layer, no local copy), and as a local copy alike.
    local = tmp_path / "copy"
    local.mkdir()
    for name in written:
        tf.io.gfile.copy(f"{detectors.uri}/{name}", str(local / name))
    for source in (detectors.uri, str(local)):
        loaded = detector_core.load(source)
        assert loaded.meta["n_reference"] == detectors.get_int_custom_property("n_reference")
        assert loaded.threshold == pytest.approx(detectors.get_float_custom_property("outlier_threshold"))


@pytest.mark.parametrize("type_name", [DETECTORS_ARTIFACT, EXPLANATION_ARTIFACT, RELEASE_ARTIFACT])
def test_our_artifact_types_load_through_the_kubeflow_entrypoint(type_name):
    """TFX's Kubeflow entrypoint imports a custom type by its schema title as module.attribute;
    it must give back our class (a pod otherwise fails: 'Could not import cd4ml.Detectors')."""
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entrypoint

    raw = pipeline_spec_pb2.ArtifactList()
    artifact = raw.artifacts.add(name="projects/1/artifacts/7", uri="gs://bucket/root/task/out")
    artifact.type.schema_title = type_name
    artifact.metadata.update({"span": 2})
    parsed = entrypoint.parse_raw_artifact_dict({"out": raw}, {})["out"][0]
    assert parsed.TYPE_NAME == type_name
    assert parsed.uri == "gs://bucket/root/task/out"
    assert type(parsed).__module__.startswith("components.")


def test_example_gen_resolves_the_latest_span_without_a_driver(tmp_path):
    """Open-source KFP runs no driver: the pattern reaches the executor holding {SPAN}."""
    from tfx.proto import example_gen_pb2, range_config_pb2
    from tfx.utils import proto_utils

    from components.example_gen import resolve_span

    for span in (1, 2):
        write_rows(str(tmp_path / f"span-{span}" / "rows.csv"), sample_rows(span, every=30))
    inputs = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="single_split",
                                                                        pattern="span-{SPAN}/*.csv")])
    props = {"input_base": str(tmp_path), "input_config": proto_utils.proto_to_json(inputs)}
    examples = standard_artifacts.Examples()

    latest = resolve_span(props, [examples])
    assert latest["span"] == 2 and examples.get_int_custom_property("span") == 2
    assert json.loads(latest["input_config"])["splits"][0]["pattern"] == "span-2/*.csv"
    assert latest["input_fingerprint"]

    pinned = dict(props, range_config=proto_utils.proto_to_json(range_config_pb2.RangeConfig(
        static_range=range_config_pb2.StaticRange(start_span_number=1, end_span_number=1))))
    assert json.loads(resolve_span(pinned, [])["input_config"])["splits"][0]["pattern"] == "span-1/*.csv"
    # What a driver resolved already passes through untouched (the local runner, Vertex AI).
    assert resolve_span(latest, []) is latest


def _version(registry: str, name: str, manifest: dict):
    """A complete version in a registry: a SavedModel-shaped folder and its manifest (written last)."""
    tf.io.gfile.makedirs(f"{registry}/{name}/variables")
    with tf.io.gfile.GFile(f"{registry}/{name}/saved_model.pb", "wb") as fh:
        fh.write(name.encode())
    with tf.io.gfile.GFile(f"{registry}/{name}/variables/variables.index", "wb") as fh:
        fh.write(b"index")
    with tf.io.gfile.GFile(f"{registry}/{name}/MANIFEST.json", "w") as fh:
        fh.write(json.dumps(dict(manifest, version=name)))


def test_serving_baseline_copies_the_version_serving_and_skips_the_candidate_itself(ram):
    """The baseline is what the registry serves (its pin first), copied into the output on a
    ram:// URI; when what serves is the candidate itself (an unchanged rerun), the version it
    was compared with; with nothing served, an empty artifact marked so."""
    from components.baseline import SERVING_FORMAT, ServingBaseline, has_baseline

    registry = f"{ram}/registry"
    candidate = _artifact(standard_artifacts.Model, f"{ram}/trainer/model")

    def baseline(state="s"):
        out = _artifact(standard_artifacts.Model, f"{ram}/baseline-{uuid.uuid4().hex}")
        _executor(ServingBaseline).Do({"candidate": [candidate]}, {"baseline": [out]},
                                      {"registry": registry, "serving_state": state})
        return out

    empty = baseline("none")
    assert not has_baseline(empty) and tf.io.gfile.listdir(empty.uri) == []
    _version(registry, "1000", {"span": 1, "model": f"{ram}/older/model"})
    _version(registry, "1001", {"span": 2, "model": f"{ram}/other/model"})
    served = baseline()
    assert has_baseline(served) and served.get_string_custom_property("version") == "1001"
    assert served.get_string_custom_property("serving_state") == "s"
    with tf.io.gfile.GFile(f"{served.uri}/{SERVING_FORMAT}/saved_model.pb", "rb") as fh:
        assert fh.read() == b"1001"
    _not_on_local_disk(served.uri)
    with tf.io.gfile.GFile(f"{registry}/SERVING.json", "w") as fh:
        fh.write(json.dumps({"version": "1000"}))  # an operator's rollback
    assert baseline().get_string_custom_property("version") == "1000"
    tf.io.gfile.remove(f"{registry}/SERVING.json")
    _version(registry, "1002", {"span": 2, "model": candidate.uri, "baseline": "1001"})
    assert baseline().get_string_custom_property("version") == "1001"  # not the candidate itself


def test_training_window_trusts_this_span_and_joins_the_one_before(ram):
    from components.window import TrainingWindow

    registry = f"{ram}/registry"
    schema = _artifact(standard_artifacts.Schema, f"{ram}/schema")
    rows = sample_rows(1, every=10)

    def window(span, uri, num_spans=2):
        examples = _examples_on(uri, rows)
        examples.set_int_custom_property("span", span)
        out = _artifact(standard_artifacts.Examples, f"{ram}/window-{uuid.uuid4().hex}")
        _executor(TrainingWindow).Do({"examples": [examples], "schema": [schema]}, {"window": [out]},
                                     {"registry": registry, "num_spans": num_spans})
        return out

    first = window(1, f"{ram}/gen-1")
    assert json.loads(first.get_string_custom_property("window")) == [{"span": 1, "examples": f"{ram}/gen-1"}]
    second = window(2, f"{ram}/gen-2")
    assert [w["span"] for w in json.loads(second.get_string_custom_property("window"))] == [2, 1]
    assert second.get_int_custom_property("span") == 2
    assert artifact_utils.decode_split_names(second.split_names) == ["train", "eval"]
    assert sorted(tf.io.gfile.listdir(f"{second.uri}/Split-train")) == [
        "span-1-data_tfrecord-00000-of-00001.gz", "span-2-data_tfrecord-00000-of-00001.gz"]
    _not_on_local_disk(second.uri)
    # The window ends at the run's span: span 1 again sees no span 2; a window of one is the span.
    assert [w["span"] for w in json.loads(window(1, f"{ram}/gen-1b").get_string_custom_property("window"))] == [1]
    assert [w["span"] for w in json.loads(window(2, f"{ram}/gen-2b", 1).get_string_custom_property("window"))] == [2]
    # Each span once, with its newest trusted examples.
    assert json.loads(window(2, f"{ram}/gen-2c").get_string_custom_property("window")) == [
        {"span": 2, "examples": f"{ram}/gen-2c"}, {"span": 1, "examples": f"{ram}/gen-1b"}]


def test_tuned_hyperparameters_hand_on_the_newest_tuning_or_the_defaults(ram):
    from cd4ml.contract import TUNED_HYPERPARAMETERS_FILE
    from components import registry as reg
    from components.tuning import NO_SEARCH, TunedHyperparameters, publish

    registry = f"{ram}/registry"

    def handed():
        out = _artifact(standard_artifacts.HyperParameters, f"{ram}/hp-{uuid.uuid4().hex}")
        _executor(TunedHyperparameters).Do({}, {"hyperparameters": [out]},
                                           {"registry": registry, "hyperparameters_state": "x"})
        with tf.io.gfile.GFile(f"{out.uri}/{TUNED_HYPERPARAMETERS_FILE}") as fh:
            return out, json.load(fh)

    out, config = handed()
    assert config == NO_SEARCH and out.get_string_custom_property("source") == "defaults"
    assert reg.hyperparameters_state(registry) == "none"
    publish(registry, {"space": [], "values": {"units": 32}}, tuned_by=f"{ram}/tuner-1", now=1000)
    name = publish(registry, {"space": [], "values": {"units": 128}}, tuned_by=f"{ram}/tuner-2", now=2000)
    out, config = handed()
    assert config["values"] == {"units": 128} and out.get_string_custom_property("source") == "reused"
    assert out.get_string_custom_property("tuned_by") == f"{ram}/tuner-2"
    assert reg.hyperparameters_state(registry) == name
    assert tf.io.gfile.listdir(out.uri) == [TUNED_HYPERPARAMETERS_FILE]  # the Trainer takes the only file
    _not_on_local_disk(out.uri)
