"""The demo loop end to end (cd4ml/demo/loop.py) on the sample spans, with the serving core in process:
two real pipeline runs, drift, the drop through the emulator bucket, hot load, rollback/forward."""

from __future__ import annotations

import os

import pytest


@pytest.mark.slow
def test_the_loop_retrains_on_a_drop_and_serves_rolls_back_and_forward(sample_data_root, tmp_path):
    from cd4ml.demo.loop import LoopSettings, run_loop
    from tests.in_process_server import InProcessServer

    lines = []
    emulator_before = os.environ.get("STORAGE_EMULATOR_HOST")
    settings = LoopSettings(home=str(tmp_path / "home"), traffic_rows=400, epochs=10, data_dir=sample_data_root,
                            server_class=InProcessServer)
    result = run_loop(settings, progress=lines.append)
    first, second = result["versions"]
    assert first != second
    names = [s["name"] for s in result["timeline"]["steps"]]
    assert names[-3:] == ["server hot-loads the new version", "roll back", "roll forward"]
    assert result["drift"] and result["drift"]["is_drift"], result["drift"]
    [drop] = result["drops"]
    assert drop["outcome"] == "trained" and drop["span"] == 2 and drop["version"] == second
    assert result["drop_to_answer_s"] > 0
    assert "timeline:" in result["timeline_text"] and "roll forward" in result["timeline_text"]
    pin = os.path.join(str(tmp_path / "home"), "registry", "SERVING.json")
    assert not os.path.exists(pin), "rolled forward: no pin left"
    assert os.environ.get("STORAGE_EMULATOR_HOST") == emulator_before, "the emulator is stopped and unset"
