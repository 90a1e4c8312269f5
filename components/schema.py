"""The curated schema: rendered from the feature module, kept in the repo, imported by the pipeline.

The pipeline imports `components/schema/schema.pbtxt` with ImportSchemaGen instead of
re-inferring a schema from every span, so a drifted or broken span is judged against what we
decided the data should be, not against itself. The file is generated from `features.py`
(`cd4ml schema --write`) and a test fails when the two disagree, so there is still one source
of truth. SchemaGen runs beside it to propose updates (`cd4ml schema --propose`).
"""

from __future__ import annotations

import os

from tensorflow_metadata.proto.v0 import schema_pb2
from google.protobuf import text_format

from cd4ml.contract import SCHEMA_FILE
from components import features

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", SCHEMA_FILE)
TRAINING, SERVING = "TRAINING", "SERVING"

_TYPES = {"int": schema_pb2.INT, "float": schema_pb2.FLOAT, "string": schema_pb2.BYTES}


def build_schema() -> schema_pb2.Schema:
    schema = schema_pb2.Schema()
    schema.default_environment.extend([TRAINING, SERVING])
    for col in features.all_columns():
        f = schema.feature.add()
        f.name = col.name
        f.type = _TYPES[col.dtype]
        if col.optional and col.name != features.SPLIT_KEY:
            # May be absent from a whole file (a harvested span has no casual/registered): no
            # presence rule, and one value where present (a fixed shape would demand it everywhere).
            f.presence.min_count = 0
            f.value_count.min = 1
            f.value_count.max = 1
        else:
            # ExampleGen adds the split group to every example, so in examples it is always there.
            f.presence.min_fraction = 1.0
            f.presence.min_count = 1
            # A fixed shape of one value: tf.Transform and the serving signature get dense tensors.
            f.shape.dim.add().size = 1
        if col.description:
            f.annotation.comment.append(col.description)
        if col.kind == features.KEY:
            pass  # free-form group names: no domain
        elif col.dtype == "string":
            f.string_domain.name = col.name
            f.string_domain.value.extend(col.vocabulary)
            f.distribution_constraints.min_domain_mass = 1.0
        elif col.is_categorical:
            f.int_domain.min = min(col.vocabulary)
            f.int_domain.max = max(col.vocabulary)
            f.int_domain.is_categorical = True
        elif col.dtype == "int":
            f.int_domain.min = int(col.low)
            f.int_domain.max = int(col.high)
        else:
            f.float_domain.min = col.low
            f.float_domain.max = col.high
        if col.name != features.LABEL_KEY and col.name in features.FEATURE_NAMES:
            continue
        # Label and carried columns are absent from serving requests.
        f.not_in_environment.append(SERVING)
    return schema


def render() -> str:
    header = ("# Generated from components/features.py by `cd4ml schema --write`; do not edit by hand.\n"
              "# The pipeline imports this file (ImportSchemaGen) and validates every span against it.\n")
    return header + text_format.MessageToString(build_schema())


def load(path: str = SCHEMA_PATH) -> schema_pb2.Schema:
    with open(path) as fh:
        return text_format.Parse(fh.read(), schema_pb2.Schema())


def write(path: str = SCHEMA_PATH) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(render())
    return path


def is_current(path: str = SCHEMA_PATH) -> bool:
    return os.path.exists(path) and load(path) == build_schema()
