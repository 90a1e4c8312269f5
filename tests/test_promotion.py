"""`cd4ml models`, `promote`, `rollback`: the pin file the server reads and the decisions in MLMD."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from cd4ml import cli, promotion


def make_version(registry, version, mae, blessed=True, complete=True, span=1):
    d = os.path.join(registry, version)
    os.makedirs(d)
    with open(os.path.join(d, "evaluation.json"), "w") as fh:
        json.dump({"blessed": blessed, "slices": {"overall": {"mean_absolute_error": mae}}}, fh)
    if complete:
        with open(os.path.join(d, "MANIFEST.json"), "w") as fh:
            json.dump({"version": version, "span": span, "created": "2026-01-01T00:00:00+00:00",
                       "metrics": {"mean_absolute_error": mae, "root_mean_squared_error": mae * 1.5}}, fh)


@pytest.fixture
def home(tmp_path, monkeypatch):
    registry = tmp_path / "registry"
    registry.mkdir()
    make_version(str(registry), "1000", 40.0, span=1)
    make_version(str(registry), "1100", 45.0, blessed=False, span=2)
    make_version(str(registry), "1200", 35.0, span=2)
    make_version(str(registry), "1300", 30.0, complete=False, span=3)
    monkeypatch.setenv("CD4ML_HOME", str(tmp_path))
    for var in ("CD4ML_REGISTRY", "CD4ML_METADATA_PATH"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def pin(home):
    path = home / "registry" / "SERVING.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_models_lists_versions_and_the_one_served(home, capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "* 1200" in out and "newest complete version" in out
    assert "incomplete" in out and "NO" in out  # 1300 has no manifest; 1100 was not blessed
    assert cli.main(["models", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in doc["versions"]] == ["1000", "1100", "1200", "1300"]
    assert [v["serving"] for v in doc["versions"]] == [False, False, True, False]


def test_rollback_skips_bad_versions_and_promote_latest_rolls_forward(home, capsys):
    assert cli.main(["rollback", "--reason", "live MAE up"]) == 0
    assert pin(home)["version"] == "1000"  # 1100 was not blessed: not a good version
    assert pin(home)["reason"] == "live MAE up" and pin(home)["previous"] == "1200"
    assert cli.main(["rollback"]) == 2  # nothing good older than 1000
    assert "no good version older than 1000" in capsys.readouterr().err
    assert cli.main(["promote", "--latest", "--reason", "fixed"]) == 0
    assert pin(home) is None
    assert promotion.serving_target(str(home / "registry"))[0] == "1200"
    history = promotion.history(str(home / "metadata.sqlite"))
    assert [(h["action"], h["previous"], h["version"]) for h in history] == [
        ("rollback", "1200", "1000"), ("unpin", "1000", "1200")]
    assert history[0]["reason"] == "live MAE up" and history[0]["user"]


def test_promote_refuses_missing_incomplete_and_unblessed_versions(home, capsys):
    assert cli.main(["promote", "999"]) == 2
    assert cli.main(["promote", "1300"]) == 2
    assert cli.main(["promote", "1100"]) == 2
    err = capsys.readouterr().err
    assert "not in" in err and "incomplete" in err and "not blessed" in err
    assert pin(home) is None
    assert cli.main(["promote", "1100", "--force", "--reason", "hotfix"]) == 0
    assert pin(home)["version"] == "1100"
    assert cli.main(["models", "--history"]) == 0
    out = capsys.readouterr().out
    assert "* 1100" in out and "pinned by SERVING.json (hotfix)" in out and "1200 -> 1100" in out


@pytest.mark.slow
def test_rollback_on_a_trained_registry_is_read_by_the_server_and_linked_in_mlmd(trained_home, tmp_path):
    from cd4ml import mlmd

    home = tmp_path / "home"
    shutil.copytree(trained_home.config.home, home)
    registry = str(home / "registry")
    store_path = str(home / "metadata.sqlite")
    versions = promotion.list_versions(registry, store_path)
    good = [v for v in versions if v.complete]
    assert len(good) >= 2
    assert all(v.run_id for v in good), "lineage: each version knows its pipeline run"
    assert good[-1].serving
    decision = promotion.rollback(registry, "test", store_path)
    assert decision.version == good[-2].version
    # The server's own reader picks the pin up.
    from components import registry as serving_registry
    assert serving_registry.target(registry)[0] == good[-2].version
    # The decision is an MLMD execution whose input is the version's PushedModel.
    store = mlmd.open_store(store_path)
    events = store.get_events_by_execution_ids([decision.execution_id])
    [artifact] = store.get_artifacts_by_id([e.artifact_id for e in events])
    assert mlmd.prop(artifact, "pushed_version") == good[-2].version
