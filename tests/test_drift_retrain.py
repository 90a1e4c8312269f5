"""Drift-triggered retraining over logs written by the server's own JsonlLog (serving/logs.py)."""

from __future__ import annotations

import csv
import datetime
import os

import pytest

from cd4ml.triggers.drift import DriftRetrainer
from pipelines import local_runner
from pipelines.config import PipelineConfig
from serving.logs import JsonlLog
from tests.kfp_fake import FakeKfp, job_file

T0 = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
# A summer row inside the domains of components/features.py (season 3, month "July").
ROW = {"season": 3, "mnth": "July", "hr": 8, "holiday": 0, "weekday": 2, "workingday": 1,
       "weathersit": "clear", "temp": 0.7, "atemp": 0.65, "hum": 0.5, "windspeed": 0.1}


class Clock:
    def __init__(self):
        self.t = T0

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += datetime.timedelta(seconds=seconds)


class Logs:
    def __init__(self, directory):
        self.drift = JsonlLog(directory, "drift")
        self.predictions = JsonlLog(directory, "predictions")
        self.feedback = JsonlLog(directory, "feedback")
        self.n = 0

    def drift_window(self, at, is_drift=True):
        self.drift.write({"ts": at.isoformat(), "version": "1000", "is_drift": is_drift,
                          "p_vals": {"temp": 0.001}, "drifted": ["temp"] if is_drift else [], "rows": 500})

    def labelled(self, at, rows, with_feedback=True):
        self.n += 1
        rid = f"r{self.n}"
        self.predictions.write({"ts": at.isoformat(), "request_id": rid, "version": "1000",
                                "rows": [ROW] * rows, "predictions": [100.0] * rows})
        if with_feedback:
            self.feedback.write({"ts": at.isoformat(), "request_id": rid, "version": "1000", "matched": True,
                                 "truth": [150.0] * rows, "predictions": [100.0] * rows})


class FakeRuns:
    def __init__(self):
        self.calls = []

    def __call__(self, config, progress=print):
        self.calls.append(config.span)
        return local_runner.RunResult(run_id=f"run-{len(self.calls)}", exit_code=local_runner.OK,
                                      pushed_version=str(2000 + len(self.calls)), new_push=True)


@pytest.fixture
def setup(tmp_path):
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), data_root=str(tmp_path / "data"))
    logs = Logs(str(tmp_path / "home" / "serving-logs"))
    clock, runs = Clock(), FakeRuns()
    retrainer = DriftRetrainer(config, cooldown_s=600, min_rows=50, debounce_s=30, now=clock,
                               run_pipeline=runs, progress=lambda _: None)
    return config, logs, clock, runs, retrainer


def test_drift_is_debounced_needs_labels_then_retrains_once(setup, tmp_path, monkeypatch):
    from cd4ml import alerts
    from tests.alert_receivers import HttpReceiver, SmtpReceiver, alert_env

    config, logs, clock, runs, retrainer = setup
    http, smtp = HttpReceiver(), SmtpReceiver()  # the SMTP sink is down for this one: e-mail is missed
    for name, value in alert_env(http, smtp).items():
        monkeypatch.setenv(name, value)
    smtp.close()
    assert "no drift" in retrainer.check().decision.why
    logs.drift_window(clock(), is_drift=False)
    assert "no drift" in retrainer.check().decision.why
    logs.drift_window(clock())
    clock.advance(10)
    logs.drift_window(clock())
    assert "debounce" in retrainer.check().decision.why
    clock.advance(30)
    logs.labelled(clock(), 30)
    logs.labelled(clock(), 40, with_feedback=False)  # predictions without ground truth do not count
    decision = retrainer.check().decision
    assert decision.action == "wait" and "only 30 new labelled rows" in decision.why
    assert runs.calls == []
    logs.labelled(clock(), 25)
    outcome = retrainer.check()
    assert outcome.decision.action == "retrain" and outcome.decision.drift_windows == 2
    # The labelled rows became span 1 of the (empty) data root, and the retrain ran on it.
    assert outcome.harvest_span == 1 and runs.calls == [1]
    assert outcome.outcome == "trained" and outcome.version == "2001"
    with open(tmp_path / "data" / "span-1" / "harvest.csv") as fh:
        harvested = list(csv.DictReader(fh))
    assert len(harvested) == 55 and harvested[0]["bikers"] == "150" and harvested[0]["temp"] == "0.7"
    # No event time was sent: the rows group by request, and `day` is the day they were served.
    assert {r["split_group"] for r in harvested} == {"request-r1", "request-r3"}
    assert harvested[0]["day"] == str(T0.timetuple().tm_yday)
    (request,) = retrainer.requests()
    assert request["trigger"] == "drift" and request["labelled_rows"] == 55 and request["harvest_span"] == 1
    assert request["drifted"] == "temp" and request["outcome"] == "trained" and request["version"] == "2001"
    # The same drift windows never trigger again.
    clock.advance(3600)
    logs.labelled(clock(), 100)
    assert "no drift" in retrainer.check().decision.why
    assert runs.calls == [1]
    # One alert per sink for the retrain (and one when the drift was first seen, while it waited);
    # the e-mail that could not be sent is recorded, and the retrain went ahead regardless.
    alerts.alerter(config.home).flush(60)
    http.close()
    kinds = [p["headers"]["X-Cd4ml-Event"] for p in http.posts if p["path"] == "/json"]
    assert kinds == ["drift_detected", "retrain_requested"]
    slack = [p for p in http.posts if p["path"] != "/json"]
    assert len(slack) == 2 and "retrain requested on version 1000: drift in 2 window(s)" in slack[1]["body"].decode()
    missed = alerts.read_records(os.path.join(config.home, alerts.ALERTS_DIR, alerts.MISSED))
    assert [(m["sink"], m["event"]["kind"]) for m in missed] == [("email", "drift_detected"),
                                                                  ("email", "retrain_requested")]


def test_cooldown_then_fresh_labels_are_needed(setup):
    config, logs, clock, runs, retrainer = setup
    logs.drift_window(clock())
    logs.labelled(clock(), 60)
    clock.advance(31)
    assert retrainer.check().decision.action == "retrain"
    clock.advance(60)
    logs.drift_window(clock())
    decision = retrainer.check().decision
    assert decision.action == "wait" and "cooldown" in decision.why
    clock.advance(600)
    decision = retrainer.check().decision
    assert decision.action == "wait" and "only 0 new labelled rows" in decision.why
    logs.labelled(clock(), 50)
    assert retrainer.check().decision.action == "retrain"
    assert len(runs.calls) == 2 and len(retrainer.requests()) == 2


def test_drift_retrain_submits_to_kfp(setup, tmp_path):
    config, logs, clock, runs, _ = setup
    job = job_file(str(tmp_path / "pipeline.json"), config.data_root, config.registry)
    logs.drift_window(clock())
    logs.labelled(clock(), 60)
    clock.advance(60)
    with FakeKfp() as fake:
        config.kfp_host = fake.host
        retrainer = DriftRetrainer(config, cooldown_s=600, min_rows=50, debounce_s=30, now=clock,
                                   submit_job=str(job), progress=lambda _: None)
        outcome = retrainer.check()
        assert outcome.outcome == "submitted"
        (run,) = fake.runs.values()
        assert "-drift-" in run["display_name"]
    assert runs.calls == []


def test_cli_once_dry_run(setup, monkeypatch, capsys):
    from cd4ml import cli

    config, logs, clock, runs, _ = setup
    monkeypatch.setenv("CD4ML_HOME", config.home)
    logs.drift_window(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1))
    assert cli.main(["drift-retrain", "--once", "--dry-run", "--min-rows", "10"]) == 0
    assert "only 0 new labelled rows (need 10)" in capsys.readouterr().out
