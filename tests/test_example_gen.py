"""Our CsvExampleGen conversion (components/example_gen.py) against TFX's own, on real spans."""

from __future__ import annotations

import glob
import json
import os

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as csv_executor

from components import example_gen, features
from tests.conftest import sample_rows, write_rows


def _canonical(example: tf.train.Example) -> str:
    """An example as sorted JSON of {feature: [kind, values]}: equal examples, equal strings."""
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        out[name] = [kind, [v.decode() if isinstance(v, bytes) else round(v, 6) for v in values]]
    return json.dumps(out, sort_keys=True)


def _examples(transform, input_base: str, out_dir: str):
    with beam.Pipeline() as p:
        (p | transform({"input_base": input_base}, "*.csv")
           | beam.Map(_canonical)
           | beam.io.WriteToText(os.path.join(out_dir, "part")))
    lines = []
    for path in sorted(glob.glob(os.path.join(out_dir, "part*"))):
        with open(path) as fh:
            lines += fh.read().splitlines()
    return [json.loads(line) for line in lines]


def _with_day_group(row):
    day = row["day"][1][0]
    return dict(row, **{features.SPLIT_KEY: ["bytes_list", [features.day_group(day)]]})


def test_the_batched_conversion_gives_the_examples_tfx_gives_plus_the_split_group(tmp_path):
    rows = sample_rows(2, every=9)
    rows[3]["temp"] = "warm"   # a text cell: TFX's inference makes the column text, and so must we
    write_rows(str(tmp_path / "span" / "bikeshare.csv"), rows)
    theirs = _examples(csv_executor._CsvToExample, str(tmp_path / "span"), str(tmp_path / "tfx"))
    ours = _examples(example_gen.Executor().GetInputSourceToExamplePTransform(), str(tmp_path / "span"),
                     str(tmp_path / "ours"))

    def key(row):
        return json.dumps(row, sort_keys=True)

    assert len(ours) == len(rows) > 100
    assert sorted(map(key, ours)) == sorted(key(_with_day_group(r)) for r in theirs)
    by_day = {r["day"][1][0] for r in ours}
    assert {r[features.SPLIT_KEY][1][0] for r in ours} == {features.day_group(d) for d in by_day}
    assert {r["temp"][0] for r in ours} == {"bytes_list"} and {r["hr"][0] for r in ours} == {"int64_list"}


def test_a_harvested_group_is_kept_and_a_row_without_a_day_still_gets_one(tmp_path):
    rows = sample_rows(1, every=20)[:4]
    for i, row in enumerate(rows):
        row[features.SPLIT_KEY] = ["request-r1", "", "request-r2", ""][i]
    rows[3]["day"] = ""
    write_rows(str(tmp_path / "span" / "bikeshare.csv"), rows)
    ours = _examples(example_gen.Executor().GetInputSourceToExamplePTransform(), str(tmp_path / "span"),
                     str(tmp_path / "ours"))
    groups = sorted(r[features.SPLIT_KEY][1][0] for r in ours)
    assert groups == sorted(["request-r1", features.day_group(rows[1]["day"]), "request-r2", "day-missing"])
