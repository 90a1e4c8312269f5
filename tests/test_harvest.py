"""The harvest over logs written by the server's own log writer (serving/logs.py): what it keeps,
what it counts and leaves out, how it groups rows for the split, and that it never takes a row twice.
The real pipeline on harvested spans is in test_loop_closes.py."""

from __future__ import annotations

import csv
import json
import os

import pytest

from cd4ml.contract import HARVEST_PROVENANCE as PROVENANCE_FILE
from cd4ml.triggers.harvest import COLUMNS, HARVEST_FILE, Harvester
from components import features
from pipelines import spans
from pipelines.config import PipelineConfig
from serving.logs import JsonlLog

ROW = {"season": 3, "mnth": "July", "hr": 8, "holiday": 0, "weekday": 2, "workingday": 1,
       "weathersit": "clear", "temp": 0.7, "atemp": 0.65, "hum": 0.5, "windspeed": 0.1}
TS = "2026-06-01T12:00:00.000+00:00"


class Logs:
    def __init__(self, directory):
        self.directory = directory
        self.predictions = JsonlLog(directory, "predictions")
        self.feedback = JsonlLog(directory, "feedback")

    def predicted(self, rid, rows, event_times=None, version="1000", ts=TS):
        record = {"ts": ts, "request_id": rid, "version": version, "rows": rows, "predictions": [10.0] * len(rows)}
        if event_times:
            record["event_times"] = event_times
        self.predictions.write(record)

    def truth(self, rid, truth, shadow=False):
        record = {"ts": TS, "request_id": rid, "version": "1000", "matched": True, "truth": truth}
        if shadow:
            record["shadow"] = True
        self.feedback.write(record)

    def torn(self, name):
        with open(os.path.join(self.directory, f"{name}.jsonl"), "a") as fh:
            fh.write('{"ts": "2026-06-01T12:0')  # a crash mid-line


@pytest.fixture
def setup(tmp_path):
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), data_root=str(tmp_path / "data"))
    logs = Logs(str(tmp_path / "home" / "serving-logs"))
    return config, logs, Harvester(config, progress=lambda _: None)


def read_span(config, span):
    with open(os.path.join(spans.span_dir(config.data_root, span), HARVEST_FILE), newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_problem_is_counted_none_crashes_and_good_rows_become_a_span(setup):
    config, logs, harvester = setup
    logs.predicted("good", [ROW, ROW], event_times=["2011-07-04", "2011-07-04T09:00:00"])
    logs.truth("good", [31, 12.0])
    logs.truth("good", [99, 99])                      # repeated: the first truth is used
    logs.truth("good", [5, 5], shadow=True)           # a shadow's score: not a second truth
    logs.truth("ghost", [1])                          # no matching prediction
    logs.predicted("short", [ROW, ROW])
    logs.truth("short", [1])                          # truth of the wrong length
    logs.predicted("nan", [ROW, ROW, ROW])
    logs.truth("nan", [float("nan"), "many", 7])      # NaN and text: those rows left out, the third kept
    logs.predicted("wide", [dict(ROW, temp=1.5)])     # a version with a wider domain answered it
    logs.truth("wide", [-3])                          # and the truth is no count
    logs.predicted("unlabelled", [ROW])               # no feedback yet: not harvested, not a problem
    logs.torn("feedback")
    logs.torn("predictions")

    result = harvester.harvest()
    report = result.report
    assert report.problems == {"repeated_feedback": 1, "unmatched_feedback": 1, "wrong_length": 1,
                               "bad_truth": 2, "torn_lines": 2}
    assert report.rows == 4 and report.requests == 3 and report.versions == {"1000": 4}
    assert report.outside_schema == {"feature 'temp': out_of_range": 1}  # kept for the validation gate
    assert result.span == 1
    rows = read_span(config, 1)
    assert list(rows[0]) == COLUMNS and "casual" not in rows[0] and "registered" not in rows[0]
    # July 4th 2011 is day 185: an event day is the split group, as in the published files.
    assert [(r["bikers"], r["day"], r["split_group"]) for r in rows[:2]] == [("31", "185", "day-185"),
                                                                            ("12", "185", "day-185")]
    # No event time: `day` is the serving day, the request groups the rows.
    assert (rows[2]["bikers"], rows[2]["day"], rows[2]["split_group"]) == ("7", "152", "request-nan")
    assert rows[3]["temp"] == "1.5" and rows[3]["bikers"] == "-3"
    with open(os.path.join(spans.span_dir(config.data_root, 1), PROVENANCE_FILE)) as fh:
        provenance = json.load(fh)
    assert provenance["request_ids"] == ["good", "nan", "wide"] and provenance["span"] == 1
    assert provenance["first_served"] == TS and len(provenance["sources"]) == 2
    assert spans.check_span(config.data_root, 1) == 4  # a readable span without the optional columns


def test_harvesting_twice_never_duplicates_and_is_recorded(setup):
    from cd4ml.mlmd import records, store

    config, logs, harvester = setup
    for i in range(3):
        logs.predicted(f"r{i}", [ROW] * 4)
        logs.truth(f"r{i}", [10, 20, 30, 40])
    first = harvester.harvest()
    assert (first.span, first.report.rows) == (1, 12)
    again = harvester.harvest()
    assert again.span is None and again.report.rows == 0
    assert again.report.problems == {"already_harvested": 3}
    logs.predicted("r9", [ROW])
    logs.truth("r9", [5])
    third = harvester.harvest()
    assert (third.span, third.report.rows, third.report.request_ids) == (2, 1, ["r9"])
    (h1, h2) = records.read(store.open_store(config.metadata_path), records.HARVEST)
    assert (h1["span"], h1["rows"], h1["requests"], h1["outcome"]) == (1, 12, 3, "harvested")
    assert h2["span"] == 2 and h1["ledger"].endswith("span-1.json") and h1["log_source"] == logs.directory


def test_a_burst_without_event_times_still_splits_by_request(setup):
    """Thousands of rows served within a second: grouped by request, so many groups, not one day."""
    import tensorflow as tf
    from tfx.components.example_gen.base_example_gen_executor import _PartitionFn
    from tfx.proto import example_gen_pb2

    config, logs, harvester = setup
    for i in range(100):
        logs.predicted(f"burst-{i:03d}", [ROW] * 24)
        logs.truth(f"burst-{i:03d}", list(range(24)))
    result = harvester.harvest()
    rows = read_span(config, result.span)
    groups = {r["split_group"] for r in rows}
    assert len(rows) == 2400 and len(groups) == 100 and {r["day"] for r in rows} == {"152"}
    assert result.report.split_keys == {"request": 2400}
    # ExampleGen's own partition function on the split group, with the pipeline's buckets: both
    # sides get requests, each request whole on one side.
    split = example_gen_pb2.SplitConfig(partition_feature_name=features.SPLIT_KEY)
    buckets = [config.eval_buckets - 1, config.eval_buckets]
    sides = set()
    for g in groups:
        example = tf.train.Example()
        example.features.feature[features.SPLIT_KEY].bytes_list.value.append(g.encode())
        sides.add(_PartitionFn(example, 2, buckets, split))
    assert sides == {0, 1}


def test_dry_run_writes_nothing(setup, capsys):
    from cd4ml import cli

    config, logs, _ = setup
    logs.predicted("a", [ROW])
    logs.truth("a", [3])
    code = cli.main(["harvest", "--dry-run", "--home", config.home, "--data-root", config.data_root])
    out = capsys.readouterr().out
    assert code == 0 and "1 labelled rows from 1 requests" in out and "nothing written" in out
    assert spans.list_spans(config.data_root) == []


def test_span_numbers_are_never_reused_after_a_quarantine(setup):
    """A quarantined harvest takes its span out of the data root; its number stays taken."""
    import shutil

    config, logs, harvester = setup
    logs.predicted("a", [ROW])
    logs.truth("a", [3])
    first = harvester.harvest()
    shutil.rmtree(first.span_dir)
    logs.predicted("b", [ROW])
    logs.truth("b", [4])
    assert harvester.harvest().span == first.span + 1


def test_feature_module_marks_what_production_cannot_know():
    assert [c.name for c in features.CARRIED if c.optional] == ["casual", "registered", "split_group"]
    assert "casual" not in COLUMNS and features.LABEL_KEY in COLUMNS


@pytest.mark.slow
def test_a_bad_harvested_span_is_quarantined_and_the_model_keeps_serving(tmp_path, capsys, monkeypatch):
    """The real pipeline on a harvested burst (no event times) with one negative truth: ExampleGen
    still splits it both ways by request, the validation gate refuses it, the span leaves the lake
    with its report, nothing is pushed, and its rows are never harvested again."""
    import glob
    import shutil

    from cd4ml import cli, mlmd
    from cd4ml.mlmd import records
    from cd4ml.runner import run_and_report
    from pipelines import local_runner
    from tests.conftest import sample_rows, write_rows

    data = tmp_path / "data"
    write_rows(str(data / "span-1" / "bikeshare.csv"), sample_rows(1, every=3))
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), data_root=str(data), epochs=5)
    first = run_and_report(config)
    assert first.exit_code == local_runner.OK, local_runner.format_summary(first)
    logs = Logs(os.path.join(config.home, "serving-logs"))
    for i in range(60):
        logs.predicted(f"burst-{i:02d}", [dict(ROW, hr=h) for h in range(24)])
        logs.truth(f"burst-{i:02d}", [-5 if (i, h) == (7, 3) else 20 + h for h in range(24)])
    monkeypatch.setenv("CD4ML_EPOCHS", "5")
    code = cli.main(["harvest", "--home", config.home, "--data-root", str(data)])
    out = capsys.readouterr().out
    assert code == local_runner.VALIDATION_FAILED, out
    assert "kept for the validation gate: 1 rows break the curated schema (feature 'bikers': out_of_range)" in out
    assert "bikers" in out and "quarantined" in out
    # Out of the lake, kept with its report; the serving version is still the span-1 one.
    assert spans.list_spans(str(data)) == [1]
    quarantined = os.path.join(config.home, "quarantine", "harvest-span-2")
    assert sorted(os.listdir(quarantined)) == [PROVENANCE_FILE, HARVEST_FILE, "report.txt"]
    with open(os.path.join(quarantined, "report.txt")) as fh:
        assert "bikers" in fh.read()
    store = mlmd.open_store(config.metadata_path)
    assert [p["version"] for p in mlmd.pushed_models(store)] == [first.pushed_version]
    (harvest,) = records.read(store, records.HARVEST)
    assert (harvest["span"], harvest["outcome"], harvest["quarantine"]) == (2, "quarantined", quarantined)
    # ExampleGen split the burst by request: both sides have rows.
    gen = [a for a in store.get_artifacts_by_type("Examples") if mlmd.prop(a, "span") == 2
           and "/CsvExampleGen/" in a.uri]
    assert gen, "the harvested span was ingested"
    for split in ("train", "eval"):
        assert glob.glob(os.path.join(gen[0].uri, f"Split-{split}", "*.gz")), split
    # Harvesting again takes nothing: those rows are in the ledger.
    assert Harvester(config, progress=lambda _: None).collect().report.problems == {"already_harvested": 60}
    shutil.rmtree(quarantined)

