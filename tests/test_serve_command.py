"""`cd4ml serve`: the command line it builds, and its errors when something is missing."""

from __future__ import annotations

import os

from cd4ml import cli
from serving import launch


def test_serve_says_how_to_build_a_missing_serving_env(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CD4ML_SERVING_VENV", str(tmp_path / "no-venv"))
    (tmp_path / "registry").mkdir()
    assert cli.main(["serve", "--registry", str(tmp_path / "registry")]) == 1
    assert "make serving-setup" in capsys.readouterr().err


def test_serve_refuses_a_missing_registry(tmp_path, capsys):
    assert cli.main(["serve", "--home", str(tmp_path)]) == 1
    assert "no registry" in capsys.readouterr().err


def test_command_runs_the_model_class_from_the_serving_env(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    binary = venv / "bin" / "seldon-core-microservice"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv("CD4ML_SERVING_VENV", str(venv))
    argv, env = launch.command("/r", 9100, 9101, version="42", poll_seconds=1.5, base_env={})
    assert argv[:2] == [str(binary), launch.MODEL_CLASS]
    assert argv[argv.index("--http-port") + 1] == "9100" and argv[argv.index("--grpc-workers") + 1] == "0"
    assert env["CD4ML_REGISTRY"] == "/r" and env["CD4ML_SERVING_VERSION"] == "42"
    assert env["CD4ML_POLL_SECONDS"] == "1.5" and launch.REPO_ROOT in env["PYTHONPATH"].split(os.pathsep)
