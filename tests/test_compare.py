"""`cd4ml compare`: live metrics per version from the server's logs, and a shadow replay."""

from __future__ import annotations

import json
import os

import pytest

from cd4ml import cli, compare
from serving.logs import JsonlLog

ROW = {"season": 3, "mnth": "July", "hr": 8, "holiday": 0, "weekday": 2, "workingday": 1,
       "weathersit": "clear", "temp": 0.7, "atemp": 0.65, "hum": 0.5, "windspeed": 0.1}


def write_logs(log_dir, version_errors):
    predictions, feedback = JsonlLog(log_dir, "predictions"), JsonlLog(log_dir, "feedback")
    n = 0
    for version, errors in version_errors.items():
        for err in errors:
            n += 1
            predictions.write({"ts": "2026-06-01T12:00:00+00:00", "request_id": f"r{n}", "version": version,
                               "rows": [ROW], "predictions": [100.0]})
            feedback.write({"ts": "2026-06-01T12:00:01+00:00", "request_id": f"r{n}", "version": version,
                            "matched": True, "truth": [100.0 + err], "predictions": [100.0],
                            "abs_errors": [abs(err)]})
    predictions.write({"ts": "2026-06-01T12:00:02+00:00", "request_id": "unlabelled", "version": "1000",
                       "rows": [ROW, ROW], "predictions": [1.0, 2.0]})
    predictions.close()
    feedback.close()


def test_live_metrics_per_version(tmp_path, monkeypatch, capsys):
    log_dir = str(tmp_path / "serving-logs")
    write_logs(log_dir, {"1000": [10, -20], "2000": [5]})
    stats = compare.live(log_dir)
    assert stats["1000"] == {"requests": 3, "rows": 4, "labelled": 2, "live_mae": 15.0}
    assert stats["2000"]["live_mae"] == 5.0
    monkeypatch.setenv("CD4ML_HOME", str(tmp_path))
    assert cli.main(["compare"]) == 0
    assert "live MAE 15.00" in capsys.readouterr().out
    assert len(compare.labelled_rows(log_dir)) == 3


@pytest.mark.slow
def test_shadow_replay_scores_both_versions_on_the_same_live_rows(trained_home, tmp_path, monkeypatch, capsys):
    from components import features

    registry = trained_home.config.registry
    versions = sorted(v for v in os.listdir(registry) if os.path.exists(os.path.join(registry, v, "MANIFEST.json")))
    assert len(versions) >= 2
    log_dir = str(tmp_path / "serving-logs")
    holdout = [json.loads(line) for line in open(os.path.join(registry, versions[-1], "holdout.jsonl"))]
    predictions, feedback = JsonlLog(log_dir, "predictions"), JsonlLog(log_dir, "feedback")
    for i, row in enumerate(holdout):
        predictions.write({"ts": "t", "request_id": f"r{i}", "version": versions[0],
                           "rows": [row["features"]], "predictions": [0.0]})
        feedback.write({"ts": "t", "request_id": f"r{i}", "version": versions[0], "truth": [row["label"]],
                        "abs_errors": [abs(row["label"])]})
    predictions.close()
    feedback.close()
    result = compare.replay(registry, [versions[0], versions[-1]], log_dir)
    assert result["rows"] == len(holdout)
    # The challenger's replayed errors are those of its own recorded holdout predictions.
    expected = sum(abs(r["expected"] - r["label"]) for r in holdout) / len(holdout)
    assert result["versions"][versions[-1]]["mae"] == pytest.approx(expected, rel=1e-3)
    assert 0.0 <= result["challenger_better_rows"] <= 1.0
    assert set(holdout[0]["features"]) == set(features.FEATURE_NAMES)
    monkeypatch.setenv("CD4ML_HOME", trained_home.config.home)  # compare only reads
    assert cli.main(["compare", versions[0], versions[-1], "--log-dir", log_dir]) == 0
    assert "challenger closer to the truth" in capsys.readouterr().out
