"""`cd4ml run --tune` and the explainability gate, as a user runs them: real pipeline runs, by the CLI's
entry point.

1. `--tune --trials 2`: TFX's Tuner searches, the best hyperparameters are an ML Metadata artifact
   the Trainer takes, and the summary says they were tuned in this run.
2. A plain run reuses them (published by the Tuner beside the registry, handed on by
   TunedHyperparameters) and says which.
3. A rule that forbids the hour of day stops the push with a message naming the feature and the
   rule; the registry keeps the version it had.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from cd4ml import mlmd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory, sample_data_root):
    path = str(tmp_path_factory.mktemp("tuned-home"))
    shutil.copytree(sample_data_root, os.path.join(path, "data"))
    return path


@pytest.fixture
def cd4ml_run(capsys, monkeypatch):
    """`cd4ml run --span 1 ARGS` in this process (TensorFlow and TFX load once, not per run), with
    only the given CD4ML_* variables set: its exit code, stdout and stderr, and its run id."""
    from cd4ml import cli

    def run(home, *args, **env):
        with monkeypatch.context() as patch:
            for name in [k for k in os.environ if k.startswith("CD4ML_")]:
                patch.delenv(name)
            for name, value in env.items():
                patch.setenv(name, value)
            code = cli.main(["run", "--home", home, "--data-root", os.path.join(home, "data"), "--span", "1", *args])
        out = capsys.readouterr()
        run_id = re.search(r"^run (\S+): ", out.out, re.M)
        return subprocess.CompletedProcess(["cd4ml", "run", *args], code, out.out, out.err), \
            run_id.group(1) if run_id else None

    return run


def step(store, run_id, node):
    return next(s for s in mlmd.run_steps(store, run_id) if s.node == node)


def test_tuning_then_reuse_then_the_gate_stops_a_push(home, cd4ml_run):
    store_path = os.path.join(home, "metadata.sqlite")

    tuned, tuned_run = cd4ml_run(home, "--tune", "--trials", "2")
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert "hyperparameters: tuned in this run (epochs " in tuned.stdout
    store = mlmd.open_store(store_path)
    tuner = step(store, tuned_run, "Tuner")
    assert tuner.state == "ran"
    best = tuner.outputs["best_hyperparameters"][0]
    with open(os.path.join(best.uri, "best_hyperparameters.txt")) as fh:
        values = json.load(fh)["values"]
    assert sorted(values) == ["epochs", "layers", "learning_rate", "units"]
    assert [a.id for a in step(store, tuned_run, "Trainer").inputs["hyperparameters"]] == [best.id]

    plain, plain_run = cd4ml_run(home)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert f"hyperparameters: the latest tuned, from run {tuned_run}" in plain.stdout
    store = mlmd.open_store(store_path)
    (handed,) = step(store, plain_run, "Trainer").inputs["hyperparameters"]
    assert mlmd.prop(handed, "tuned_by") == best.uri and json.loads(mlmd.prop(handed, "values")) == values
    with open(os.path.join(handed.uri, "best_hyperparameters.txt")) as fh:
        assert json.load(fh)["values"] == values
    assert not [s for s in mlmd.run_steps(store, plain_run) if s.node == "Tuner"]
    versions = sorted(v for v in os.listdir(os.path.join(home, "registry")) if v.isdigit())

    gated, gated_run = cd4ml_run(home, CD4ML_EXPLAIN_FORBIDDEN="hr")
    assert gated.returncode == 3, gated.stdout + gated.stderr
    assert "not pushed: the explainability check failed: feature 'hr' is forbidden (rule 'forbidden')" \
        in gated.stdout
    assert "no model pushed" in gated.stdout
    store = mlmd.open_store(store_path)
    blessing = step(store, gated_run, "ModelExplainer").outputs["blessing"][0]
    assert mlmd.prop(blessing, "blessed") == 0
    assert mlmd.prop(step(store, gated_run, "Evaluator").outputs["blessing"][0], "blessed") == 1
    assert mlmd.prop(step(store, gated_run, "Pusher").outputs["pushed_model"][0], "pushed") == 0
    assert sorted(v for v in os.listdir(os.path.join(home, "registry")) if v.isdigit()) == versions
    assert {r.status for r in mlmd.list_runs(store)} == {"complete"}  # no failed resolver either
    with open(os.path.join(home, "runs", gated_run, "report.html")) as fh:
        assert "rule &#39;forbidden&#39;" in fh.read()
