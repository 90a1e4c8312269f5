"""Our CsvExampleGen (components/example_gen.py) against TFX's stock one, on real span rows."""

from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
import pytest
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.proto import example_gen_pb2
from tfx.utils import proto_utils

from components import example_gen, features
from tests.conftest import sample_rows, write_rows


def _canonical(record) -> str:
    """An example (or its serialized bytes) as sorted JSON of {feature: [kind, values]}."""
    example = tf.train.Example.FromString(record) if isinstance(record, bytes) else record
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        out[name] = [kind, [v.decode() if isinstance(v, bytes) else round(v, 6) for v in values]]
    return json.dumps(out, sort_keys=True)


def _properties(input_base: str, partition: str = features.SPLIT_KEY):
    inputs = example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(name="single_split", pattern="*.csv")])
    outputs = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name="train", hash_buckets=4),
        example_gen_pb2.SplitConfig.Split(name="eval", hash_buckets=1)], partition_feature_name=partition))
    return {"input_base": input_base, "input_config": proto_utils.proto_to_json(inputs),
            "output_config": proto_utils.proto_to_json(outputs)}


def _splits(executor, input_base: str, out_dir: str):
    """{split: sorted canonical examples} as the executor's GenerateExamplesByBeam makes them."""
    with beam.Pipeline() as p:
        for name, split in executor.GenerateExamplesByBeam(p, _properties(input_base)).items():
            (split | f"Canonical[{name}]" >> beam.Map(_canonical)
                   | f"Write[{name}]" >> beam.io.WriteToText(os.path.join(out_dir, name)))
    result = {}
    for name in ("train", "eval"):
        lines = []
        for path in sorted(glob.glob(os.path.join(out_dir, name + "*"))):
            with open(path) as fh:
                lines += fh.read().splitlines()
        result[name] = sorted(lines)
    return result


def test_same_examples_in_the_same_splits_as_tfx_with_the_group_filled_in(tmp_path):
    """A published span (no split_group column) through ours = the same rows with the column
    filled by day through TFX's stock CsvExampleGen: same features and types (a text cell makes
    its column text in both), same rows in train and in eval."""
    rows = sample_rows(2, every=3)
    rows[3]["temp"] = "warm"
    write_rows(str(tmp_path / "published" / "bikeshare.csv"), rows)
    grouped = [dict(r, **{features.SPLIT_KEY: features.day_group(r["day"])}) for r in rows]
    write_rows(str(tmp_path / "grouped" / "bikeshare.csv"), grouped)

    ours = _splits(example_gen.Executor(), str(tmp_path / "published"), str(tmp_path / "ours"))
    theirs = _splits(csv_executor.Executor(), str(tmp_path / "grouped"), str(tmp_path / "tfx"))
    assert ours == theirs
    assert len(ours["train"]) + len(ours["eval"]) == len(rows) and len(ours["eval"]) > 20
    examples = [json.loads(line) for line in ours["train"] + ours["eval"]]
    assert {e["temp"][0] for e in examples} == {"bytes_list"} and {e["hr"][0] for e in examples} == {"int64_list"}
    # Whole days on one side.
    eval_days = {e["day"][1][0] for e in map(json.loads, ours["eval"])}
    assert not eval_days & {e["day"][1][0] for e in map(json.loads, ours["train"])}


def test_a_harvested_group_is_kept_and_a_row_without_a_day_still_gets_one(tmp_path):
    rows = sample_rows(1, every=20)[:4]
    for i, row in enumerate(rows):
        row[features.SPLIT_KEY] = ["request-r1", "", "request-r2", ""][i]
    rows[3]["day"] = ""
    write_rows(str(tmp_path / "span" / "bikeshare.csv"), rows)
    ours = _splits(example_gen.Executor(), str(tmp_path / "span"), str(tmp_path / "ours"))
    groups = sorted(json.loads(line)[features.SPLIT_KEY][1][0] for line in ours["train"] + ours["eval"])
    assert groups == sorted(["request-r1", features.day_group(rows[1]["day"]), "request-r2", "day-missing"])


def test_another_split_rule_is_refused_by_name(tmp_path):
    write_rows(str(tmp_path / "span" / "bikeshare.csv"), sample_rows(1, every=20)[:4])
    with pytest.raises(ValueError, match="partition_feature_name='day'"):
        with beam.Pipeline() as p:
            example_gen.Executor().GenerateExamplesByBeam(p, _properties(str(tmp_path / "span"), partition="day"))
