"""CsvExampleGen that gives every example the group the train/eval split hashes on.

TFX splits by hashing one feature (`partition_feature_name`), and that feature must be in every
example. The published files group by day (all hours of one day share their weather, so splitting
hours of one day would put near-copies of training rows in the eval split). A span harvested from
the server's logs has no meaningful day when traffic came in a burst (a replay, a backfill), so it
carries its own `split_group` column (cd4ml/triggers/harvest.py). This executor fills the column
with `day-<day>` wherever a file does not carry it, so one split rule covers both kinds of span,
locally and in the compiled Kubeflow job.
"""

from __future__ import annotations

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as csv_executor

from components import features


def with_split_group(example: tf.train.Example) -> tf.train.Example:
    """The example with `split_group` set (kept when the file gave a non-empty one).

    Set in place: the example is the one TFX's CSV converter just built for this Map alone, and a
    copy per row was a third of CsvExampleGen on a 200,000-row span (46 us a row, measured).
    """
    feature = example.features.feature
    given = feature.get(features.SPLIT_KEY)
    if given is not None and given.bytes_list.value and given.bytes_list.value[0]:
        return example
    days = feature["day"].int64_list.value
    # A row without a day still gets a group, so the split works and the validator names the
    # missing day instead of Beam failing on the partition.
    group = features.day_group(days[0]) if days else "day-missing"
    feature[features.SPLIT_KEY].bytes_list.value[:] = [group.encode()]
    return example


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _CsvToGroupedExample(pipeline: beam.Pipeline, exec_properties, split_pattern):  # noqa: N802 - TFX's naming
    return (pipeline
            | "CsvToExample" >> csv_executor._CsvToExample(exec_properties, split_pattern)  # noqa: SLF001
            | "SplitGroup" >> beam.Map(with_split_group))


class Executor(csv_executor.Executor):
    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:  # noqa: N802 - TFX's interface
        return _CsvToGroupedExample
