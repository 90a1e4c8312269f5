"""Competing models under governance: the bandit's arithmetic, then a real experiment on the real
V2 server over HTTP (span-1 model against the span-2 model of the session's real TFX runs, span-2
traffic in small batches with feedback, a restart in the middle), its verdict recorded in ML
Metadata, and the bad inputs that must change nothing."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import requests

from cd4ml import experiment as ops
from cd4ml import promotion
from serving.bandit import Counts, Experiment
from serving import request as req
from serving.launch import running
from tests.conftest import copy_version, read_span

EXP = Experiment(id="e1", champion="A", challengers=("B",), min_feedback=100, confidence=0.95)


def test_thompson_learns_the_better_arm_and_the_verdict_waits_for_evidence():
    counts = Counts(EXP)
    rng = np.random.default_rng(1)
    rates = {"A": 0.3, "B": 0.7}
    chosen = []
    for _ in range(400):
        arm = counts.choose(rng)
        chosen.append(arm)
        counts.add(arm, float(rng.random() < rates[arm]), 1.0)
    assert chosen[-200:].count("B") > 150  # most late traffic goes to the better arm
    assert counts.prob_best()["B"] > 0.99 and counts.verdict() == "B"
    early = Counts(EXP)
    early.add("A", 1, 10)
    early.add("B", 9, 10)
    assert early.verdict() is None  # 20 labelled rows < min_feedback


def test_epsilon_greedy_explores_and_rewards_follow_the_tolerance():
    exp = Experiment(id="e2", champion="A", challengers=("B",), strategy="epsilon-greedy", epsilon=0.2)
    counts = Counts(exp)
    counts.add("B", 8, 10)
    picks = [counts.choose(np.random.default_rng(i)) for i in range(300)]
    assert 0.02 < picks.count("A") / 300 < 0.2  # about epsilon / 2
    # within max(25, 25 % of the truth): 100 vs 120 (20 <= 30) yes, 300 vs 420 (120 > 105) no, 10 vs 34 (24 <= 25) yes
    assert exp.successes([100, 300, 10], [120, 420, 34]) == 2.0


def test_counts_fold_the_feedback_log_of_their_experiment_only():
    records = [{"experiment": "e1", "arm": "A", "reward": {"successes": 2, "trials": 4}, "abs_errors": [1, 2, 3, 4]},
               {"experiment": "e1", "arm": "B", "reward": {"successes": 3, "trials": 3}, "abs_errors": [1, 1, 1]},
               {"experiment": "old", "arm": "B", "reward": {"successes": 9, "trials": 9}},
               {"experiment": "e1", "arm": "Z", "reward": {"successes": 1, "trials": 1}},
               {"request_id": "no experiment", "truth": [1]}]
    counts = Counts.from_feedback(EXP, records)
    assert (counts.arms["A"].successes, counts.arms["A"].trials, counts.arms["A"].live_mae) == (2, 4, 2.5)
    assert (counts.arms["B"].trials, counts.labelled) == (3, 7)


@pytest.mark.parametrize("body, needle", [
    ({"id": "x", "champion": "A"}, "needs id, champion and challengers"),
    ({"id": "x", "champion": "A", "challengers": ["B"], "strategy": "ucb"}, "strategy 'ucb'"),
    ({"id": "x", "champion": "A", "challengers": ["A"]}, "name a version twice"),
    ({"id": "x", "champion": "A", "challengers": ["B"], "confidence": 2}, "confidence"),
])
def test_a_bad_experiment_file_is_refused_naming_the_rule(body, needle):
    with pytest.raises(ValueError, match=needle):
        Experiment.from_json(json.dumps(body))


@pytest.fixture(scope="module")
def arms(trained_home, tmp_path_factory):
    """A registry holding the span-1 model (pinned: the champion) and the span-2 model, and a copy
    of the ML Metadata store that recorded both pushes (this module's records touch no other test)."""
    import shutil

    work = tmp_path_factory.mktemp("experiment")
    root = str(work / "registry")
    for result in (trained_home.span1, trained_home.span2):
        path = result.pushed_path.rstrip("/")
        copy_version(os.path.dirname(path), os.path.basename(path), root)
    champion, challenger = trained_home.span1.pushed_version, trained_home.span2.pushed_version
    promotion.promote(root, champion, "the champion")
    metadata = str(work / "metadata.sqlite")
    shutil.copyfile(trained_home.config.metadata_path, metadata)
    return {"registry": root, "champion": champion, "challenger": challenger, "metadata": metadata}


def test_starting_an_experiment_with_a_bad_challenger_changes_nothing(arms, tmp_path):
    import shutil

    registry = arms["registry"]
    for challenger, needle in (("9999", "not a version"), (arms["champion"], "is the served version")):
        with pytest.raises(ops.ExperimentError, match=needle):
            ops.start(registry, [challenger])
    unblessed = os.path.join(registry, "3000")
    shutil.copytree(os.path.join(registry, arms["challenger"]), unblessed)
    with open(os.path.join(unblessed, "evaluation.json")) as fh:
        evaluation = json.load(fh)
    with open(os.path.join(unblessed, "evaluation.json"), "w") as fh:
        json.dump(dict(evaluation, blessed=False), fh)
    try:
        with pytest.raises(ops.ExperimentError, match="not blessed"):
            ops.start(registry, ["3000"])
    finally:
        shutil.rmtree(unblessed)
    assert ops.running(registry) is None


def span2_batches(size=5, batches=160):
    rows = read_span(2)
    from components import features

    typed = [features.parse_row(r) for r in rows[::3]]
    return [typed[i:i + size] for i in range(0, size * batches, size)]


def infer(server, batch):
    from components import features

    inputs = req.v2_inputs([{f: r[f] for f in features.FEATURE_NAMES} for r in batch])
    reply = requests.post(server.predict_url, json={"inputs": inputs}, timeout=60)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    return body["model_version"], body["parameters"]["request_id"]


@pytest.mark.slow
def test_the_bandit_routes_to_the_better_model_survives_a_restart_and_concludes(arms, tmp_path, monkeypatch,
                                                                                capsys):
    from cd4ml import mlmd
    from cd4ml.mlmd import records
    from components import features

    registry, metadata, champion, challenger = arms["registry"], arms["metadata"], arms["champion"], arms["challenger"]
    logs = str(tmp_path / "logs")
    exp = ops.start(registry, [challenger], min_feedback=300, confidence=0.95, reason="span-2 model vs span-1",
                    metadata_path=metadata)
    answered = {champion: 0, challenger: 0}
    batches = span2_batches()

    def traffic(server, chunk):
        for batch in chunk:
            version, rid = infer(server, batch)
            answered[version] += len(batch)
            reply = requests.post(server.feedback_url, timeout=60,
                                  json={"request_id": rid, "truth": [r[features.LABEL_KEY] for r in batch]})
            assert reply.status_code == 200 and reply.json()["experiment"]["arm"] == version, reply.text

    with running(registry, logs, protocol="v2", poll_seconds=0.5) as server:
        traffic(server, batches[:60])
        before = requests.get(f"{server.url}/v2/models/bike-demand/experiment", timeout=30).json()
    # A restart in the middle keeps the bandit's counts: they are folded from the feedback log.
    with running(registry, logs, protocol="v2", poll_seconds=0.5) as server:
        after = requests.get(f"{server.url}/v2/models/bike-demand/experiment", timeout=30).json()
        assert after["id"] == exp.id
        assert ({a: (c["successes"], c["trials"]) for a, c in after["arms"].items()}
                == {a: (c["successes"], c["trials"]) for a, c in before["arms"].items()})
        assert sum(a["trials"] for a in after["arms"].values()) == 300
        traffic(server, batches[60:])
        state = ops.status(registry, logs)
        share = state.as_dict()["arms"][challenger]["traffic_share"]
        print(f"challenger share {share:.0%}, P(best) {state.prob_best}, live MAE "
              f"{ {a: round(c.live_mae, 1) for a, c in state.counts.arms.items()} }")
        assert share > 0.6 and answered[challenger] > answered[champion]
        done = ops.conclude(registry, logs, metadata)
        assert done["winner"] == challenger and done["promoted"] == challenger
        # The server follows: the experiment is over, the winner is pinned and answers alone.
        deadline = time.monotonic() + 30
        while requests.get(f"{server.url}/v2/models/bike-demand/experiment", timeout=30).json():
            assert time.monotonic() < deadline, "the server still routes after the verdict"
            time.sleep(0.3)
        time.sleep(1.5)  # and has loaded the pinned winner
        assert {infer(server, batches[0])[0] for _ in range(10)} == {challenger}
        # Feedback for an arm of the finished experiment: counted for live MAE, not by the bandit;
        # an explicit reward for it is refused and records nothing.
        version, rid = infer(server, batches[1])
        late = requests.post(server.feedback_url, json={"request_id": rid, "reward": 0.5}, timeout=30)
        assert late.status_code == 409 and "no experiment routed this request" in late.json()["error"]
        bad = requests.post(server.feedback_url, json={"request_id": rid, "reward": 1.5}, timeout=30)
        assert bad.status_code == 400 and "'reward'" in bad.json()["error"] and "[0, 1]" in bad.json()["error"]
    assert ops.running(registry) is None
    store = mlmd.open_store(metadata)
    concluded = [r for r in records.read(store, records.EXPERIMENT) if r["experiment_id"] == exp.id]
    assert [r["action"] for r in concluded] == ["start", "conclude"]
    evidence = json.loads(concluded[-1]["evidence"])
    assert evidence["arms"][challenger]["prob_best"] >= 0.95 and evidence["labelled_rows"] >= 300
    assert evidence["arms"][challenger]["live_mae"] < evidence["arms"][champion]["live_mae"]
    # The decision shows in the winner's lineage (its PushedModel is the record's input).
    decisions = mlmd.decisions_for(store, challenger)
    assert any(d["action"] == "experiment" and exp.id in d["reason"] for d in decisions), decisions  # the pin
    (verdict,) = [d for d in decisions if d["action"] == "experiment conclude"]
    assert json.loads(verdict["evidence"])["verdict"] == challenger and verdict["previous"] == champion
    from cd4ml import cli

    monkeypatch.setenv("CD4ML_METADATA_PATH", metadata)
    capsys.readouterr()
    assert cli.main(["lineage", challenger]) == 0
    assert f"experiment conclude {challenger} (was {champion})" in capsys.readouterr().out
    # Both arms' model cards tell the experiment, start and verdict (components/model_card.py).
    from components import model_card

    for arm in (champion, challenger):
        told = [d for d in model_card.read(os.path.join(registry, arm))["decisions"] if exp.id in d["reason"]]
        assert [d["action"] for d in told if d["action"].startswith("experiment ")][-2:] == [
            "experiment start", f"experiment conclude: {challenger} won"], told


def _release_manually(trained_home, registry: str, version: str) -> str:
    """Push the span-2 model into `registry` as the span-2 run did (the Pusher copies the SavedModel
    under a new version name), then run that run's own ReleaseBundle executor on its own input
    artifacts (from ML Metadata) under CD4ML_PROMOTION=manual: the step the policy changes."""
    import shutil

    from tfx.types import artifact_utils, standard_artifacts

    from cd4ml import mlmd
    from cd4ml.contract import PENDING, SAVED_MODEL_FILES
    from cd4ml.mlmd.runs import run_steps
    from components.release import ModelRelease, ReleaseBundle

    store = mlmd.open_store(trained_home.config.metadata_path)
    step = next(s for s in run_steps(store, trained_home.span2.run_id) if s.node == "ReleaseBundle")
    assert step.state == "ran"
    types = {t.id: t for t in store.get_artifact_types()}
    inputs = {key: [artifact_utils.deserialize_artifact(types[a.type_id], a) for a in found]
              for key, found in step.inputs.items()}
    destination = os.path.join(registry, version)
    os.makedirs(destination)
    for name in SAVED_MODEL_FILES:  # what the Pusher copies
        source = os.path.join(trained_home.span2.pushed_path, name)
        (shutil.copytree if name.endswith("/") else shutil.copyfile)(source, os.path.join(destination, name))
    pushed = standard_artifacts.PushedModel()
    pushed.uri = destination
    pushed.set_int_custom_property("pushed", 1)
    pushed.set_string_custom_property("pushed_destination", destination)
    inputs["pushed_model"] = [pushed]
    release = ModelRelease()
    release.uri = os.path.join(os.path.dirname(registry), "release")
    recorded = step.execution.custom_properties  # the run's parameters, as TFX records them
    parameters = {name: getattr(recorded[name], recorded[name].WhichOneof("value"))
                  for name in ReleaseBundle.SPEC_CLASS.PARAMETERS if name in recorded}
    assert parameters["promotion"] == "auto" and parameters["pipeline_name"] == trained_home.config.pipeline_name
    ReleaseBundle.EXECUTOR_SPEC.executor_class().Do(inputs, {"release": [release]},
                                                    dict(parameters, promotion="manual"))
    assert release.get_string_custom_property("approval") == PENDING
    return version


@pytest.mark.slow
def test_manual_promotion_waits_for_approval(trained_home, tmp_path, capsys):
    """CD4ML_PROMOTION=manual: a blessed span-2 model is pushed but does not answer until approved."""
    from cd4ml import cli
    from pipelines.config import PipelineConfig
    from pipelines.pipeline import create_components

    config = PipelineConfig.from_env(environ={"CD4ML_PROMOTION": "manual"}, home=str(tmp_path / "home"))
    release_step = create_components(config)[-1]
    assert release_step.exec_properties["promotion"] == "manual"  # the policy reaches the release step
    first = trained_home.span1.pushed_path.rstrip("/")
    copy_version(os.path.dirname(first), os.path.basename(first), config.registry, "1000")
    first, second = "1000", _release_manually(trained_home, config.registry, "1001")
    home = ["--home", config.home]
    assert cli.main(["models", *home]) == 0
    listing = capsys.readouterr().out
    assert f"waiting for approval: {second} (blessed; MAE" in listing
    with pytest.raises(promotion.PromotionError, match="is not waiting for approval"):
        promotion.approve(config.registry, first, "no")
    assert cli.main(["promote", second, *home]) == 2  # pinning around the gate is refused
    with running(config.registry, str(tmp_path / "logs"), protocol="v2", poll_seconds=0.5) as server:
        batch = span2_batches(size=2, batches=1)[0]
        assert infer(server, batch)[0] == first  # the candidate waits
        assert cli.main(["approve", second, "--reason", "slices reviewed", *home]) == 0
        deadline = time.monotonic() + 30
        while infer(server, batch)[0] != second:
            assert time.monotonic() < deadline, "the approved version never answered"
            time.sleep(0.5)
    from cd4ml import mlmd

    decisions = mlmd.decisions_for(mlmd.open_store(config.metadata_path), second)
    assert [(d["action"], d["reason"]) for d in decisions] == [("approve", "slices reviewed")]
    assert cli.main(["approve", second, "--reason", "again", *home]) == 2  # not waiting now
    with open(os.path.join(config.registry, second, "APPROVAL.json")) as fh:
        approval = json.load(fh)
    assert approval["decision"] == "approved" and approval["user"] and approval["at"]


def test_the_cli_starts_reports_and_stops_and_a_verdict_poll_without_an_experiment_is_fine(arms, tmp_path, capsys):
    from cd4ml import cli

    registry = arms["registry"]
    promotion.promote(registry, arms["champion"], "the champion again (an earlier test's verdict moved the pin)")
    home = ["--registry", registry, "--home", str(tmp_path / "home"), "--log-dir", str(tmp_path / "logs")]
    assert cli.main(["experiment", "verdict", "--once", *home]) == 0
    assert "no experiment is running" in capsys.readouterr().out
    assert cli.main(["experiment", "start", "9999", *home]) == 2
    assert "not a version" in capsys.readouterr().err and ops.running(registry) is None
    assert cli.main(["experiment", "start", arms["challenger"], "--min-feedback", "50", *home]) == 0
    assert cli.main(["experiment", "start", arms["challenger"], *home]) == 2  # one at a time
    assert "is running" in capsys.readouterr().err
    assert cli.main(["experiment", "status", "--json", *home]) == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status["arms"]) == {arms["champion"], arms["challenger"]} and status["verdict"] is None
    assert cli.main(["experiment", "verdict", "--once", *home]) == 0
    assert "no verdict yet" in capsys.readouterr().out and ops.running(registry) is not None
    assert cli.main(["experiment", "stop", "--reason", "enough", *home]) == 0
    assert "the champion keeps serving" in capsys.readouterr().out and ops.running(registry) is None


@pytest.mark.slow
def test_the_seldon_v1_server_routes_and_takes_a_reward_in_its_feedback(arms, tmp_path):
    """The same experiment on the Seldon v1 wrapper: answers name their arm; send_feedback with truth
    scores the arm from the errors, with only a reward counts the client's reward, out of [0, 1] is a 400."""
    from components import features

    registry = arms["registry"]
    promotion.promote(registry, arms["champion"], "the champion again")
    ops.start(registry, [arms["challenger"]], min_feedback=10_000)
    try:
        with running(registry, str(tmp_path / "logs"), poll_seconds=0.5) as server:
            batch = span2_batches(size=3, batches=1)[0]
            names = features.FEATURE_NAMES
            body = {"data": {"names": names, "ndarray": [[r[n] for n in names] for r in batch]}}
            answers = [requests.post(server.predict_url, json=body, timeout=60).json() for _ in range(12)]
            versions = {a["meta"]["tags"]["model_version"] for a in answers}
            assert versions <= {arms["champion"], arms["challenger"]}
            truth = requests.post(server.feedback_url, timeout=60, json={
                "response": {"meta": {"tags": answers[0]["meta"]["tags"]}},
                "truth": {"data": {"ndarray": [r[features.LABEL_KEY] for r in batch]}}})
            assert truth.status_code == 200, truth.text
            assert truth.json()["meta"]["tags"]["experiment"]["trials"] == 3
            reward = requests.post(server.feedback_url, timeout=60, json={
                "response": {"meta": {"tags": answers[1]["meta"]["tags"]}}, "reward": 1.0})
            assert reward.status_code == 200, reward.text
            assert reward.json()["meta"]["tags"]["experiment"]["successes"] == 3.0
            bad = requests.post(server.feedback_url, timeout=60, json={
                "response": {"meta": {"tags": answers[2]["meta"]["tags"]}}, "reward": 7})
            assert bad.status_code == 400 and "'reward'" in bad.text
            health = requests.get(f"{server.url}/health/status", timeout=30).json()["jsonData"]
            arms_seen = health["experiment"]["arms"]
            assert sum(a["trials"] for a in arms_seen.values()) == 6  # the bad reward changed nothing
    finally:
        ops.conclude(registry, str(tmp_path / "logs"), force_stop=True)
