"""The HTML run report: rendered from plain data (fast) and written by every real run (slow)."""

from __future__ import annotations

import base64
import json
import logging
import os
import re

import pytest

from cd4ml import report
from cd4ml.contract import MAE
from pipelines.local_runner import NOT_BLESSED, VALIDATION_FAILED, RunResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def images(text):
    return re.findall(r"src='data:image/png;base64,([^']+)'", text)


def assert_self_contained(text):
    assert "<link" not in text and "<script" not in text
    assert not re.search(r"(src|href)=['\"](https?:|file:|/)", text), "the report must not load anything"
    for encoded in images(text):
        assert base64.b64decode(encoded).startswith(PNG_MAGIC)


def test_not_blessed_report_names_the_failing_threshold():
    slices = {"overall": {"mean_absolute_error": 97.1, "root_mean_squared_error": 120.0, "example_count": 500.0}}
    slices.update({f"hr={h}": {"mean_absolute_error": 50.0 + h, "example_count": 20.0} for h in range(24)})
    slices.update({f"season={s}": {"mean_absolute_error": 80.0 + s, "example_count": 100.0} for s in (1, 2)})
    failure = {"slice": "overall", "metric": "mean_absolute_error", "value": 97.1, "bound": "<= 90",
               "rule": "absolute bound", "message": ""}
    result = RunResult(run_id="r1", exit_code=NOT_BLESSED, span=2, rows=10, blessed=False,
                       blessing="not blessed: mean_absolute_error on overall: 97.100 breaks absolute bound (<= 90)")
    data = report.ReportData(result=json.loads(result.to_json()),
                             evaluation={"slices": slices, "diff": {}, "blessed": False, "failures": [failure]},
                             thresholds=[{"metric": "MeanAbsoluteError", "rule": "absolute bound",
                                          "bound": "<= 90", "value": 90.0, "slices": "overall"}])
    data.plots["error by hr"] = report.plot_error_by(slices, "hr", 90.0)
    data.plots["error by season"] = report.plot_error_by(slices, "season", 90.0)
    text = report.render(data)
    assert "not blessed" in text and "breaks absolute bound" in text
    assert "nothing pushed; the serving model is unchanged" in text
    assert "MeanAbsoluteError &lt;= 90 (absolute bound, on overall)" in text
    assert "Other slices are reported, not gating" in text
    assert 'class="fail"><td>overall</td>' in text
    assert len(images(text)) == 2
    assert_self_contained(text)
    # hours are ordered as numbers, not as text
    order = [m for m in re.findall(r"<td>(hr=\d+)</td>", text)]
    assert order == [f"hr={h}" for h in range(24)]


def test_thresholds_are_read_from_the_recorded_eval_config():
    import json

    from google.protobuf import json_format

    from pipelines.config import PipelineConfig
    from pipelines.pipeline import eval_config

    recorded = json.loads(json_format.MessageToJson(eval_config(PipelineConfig(home="/tmp/h", mae_bound=77.0)),
                                                    preserving_proto_field_name=True))
    found = report.thresholds(recorded)
    assert {(t["rule"], t["bound"]) for t in found} == {
        ("absolute bound", "<= 77"), ("regression vs baseline", "<= baseline + 5")}
    # A MetricConfig.threshold (rather than per-slice thresholds) gates every slice.
    every = {"metrics_specs": [{"metrics": [{"class_name": "MeanAbsoluteError",
                                             "threshold": {"value_threshold": {"upper_bound": 9}}}]}]}
    assert report.thresholds(every) == [{"metric": "MeanAbsoluteError", "rule": "absolute bound",
                                          "bound": "<= 9", "value": 9, "slices": "every slice"}]


def test_validation_failure_report_lists_each_anomaly(tmp_path):
    problems = [{"split": "train", "feature": "temp", "rule": "Out-of-range values",
                 "description": "Unexpectedly large value: 1.7."}]
    result = RunResult(run_id="r2", exit_code=VALIDATION_FAILED, span=3, problems=problems,
                       error="data validation failed", run_dir=str(tmp_path))
    path = report.write_report(result, str(tmp_path / "no-metadata.sqlite"))
    text = open(path).read()
    assert "1 anomalies" in text and "Out-of-range values" in text and "temp" in text
    assert "nothing was trained" in text
    assert_self_contained(text)


def test_a_broken_report_warns_and_never_raises(tmp_path, caplog, monkeypatch):
    def boom(*_):
        raise RuntimeError("no plots today")

    from cd4ml.report import run_report

    monkeypatch.setattr(run_report, "gather", boom)
    result = RunResult(run_id="r3", exit_code=0, run_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert report.write_run_report(result, str(tmp_path / "m.sqlite")) is None
    assert "no plots today" in caplog.text
    assert not os.path.exists(tmp_path / "report.html")


@pytest.mark.slow
def test_every_run_writes_its_report(trained_home):
    for result in (trained_home.span1, trained_home.span2):
        path = os.path.join(result.run_dir, "report.html")
        assert os.path.exists(path), f"{path} missing"
        text = open(path).read()
        assert_self_contained(text)
        assert result.run_id in text and f"<code>{result.pushed_version}</code>" in text
        assert "blessed: every threshold passed" in text and "no anomalies" in text
        for section in ("Components", "Data statistics", "Evaluation by slice", "error by hr",
                        "error by season", "feature distributions"):
            assert section in text, section
        assert re.search(r"<td>season=\d</td>", text) and "<td>hr=23</td>" in text
        assert f"{MAE} &lt;= {trained_home.config.mae_bound:g} (absolute bound, on overall)" in text
        assert len(images(text)) >= 3
        for span in result.window:  # every span of the training window, with its file
            span_file = os.path.join(trained_home.config.data_root, f"span-{span}", "bikeshare.csv")
            assert f"<li>span {span}: {span_file}" in text
    assert "<b>Trained on:</b> span 1" in open(os.path.join(trained_home.span1.run_dir, "report.html")).read()
    assert "<b>Trained on:</b> the window of spans 2, 1" in open(os.path.join(trained_home.span2.run_dir,
                                                                               "report.html")).read()

    first = open(os.path.join(trained_home.span1.run_dir, "report.html")).read()
    second = open(os.path.join(trained_home.span2.run_dir, "report.html")).read()
    assert "No baseline" in first and "no earlier span to compare" in first
    # Span 2 is compared with span 1, the data the serving model was trained on.
    assert f"span 1 (version {trained_home.span1.pushed_version})" in second
    assert "No baseline" not in second


@pytest.mark.slow
def test_distributions_show_the_drift_between_spans(trained_home):
    from cd4ml import mlmd

    store = mlmd.open_store(trained_home.config.metadata_path)
    stats = {}
    for result in (trained_home.span1, trained_home.span2):
        doc = mlmd.provenance(store, result.pushed_version)
        stats[result.span] = report.load_statistics(doc["summary"]["statistics"][0])
    one, two = (report.feature_distribution(stats[s], "season") for s in (1, 2))
    assert one["labels"] == two["labels"] == ["1", "2", "3", "4"]
    assert one["fractions"][3] == pytest.approx(0, abs=0.01) and two["fractions"][3] > 0.3
    months = report.feature_distribution(stats[2], "mnth")
    assert sum(f for m, f in zip(months["labels"], months["fractions"]) if m == "Jan") == 0
    temp = [report.feature_distribution(stats[s], "temp") for s in (1, 2)]
    assert temp[0]["kind"] == "numeric"
    rows = {r["feature"]: r for r in report.statistics_summary(stats[2])}
    assert rows["temp"]["mean"] > {r["feature"]: r for r in report.statistics_summary(stats[1])}["temp"]["mean"]
    assert rows["casual"]["role"] == "carried" and rows["bikers"]["role"] == "label"
