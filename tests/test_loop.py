"""The demo loop end to end (cd4ml/demo/loop.py) on the sample spans, with the real Open Inference
Protocol server (MLServer, .venv-v2): real pipeline runs, span-2 traffic with feedback, drift, the
loop closing without any dropped file (harvest, retrain on the window, hot load), then the drop
through the emulated bucket, rollback and forward."""

from __future__ import annotations

import os

import pytest


@pytest.mark.slow
def test_the_loop_closes_on_harvested_traffic_then_on_a_drop(sample_data_root, tmp_path, capsys):
    from cd4ml import cli, mlmd
    from cd4ml.demo.loop import LoopSettings, run_loop
    from cd4ml.mlmd import records

    lines = []
    home = str(tmp_path / "home")
    emulator_before = os.environ.get("STORAGE_EMULATOR_HOST")
    result = run_loop(LoopSettings(home=home, epochs=15, data_dir=sample_data_root), progress=lines.append)
    first, harvested, dropped = result["versions"]
    assert len({first, harvested, dropped}) == 3
    names = [s["name"] for s in result["timeline"]["steps"]]
    assert names[-6:] == ["server hot-loads the new version", "roll back", "roll forward",
                          "guarded rollout: the winter-only model pushed again, as a canary",
                          "Jul-Dec traffic with feedback until a guard decides",
                          "the server stops routing to it; the alert arrives"]
    assert result["drift"] and result["drift"]["is_drift"], result["drift"]

    # No span-2 file was in the data root: the drift trigger harvested the traffic as span 2 and
    # trained on the window of spans 2 and 1.
    retrain = result["drift_retrain"]
    assert retrain["harvest_span"] == 2 and retrain["window"] == [2, 1] and retrain["version"] == harvested
    # On the span-2 days never sent as traffic, the retrained model beats the span-1 model.
    before, after = result["live_mae"]["before"], result["live_mae"]["after"]
    assert (before["version"], after["version"]) == (first, harvested)
    assert after["mae"] <= 0.6 * before["mae"], result["live_mae"]  # the figures: benchmarks/results/loop.json
    assert result["drift_to_answer_s"] > 0

    # The retrained version's lineage names the harvested span and where its rows came from.
    config_store = mlmd.open_store(os.path.join(home, "metadata.sqlite"))
    summary = mlmd.provenance(config_store, harvested)["summary"]
    assert [w["span"] for w in summary["window"]] == [2, 1]
    harvest = summary["window"][0]["harvest"]
    assert harvest["log_source"] == os.path.join(home, "serving-logs") and harvest["outcome"] == "trained"
    assert harvest["version"] == harvested and harvest["rows"] > 500
    (request,) = records.read(config_store, records.RETRAIN_REQUEST)
    assert request["harvest_span"] == 2 and request["window"] == "2,1" and request["version"] == harvested
    assert cli.main(["lineage", harvested, "--home", home]) == 0
    out = capsys.readouterr().out
    assert "harvested from the serving logs" in out and "window span      1" in out

    # The drop path still works: the dropped file is span 3, never reusing the harvested number.
    [drop] = result["drops"]
    assert drop["outcome"] == "trained" and drop["span"] == 3 and drop["version"] == dropped
    assert result["drop_to_answer_s"] > 0
    assert "timeline:" in result["timeline_text"] and "roll forward" in result["timeline_text"]
    assert not os.path.exists(os.path.join(home, "registry", "SERVING.json")), "rolled forward: no pin left"
    # The winter-only model pushed again under guarded rollout: a guard rolled it back on the
    # Jul-Dec traffic, and the demo's local receiver got the alert naming the guard.
    # Two guards can catch it, both rightly: its live MAE, or its outlier rate (its own detectors,
    # fitted on winter, flag most Jul-Dec rows), whichever crosses its bound first on the canary's
    # random share of the traffic; the fired guard's own evidence must show the breach.
    guarded = result["guarded_rollout"]
    assert guarded["action"] == "rolled_back", guarded
    canary, serving = guarded["evidence"]["canary"], guarded["evidence"]["serving"]
    if guarded["guard"] == "live_mae_ratio":
        assert canary["live_mae"] > 1.5 * serving["live_mae"], guarded
    else:
        assert guarded["guard"] == "outlier_rate_ratio", guarded
        assert canary["outlier_rate"] > 2 * serving["outlier_rate"] and canary["rows"] >= 50, guarded
    assert [a["kind"] for a in guarded["alerts"]] == ["canary_started", "rolled_back"]
    assert guarded["alerts"][1]["details"]["guard"] == guarded["guard"]
    assert guarded["alerts"][1]["subject"] == f"version {guarded['version']}"
    assert "CD4ML_ALERTS" not in os.environ
    assert os.environ.get("STORAGE_EMULATOR_HOST") == emulator_before, "the emulator is stopped and unset"
