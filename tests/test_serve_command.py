"""`cd4ml serve`: the command line it builds, and its errors when something is missing."""

from __future__ import annotations

import os

from cd4ml import cli
from serving import launch


import json

import pytest


@pytest.mark.parametrize("protocol,variable", [("v2", "CD4ML_V2_VENV"), ("seldon", "CD4ML_SERVING_VENV")])
def test_serve_says_how_to_build_a_missing_serving_env(tmp_path, monkeypatch, capsys, protocol, variable):
    monkeypatch.setenv(variable, str(tmp_path / "no-venv"))
    (tmp_path / "registry").mkdir()
    assert cli.main(["serve", "--protocol", protocol, "--registry", str(tmp_path / "registry")]) == 1
    assert "make serving-setup" in capsys.readouterr().err


def fake_venv(tmp_path, monkeypatch, variable: str, name: str):
    """An environment holding an executable `name`, pointed at by `variable`; returns the binary."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    binary = venv / "bin" / name
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv(variable, str(venv))
    return binary


def test_v2_command_starts_mlserver_on_our_runtime(tmp_path, monkeypatch):
    binary = fake_venv(tmp_path, monkeypatch, "CD4ML_V2_VENV", "mlserver")
    settings = tmp_path / "settings"
    argv, env = launch.v2_command("/r", 9200, 9201, str(settings), version="42", base_env={})
    # MLServer started through our entry point (the protocol's binary extension and error format),
    # with the v2 environment's own Python.
    assert argv == [str(binary.parent / "python"), "-m", "serving.v2_server", "start", str(settings)]
    server = json.loads((settings / "settings.json").read_text())
    assert server["http_port"] == 9200 and server["metrics_port"] == 9201 and server["host"] == "127.0.0.1"
    assert server["parallel_workers"] == 0  # the model (and TensorFlow) in the server's own process
    model = json.loads((settings / "bike-demand" / "model-settings.json").read_text())
    assert model == {"name": "bike-demand", "implementation": launch.V2_RUNTIME, "parameters": {"uri": "/r"}}
    assert "CD4ML_REGISTRY" not in env and env["CD4ML_SERVING_VERSION"] == "42"  # the URI names the registry


def test_serve_refuses_a_missing_registry(tmp_path, capsys):
    assert cli.main(["serve", "--home", str(tmp_path)]) == 1
    assert "no registry" in capsys.readouterr().err


def test_command_runs_the_model_class_from_the_serving_env(tmp_path, monkeypatch):
    binary = fake_venv(tmp_path, monkeypatch, "CD4ML_SERVING_VENV", "seldon-core-microservice")
    argv, env = launch.command("/r", 9100, 9101, version="42", poll_seconds=1.5, base_env={})
    assert argv[:2] == [str(binary), launch.MODEL_CLASS]
    assert argv[argv.index("--http-port") + 1] == "9100" and argv[argv.index("--grpc-workers") + 1] == "0"
    assert env["CD4ML_REGISTRY"] == "/r" and env["CD4ML_SERVING_VERSION"] == "42"
    assert env["CD4ML_POLL_SECONDS"] == "1.5" and launch.REPO_ROOT in env["PYTHONPATH"].split(os.pathsep)


def test_server_settings_explicit_first_then_environment(monkeypatch):
    from serving.settings import CoreSettings

    monkeypatch.setenv("CD4ML_REGISTRY", "/from-env")
    monkeypatch.setenv("CD4ML_DRIFT_WINDOW", "300")
    monkeypatch.delenv("CD4ML_POLL_SECONDS", raising=False)
    settings = CoreSettings.resolve(registry="/from-uri", poll_seconds="2.5")
    assert (settings.registry, settings.drift_window, settings.poll_seconds) == ("/from-uri", 300, 2.5)
    assert settings.core_kwargs() == {"registry": "/from-uri", "drift_window": 300, "poll_seconds": 2.5}
    assert CoreSettings.resolve().registry == "/from-env"
    monkeypatch.delenv("CD4ML_REGISTRY")
    with pytest.raises(ValueError, match="needs a model registry"):
        CoreSettings.resolve()
