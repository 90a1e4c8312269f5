"""CsvExampleGen that gives every example the group the train/eval split hashes on, and converts
whole batches of rows to tf.Examples.

TFX splits by hashing one feature (`partition_feature_name`), and that feature must be in every
example. The published files group by day (all hours of one day share their weather, so splitting
hours of one day would put near-copies of training rows in the eval split). A span harvested from
the server's logs has no meaningful day when traffic came in a burst (a replay, a backfill), so it
carries its own `split_group` column (cd4ml/triggers/harvest.py). This executor fills the column
with `day-<day>` wherever a file does not carry it, so one split rule covers both kinds of span,
locally and in the compiled Kubeflow job.

The reading is TFX's: its CSV reader (header, quoted multi-line cells) and tfx_bsl's column type
inference, so a text cell in a numeric column still turns the column into text for the
ExampleValidator to name. The conversion is not: TFX's CsvExampleGen builds each tf.Example cell
by cell in Python, half of its time on a 200,000-row span (benchmarks/results/scale.json). Here
tfx_bsl decodes batches of rows into Arrow and encodes them to tf.Examples in C++, the same
features with the same types (tests/test_example_gen.py compares the two on a span).
"""

from __future__ import annotations

import os
from typing import Iterator, List, Optional

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx_bsl.coders import csv_decoder, example_coder

from components import features

# Rows per Arrow batch: large enough that the per-batch cost vanishes, small enough to stay a few MB.
BATCH_ROWS = 1000
MISSING_DAY = b"day-missing"


def split_groups(batch: pa.RecordBatch) -> List[bytes]:
    """Each row's split group: the one the file gave when non-empty, else `day-<day>`.

    A row without an integer day still gets a group, so the split works and the validator names
    the missing day instead of Beam failing on the partition.
    """
    names = batch.schema.names
    given = _first_values(batch, features.SPLIT_KEY) if features.SPLIT_KEY in names else [None] * batch.num_rows
    days = _first_values(batch, "day") if "day" in names else [None] * batch.num_rows
    groups = []
    for group, day in zip(given, days):
        if group:
            groups.append(group if isinstance(group, bytes) else str(group).encode())
        elif isinstance(day, int):
            groups.append(features.day_group(day).encode())
        else:
            groups.append(MISSING_DAY)
    return groups


def _first_values(batch: pa.RecordBatch, name: str) -> List[Optional[object]]:
    """The first value of each row's cell in column `name` (None for an empty or null cell)."""
    return [cell[0] if cell else None for cell in batch.column(batch.schema.get_field_index(name)).to_pylist()]


def grouped_examples(batch: pa.RecordBatch) -> Iterator[tf.train.Example]:
    """The batch's rows as tf.Examples, each with its split group."""
    groups = pa.array([[g] for g in split_groups(batch)], type=pa.large_list(pa.large_binary()))
    names = list(batch.schema.names)
    columns = list(batch.columns)
    if features.SPLIT_KEY in names:
        columns[names.index(features.SPLIT_KEY)] = groups
    else:
        names.append(features.SPLIT_KEY)
        columns.append(groups)
    encoder = example_coder.RecordBatchToExamplesEncoder()
    for serialized in encoder.encode(pa.RecordBatch.from_arrays(columns, names)):
        # ExampleGen partitions on a feature of a parsed example (and serializes it again).
        yield tf.train.Example.FromString(serialized)


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _CsvToGroupedExample(pipeline: beam.Pipeline, exec_properties, split_pattern):  # noqa: N802 - TFX's naming
    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY], split_pattern)
    files = fileio.glob(pattern)
    if not files:
        raise RuntimeError(f"Split pattern {pattern} does not match any files.")
    column_names = io_utils.load_csv_column_names(files[0])
    for other in files[1:]:
        if io_utils.load_csv_column_names(other) != column_names:
            raise RuntimeError(f"Files in same split {pattern} have different header: {files[0]}, {other}.")
    return (pipeline
            | "CreateFilenames" >> beam.Create(files)
            | "ReadFromText" >> beam.ParDo(csv_executor._ReadCsvRecordsFromTextFile())  # noqa: SLF001
            | "CSVToRecordBatch" >> csv_decoder.CSVToRecordBatch(column_names=column_names,
                                                                 desired_batch_size=BATCH_ROWS)
            | "ToGroupedExamples" >> beam.FlatMap(grouped_examples))


class Executor(csv_executor.Executor):
    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 - TFX's interface
        return _CsvToGroupedExample
