"""DetectorTrainer: fit the drift and outlier detectors in the pipeline, next to the model.

They are fitted on the training split only (the eval split stays unseen, as for the model) and
become an MLMD artifact, so a pushed version records which detectors match it. The work itself is
in `detector_core`, which the server also imports without TFX.
"""

import os

from tfx import types
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from cd4ml.contract import DETECTORS_ARTIFACT, SCHEMA_FILE
from components import detector_fit, features
from scoring import detector_core


class Detectors(types.Artifact):
    """A saved detector set: drift.npz, outlier.npz and meta.json (scoring/detector_core.py)."""

    TYPE_NAME = DETECTORS_ARTIFACT


def check_schema_domains(schema_uri: str) -> None:
    """The chi-squared tests count categories from features.py; the schema must say the same."""
    from tensorflow_metadata.proto.v0 import schema_pb2
    from google.protobuf import text_format
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(schema_uri, SCHEMA_FILE)) as fh:
        schema = text_format.Parse(fh.read(), schema_pb2.Schema())
    by_name = {f.name: f for f in schema.feature}
    domains = {d.name: d for d in schema.string_domain}
    for f in features.FEATURES:
        if not f.is_categorical or f.name not in by_name:
            continue
        spec = by_name[f.name]
        if spec.HasField("domain") and spec.domain in domains:
            size = len(domains[spec.domain].value)
        elif spec.HasField("string_domain"):
            size = len(spec.string_domain.value)
        elif spec.HasField("int_domain"):
            size = spec.int_domain.max - spec.int_domain.min + 1
        else:
            continue
        if size != len(f.vocabulary):
            raise ValueError(f"feature '{f.name}': the schema has {size} categories, features.py has "
                             f"{len(f.vocabulary)}; regenerate the schema (`cd4ml schema`)")


@component
def DetectorTrainer(
    examples: InputArtifact[standard_artifacts.Examples],
    schema: InputArtifact[standard_artifacts.Schema],
    detectors: OutputArtifact[Detectors],
    seed: Parameter[int] = 42,
):
    check_schema_domains(schema.uri)
    rows = detector_fit.read_examples(os.path.join(examples.uri, "Split-train"))
    drift, outlier, meta = detector_fit.fit(detector_core.encode(rows), seed=seed)
    detector_core.save(detectors.uri, drift, outlier, meta)
    detectors.set_int_custom_property("n_reference", meta["n_reference"])
    detectors.set_float_custom_property("outlier_threshold", meta["outlier"]["threshold"])
