"""Alerts (cd4ml/alerts.py) delivered to a real local HTTP receiver (Slack-style and signed JSON
webhooks) and aiosmtpd's real SMTP server: `cd4ml alerts test`, retries, deduplication across
processes, a sink that is down (recorded, never blocking), secrets never shown, and a real failed
pipeline run raising one alert per sink."""

from __future__ import annotations

import json
import os

import pytest

from cd4ml import alerts, cli
from tests.alert_receivers import HttpReceiver, SmtpReceiver, alert_env, free_port

SLACK_PATH = "/slack/T000/B000/tok3n"


@pytest.fixture
def receivers():
    http, smtp = HttpReceiver(), SmtpReceiver()
    yield http, smtp
    http.close()
    smtp.close()


def use(monkeypatch, env):
    for name in [n for n in os.environ if n.startswith("CD4ML_ALERT")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_alerts_test_reaches_every_sink_signed_and_never_shows_a_secret(receivers, tmp_path, monkeypatch, capsys):
    http, smtp = receivers
    use(monkeypatch, alert_env(http, smtp))
    home = str(tmp_path / "home")
    assert cli.main(["alerts", "test", "--home", home]) == 0
    (slack,) = http.json(SLACK_PATH)
    assert slack["text"].startswith("[cd4ml info] test: ")
    (post,) = [p for p in http.posts if p["path"] == "/json"]
    assert post["headers"]["X-Cd4ml-Signature-256"] == alerts.signature("s3cret-hmac-key", post["body"])
    assert post["headers"]["X-Cd4ml-Event"] == "test" and json.loads(post["body"])["kind"] == "test"
    assert smtp.subjects() == [f"[cd4ml info] test: {home}"] and smtp.messages[0]["To"] == "oncall@example.org"
    assert cli.main(["alerts", "--home", home]) == 0
    out = capsys.readouterr().out
    assert "sent to 3 of 3 sinks" in out and "http://127.0.0.1:" in out and "***" in out
    assert "tok3n" not in out and "s3cret" not in out


def test_a_bad_configuration_names_the_field_and_the_rule(tmp_path, monkeypatch, capsys):
    config = tmp_path / "alerts.json"
    config.write_text(json.dumps({"sinks": [{"type": "webhook", "url": "ftp://example.org/x"}]}))
    use(monkeypatch, {"CD4ML_ALERTS": str(config)})
    assert cli.main(["alerts", "--home", str(tmp_path)]) == 2
    assert "alert sink 'webhook': url must start with http:// or https://" in capsys.readouterr().err
    config.write_text(json.dumps({"sinks": [{"type": "slack", "url_env": "NOT_SET_ANYWHERE"}]}))
    assert cli.main(["alerts", "--home", str(tmp_path)]) == 2
    assert "url_env names NOT_SET_ANYWHERE, which is not set" in capsys.readouterr().err


def test_delivery_is_retried_deduplicated_and_a_sink_down_is_recorded_without_blocking(tmp_path):
    flaky = HttpReceiver(fail_first=2)
    down = f"http://127.0.0.1:{free_port()}/hook?token=SECRET-TOKEN"
    try:
        def sinks():
            return [alerts.make_sink({"type": "slack", "name": "chat", "url": flaky.url("/s")}, {}),
                    alerts.make_sink({"type": "webhook", "name": "hook", "url": down, "secret": "k3y"}, {})]

        alerter = alerts.Alerter(sinks(), str(tmp_path), backoff=0.05, timeout=2)
        flaky.release.clear()  # the receiver holds its answers: raising the event must not wait for them
        event = alerter.raise_event("rolled_back", "version 7", "the live MAE guard fired", guard="live_mae_ratio")
        assert event is not None and flaky.posts == []
        assert alerter.raise_event("rolled_back", "version 7", "again") is None  # within the dedup window
        flaky.release.set()
        assert alerter.flush(60) == {"delivered": 1, "failed": 1, "in_flight": 0}
        (delivered,) = flaky.json("/s")  # after two refusals (HTTP 500), the third attempt
        assert "version 7" in delivered["text"] and "guard: live_mae_ratio" in delivered["text"]
        (missed,) = alerts.read_records(str(tmp_path / alerts.MISSED))
        assert missed["sink"] == "hook" and missed["event"]["subject"] == "version 7"
        assert "ConnectionError" in missed["error"] and "SECRET-TOKEN" not in json.dumps(missed)
        # Another process on the same home sends it no second time, and sends another event.
        other = alerts.Alerter(sinks()[:1], str(tmp_path), backoff=0.05)
        assert other.raise_event("rolled_back", "version 7", "from elsewhere") is None
        assert other.raise_event("rolled_back", "version 8", "another version") is not None
        other.flush(30)
        assert [json.loads(p["body"])["text"].split(": ", 1)[1].split("\n")[0] for p in flaky.posts] == \
            ["version 7", "version 8"]
    finally:
        flaky.close()


def test_a_failed_run_raises_one_alert_per_sink_and_a_sink_down_blocks_nothing(
        receivers, tmp_path, monkeypatch, sample_data_root):
    """A real run that fails (its pipeline root is under a file), with the JSON webhook down."""
    from cd4ml.runner import run_and_report
    from pipelines import local_runner
    from pipelines.config import PipelineConfig

    http, smtp = receivers
    use(monkeypatch, alert_env(http, smtp, webhook_url=f"http://127.0.0.1:{free_port()}/down"))
    (tmp_path / "a-file").write_text("not a folder")
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), data_root=sample_data_root,
                                     pipeline_root=str(tmp_path / "a-file" / "root"))
    result = run_and_report(config, progress=lambda _: None)
    assert result.exit_code == local_runner.ERROR and "Not a directory" in result.error
    alerts.alerter(config.home).flush(60)
    (slack,) = http.json(SLACK_PATH)
    assert slack["text"].startswith(f"[cd4ml critical] run failed: run {result.run_id}")
    assert "Not a directory" in slack["text"] and f"report: {result.run_dir}/report.html" in slack["text"]
    assert smtp.subjects() == [f"[cd4ml critical] run failed: run {result.run_id}"]
    (missed,) = alerts.read_records(os.path.join(config.home, alerts.ALERTS_DIR, alerts.MISSED))
    assert missed["sink"] == "webhook" and missed["event"]["kind"] == "run_failed"
