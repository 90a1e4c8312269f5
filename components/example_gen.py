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
ExampleValidator to name. The rest is faster than TFX's own, measured on a 200,000-row span
(benchmarks/results/scale.json): TFX builds each tf.Example cell by cell in Python, then parses
nothing but hashes one feature of each to split it, then serializes it again to write. Here
tfx_bsl encodes whole Arrow batches to serialized tf.Examples in C++, and each split group is
hashed once, by TFX's own partition function, so the splits are the stock ones
(tests/test_example_gen.py compares the two).
"""

from __future__ import annotations

import functools
import itertools
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import apache_beam as beam
import pyarrow as pa
import tensorflow as tf
from tfx.components.example_gen import base_example_gen_executor, driver as example_gen_driver, input_processor, utils
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.utils import io_utils, proto_utils
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


def grouped_examples(batch: pa.RecordBatch) -> Iterator[Tuple[bytes, bytes]]:
    """The batch's rows as (split group, serialized tf.Example with that group)."""
    groups = split_groups(batch)
    column = pa.array([[g] for g in groups], type=pa.large_list(pa.large_binary()))
    names = list(batch.schema.names)
    columns = list(batch.columns)
    if features.SPLIT_KEY in names:
        columns[names.index(features.SPLIT_KEY)] = column
    else:
        names.append(features.SPLIT_KEY)
        columns.append(column)
    encoder = example_coder.RecordBatchToExamplesEncoder()
    yield from zip(groups, encoder.encode(pa.RecordBatch.from_arrays(columns, names)))


@functools.lru_cache(maxsize=100_000)
def split_of(group: bytes, num_splits: int, buckets: Tuple[int, ...], split_config: bytes) -> int:
    """The split TFX's own partition function sends a group to (computed once per group: the
    hours of a day share it), so the splits are exactly those of a stock CsvExampleGen."""
    example = tf.train.Example()
    example.features.feature[features.SPLIT_KEY].bytes_list.value.append(group)
    config = example_gen_pb2.SplitConfig.FromString(split_config)
    return base_example_gen_executor._PartitionFn(example, num_splits, list(buckets), config)  # noqa: SLF001


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(Tuple[bytes, bytes])
def _CsvToGroupedRows(pipeline: beam.Pipeline, input_base: str, split_pattern: str):  # noqa: N802 - Beam's naming
    pattern = os.path.join(input_base, split_pattern)
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


def resolve_span(exec_properties: Dict[str, Any], examples: List) -> Dict[str, Any]:
    """Exec properties with `{SPAN}` resolved, as TFX's ExampleGen driver would have resolved them.

    The local runner and Vertex AI (its `lifecycle.preCacheCheck` hook) run that driver before
    this executor; open-source KFP runs no such hook, so the pattern arrives still holding
    `{SPAN}`. The same input processor then runs here: the latest span, or the one `range_config`
    names, with its fingerprint, set on the output artifact as the driver sets them. Already
    resolved properties pass through unchanged, so every runner ingests the same span.
    """
    input_config = proto_utils.json_to_proto(
        exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input())
    if not any("{SPAN}" in split.pattern for split in input_config.splits):
        if utils.SPAN_PROPERTY_NAME in exec_properties:  # a driver resolved it: the artifact says so too
            resolved = dict(exec_properties)  # numbers from a hook's ExecutorOutput arrive as floats
            for name in (utils.SPAN_PROPERTY_NAME, utils.VERSION_PROPERTY_NAME):
                resolved[name] = None if resolved.get(name) is None else int(resolved[name])
            for artifact in examples:
                example_gen_driver.update_output_artifact(resolved, artifact.mlmd_artifact)
        return exec_properties
    range_config = None
    if exec_properties.get(standard_component_specs.RANGE_CONFIG_KEY):
        range_config = proto_utils.json_to_proto(
            exec_properties[standard_component_specs.RANGE_CONFIG_KEY], range_config_pb2.RangeConfig())
    processor = input_processor.FileBasedInputProcessor(
        exec_properties[standard_component_specs.INPUT_BASE_KEY], input_config.splits, range_config)
    span, version = processor.resolve_span_and_version()
    for split in input_config.splits:
        split.pattern = processor.get_pattern_for_span_version(split.pattern, span, version)
    resolved = dict(exec_properties)
    resolved.update({standard_component_specs.INPUT_CONFIG_KEY: proto_utils.proto_to_json(input_config),
                     utils.SPAN_PROPERTY_NAME: span, utils.VERSION_PROPERTY_NAME: version,
                     utils.FINGERPRINT_PROPERTY_NAME: processor.get_input_fingerprint(span, version)})
    for artifact in examples:
        example_gen_driver.update_output_artifact(resolved, artifact.mlmd_artifact)
    return resolved


class Executor(csv_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties):  # noqa: N802 - TFX's naming
        exec_properties = resolve_span(exec_properties,
                                       output_dict.get(standard_component_specs.EXAMPLES_KEY, []))
        super().Do(input_dict, output_dict, exec_properties)

    def GenerateExamplesByBeam(self, pipeline: beam.Pipeline, exec_properties: Dict[str, Any]  # noqa: N802
                               ) -> Dict[str, beam.pvalue.PCollection]:
        """Serialized examples per output split, split by hashing `split_group` as TFX does.

        The examples leave this step serialized: TFX's own path parses them back to partition on
        one feature and serializes them again to write (a fifth of the component's time)."""
        input_config = proto_utils.json_to_proto(
            exec_properties[standard_component_specs.INPUT_CONFIG_KEY], example_gen_pb2.Input())
        output_config = proto_utils.json_to_proto(
            exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], example_gen_pb2.Output())
        split_config = output_config.split_config
        if len(input_config.splits) != 1 or split_config.partition_feature_name != features.SPLIT_KEY:
            raise ValueError(f"this ExampleGen splits one input by hashing '{features.SPLIT_KEY}' "
                             f"(pipelines/pipeline.py); got {len(input_config.splits)} input splits and "
                             f"partition_feature_name={split_config.partition_feature_name!r}")
        buckets = tuple(itertools.accumulate(split.hash_buckets for split in split_config.splits))
        serialized_config = split_config.SerializeToString(deterministic=True)
        splits = (pipeline
                  | "InputToRecord" >> _CsvToGroupedRows(
                      exec_properties[standard_component_specs.INPUT_BASE_KEY], input_config.splits[0].pattern)
                  | "SplitData" >> beam.Partition(
                      lambda row, n: split_of(row[0], n, buckets, serialized_config), len(buckets)))
        names = utils.generate_output_split_names(input_config, output_config)
        return {name: split | f"Serialized[{name}]" >> beam.Values() for name, split in zip(names, splits)}
