"""The drift trigger asking GitHub to retrain (repository_dispatch), against a local HTTP stand-in
for api.github.com that answers as GitHub does (204 No Content, or 401 for a bad token)."""

from __future__ import annotations

import http.server
import json
import os
import threading

import pytest

from cd4ml.triggers.dispatch import GitHubDispatch
from cd4ml.triggers.drift import DriftRetrainer
from pipelines.config import REPO_ROOT, PipelineConfig
from tests.test_drift_retrain import Clock, FakeRuns, Logs


class StandIn(http.server.BaseHTTPRequestHandler):
    """POST /repos/OWNER/REPO/dispatches: records the call; 204 for the good token, 401 otherwise."""

    calls: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.headers.get("Authorization") == "Bearer good-token":
            self.send_response(204)
            self.end_headers()
        else:
            payload = json.dumps({"message": "Bad credentials"}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def github():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandIn.calls = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def drifted(tmp_path):
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), data_root=str(tmp_path / "data"))
    logs, clock = Logs(str(tmp_path / "home" / "serving-logs")), Clock()
    logs.drift_window(clock())
    logs.labelled(clock(), 60)
    clock.advance(60)
    return config, clock


def test_drift_sends_the_dispatch_retrain_yml_listens_for(github, drifted):
    from cd4ml.mlmd import records, store

    config, clock = drifted
    runs = FakeRuns()
    notify = GitHubDispatch("cd4ml-example-org/cd4ml", "good-token", api=github)
    outcome = DriftRetrainer(config, cooldown_s=600, min_rows=50, debounce_s=30, now=clock, run_pipeline=runs,
                             progress=lambda _: None, notify=notify).check()
    assert outcome.outcome == "dispatched" and runs.calls == []  # GitHub trains, not this process
    (call,) = StandIn.calls
    assert call["path"] == "/repos/cd4ml-example-org/cd4ml/dispatches"
    assert call["headers"]["Authorization"] == "Bearer good-token"
    assert call["headers"]["Accept"] == "application/vnd.github+json"
    assert call["body"]["event_type"] == "drift-detected"
    assert call["body"]["client_payload"]["span"] == "1"  # the harvested span, for `cd4ml submit --span`
    assert "temp" in call["body"]["client_payload"]["reason"]
    with open(os.path.join(REPO_ROOT, ".github", "workflows", "retrain.yml")) as fh:
        assert "drift-detected" in fh.read()
    mlmd = store.open_store(config.metadata_path)
    (request,) = records.read(mlmd, records.RETRAIN_REQUEST)
    assert request["outcome"] == "dispatched" and request["harvest_span"] == 1
    (harvest,) = records.read(mlmd, records.HARVEST)
    assert harvest["outcome"] == "dispatched" and harvest["rows"] == 60


def test_a_refused_dispatch_is_recorded_as_an_error_without_the_token(github, drifted):
    from cd4ml.mlmd import records, store

    config, clock = drifted
    notify = GitHubDispatch("cd4ml-example-org/cd4ml", "wrong-secret-token", api=github)
    outcome = DriftRetrainer(config, cooldown_s=600, min_rows=50, debounce_s=30, now=clock, run_pipeline=FakeRuns(),
                             progress=lambda _: None, notify=notify).check()
    assert outcome.outcome.startswith("error") and "401" in outcome.outcome and "Bad credentials" in outcome.outcome
    assert "wrong-secret-token" not in outcome.outcome and "wrong-secret-token" not in repr(notify)
    (request,) = records.read(store.open_store(config.metadata_path), records.RETRAIN_REQUEST)
    assert request["state"] == "failed" and "401" in request["outcome"]


def test_dispatch_settings_are_checked_before_anything_runs(monkeypatch, tmp_path, capsys):
    from cd4ml import cli

    with pytest.raises(ValueError, match="OWNER/REPO"):
        GitHubDispatch("not a repo", "t")
    monkeypatch.delenv("CD4ML_GITHUB_TOKEN", raising=False)
    code = cli.main(["drift-retrain", "--once", "--github", "org/repo", "--home", str(tmp_path)])
    assert code == 2 and "CD4ML_GITHUB_TOKEN is empty" in capsys.readouterr().out
    monkeypatch.delenv("CD4ML_GITHUB_REPOSITORY", raising=False)
    assert GitHubDispatch.from_env() is None
