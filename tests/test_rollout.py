"""Guarded rollout (cd4ml/rollout.py) with two real V2 server replicas sharing one registry and one
log folder, real traffic over HTTP with feedback, and the controller's steps as `cd4ml rollout
watch` takes them.

The ground truth of this test's world is the serving version's own answer plus a little noise,
so the serving version's live MAE is small and a version that answers differently has a live MAE
several times larger. The span-2 model, pushed guarded, is such a version: it gets its canary
share only, the live MAE guard rolls it back, every replica answers with the serving version
within a second of the decision (their registry poll is 30 s: the control poll does it), the
decision and its evidence are in ML Metadata and the lineage, and a local webhook receiver and an
SMTP server each get one alert naming the guard. A copy of the serving model, pushed guarded,
is promoted to all traffic under the same policy."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import requests

from cd4ml import promotion, rollout
from cd4ml.contract import GUARDED, MANIFEST, PROMOTED, ROLLED_BACK
from pipelines.config import PipelineConfig
from serving.launch import running
from tests.alert_receivers import HttpReceiver, SmtpReceiver, alert_env
from tests.conftest import copy_version
from tests.test_experiment import infer, span2_batches

pytestmark = pytest.mark.slow


def guard(registry: str, version: str):
    """Mark a copied version as the pusher does under CD4ML_ROLLOUT=guarded."""
    path = os.path.join(registry, version, MANIFEST)
    with open(path) as fh:
        manifest = json.load(fh)
    with open(path, "w") as fh:
        json.dump(dict(manifest, rollout=GUARDED), fh)


def experiment_of(server):
    return requests.get(f"{server.url}/v2/models/bike-demand/experiment", timeout=30).json()


def test_a_bad_canary_is_rolled_back_by_its_guard_and_a_good_one_promoted(trained_home, tmp_path, monkeypatch):
    from cd4ml import alerts, cli, mlmd
    from cd4ml.mlmd import records
    from components import registry as reg

    http, smtp = HttpReceiver(), SmtpReceiver()
    for name, value in alert_env(http, smtp).items():
        monkeypatch.setenv(name, value)
    root, logs = str(tmp_path / "registry"), str(tmp_path / "logs")
    serving, bad = trained_home.span1.pushed_version, trained_home.span2.pushed_version
    for result in (trained_home.span1, trained_home.span2):
        path = result.pushed_path.rstrip("/")
        copy_version(os.path.dirname(path), os.path.basename(path), root)
    guard(root, bad)  # pushed guarded: the servers leave it alone
    metadata = str(tmp_path / "metadata.sqlite")
    shutil.copyfile(trained_home.config.metadata_path, metadata)
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), registry=root, metadata_path=metadata,
                                     rollout="guarded", canary_share=0.2, canary_min_rows=100, guard_min_rows=30)
    assert reg.target(root)[0] == serving and rollout.waiting(root) == [bad]

    batches = span2_batches()
    rng = np.random.default_rng(7)
    with running(root, logs, protocol="v2", poll_seconds=30, work_dir=str(tmp_path / "a")) as a, \
            running(root, logs, protocol="v2", poll_seconds=30, work_dir=str(tmp_path / "b")) as b:
        replicas = (a, b)
        truth = {}  # the serving version's answer, plus noise: this world's ground truth
        for i, batch in enumerate(batches):
            reply = requests.post(a.predict_url, timeout=60, json={"inputs": _inputs(batch)}).json()
            assert reply["model_version"] == serving
            predictions = next(o["data"] for o in reply["outputs"] if o["name"] == "predictions")
            truth[i] = [round(p + rng.normal(0, 3), 2) for p in predictions]

        def traffic(indexes, decide_every=10):
            """Requests to both replicas in turn, each with its feedback; the controller decides
            between chunks, as `cd4ml rollout watch` would. Returns rows answered by version and
            the step that ended the canary."""
            answered = {}
            for n, i in enumerate(indexes):
                server = replicas[n % 2]
                version, rid = infer(server, batches[i])
                answered[version] = answered.get(version, 0) + 1
                reply = requests.post(server.feedback_url, json={"request_id": rid, "truth": truth[i]}, timeout=60)
                assert reply.status_code == 200, reply.text
                if n % decide_every == decide_every - 1:
                    done = rollout.step(config, logs)
                    if done.action in ("promoted", "rolled_back"):
                        return answered, done, time.monotonic()
            raise AssertionError(f"no decision after {len(indexes)} requests: {rollout.status(config, logs)}")

        def start(version):
            started = rollout.step(config, logs)
            assert (started.action, started.version) == ("started", version)
            deadline = time.monotonic() + 60  # each replica loads the canary's model
            while not all(experiment_of(s) for s in replicas):
                assert time.monotonic() < deadline, "a replica did not start the canary"
                time.sleep(0.1)

        start(bad)

        answered, done, decided_at = traffic(range(len(batches)))
        assert (done.action, done.version, done.guard) == ("rolled_back", bad, "live_mae_ratio")
        share = answered.get(bad, 0) / sum(answered.values())
        assert 0.05 < share < 0.45, answered  # its canary share (0.2), no more
        evidence = done.evidence
        assert evidence["canary"]["live_mae"] > 3 * evidence["serving"]["live_mae"]
        # Every replica stops routing to it within a second of the decision, then answers alone.
        for server in replicas:
            while experiment_of(server):
                time.sleep(0.02)
            assert time.monotonic() - decided_at < 1.0, f"{server.url} took over a second"
        for server in replicas:
            assert {infer(server, batches[0])[0] for _ in range(20)} == {serving}
        assert reg.rollout_state(root, bad) == ROLLED_BACK and reg.target(root)[0] == serving

        # A good version under the same policy: a copy of the serving model, pushed guarded.
        good = str(int(bad) + 1)
        copy_version(root, serving, root, good)
        guard(root, good)
        start(good)
        answered, done, _ = traffic(range(len(batches)))
        assert (done.action, done.version) == ("promoted", good), done.why
        assert answered.get(good, 0) >= 20  # it earned its promotion on its own labelled rows
        deadline = time.monotonic() + 60
        while not all({infer(s, batches[0])[0] for _ in range(5)} == {good} for s in replicas):
            assert time.monotonic() < deadline, "the promoted version does not serve all traffic"
            time.sleep(0.2)
        assert reg.rollout_state(root, good) == PROMOTED
        # A rollback by hand: to the version served before (never to the canary rolled back), on
        # every replica within a second (the control poll; each kept the version it replaced).
        decision = promotion.rollback(root, "by hand", metadata)
        assert (decision.previous, decision.version) == (good, serving)
        decided_at = time.monotonic()
        for server in replicas:
            while infer(server, batches[0])[0] != serving:
                time.sleep(0.02)
            assert time.monotonic() - decided_at < 1.0, f"{server.url} took over a second"

    # ML Metadata: each decision with its evidence, linked to the push, and in the lineage.
    store = mlmd.open_store(metadata)
    decisions = [r for r in records.read(store, records.ROLLOUT) if r["version"] == bad]
    assert [r["action"] for r in decisions] == ["started", "rolled_back"]
    assert decisions[-1]["guard"] == "live_mae_ratio"
    assert json.loads(decisions[-1]["evidence"])["canary"]["version"] == bad
    assert any(d["action"] == "rollout rolled_back" and "live_mae_ratio" in d["reason"]
               for d in mlmd.decisions_for(store, bad))
    monkeypatch.setenv("CD4ML_METADATA_PATH", metadata)
    assert cli.main(["rollout", "--registry", root, "--home", config.home]) == 0
    # One alert naming the guard at each sink (besides the canary and promotion notices).
    alerts.alerter(config.home).flush(60)
    rolled = [p for p in http.json("/json") if p["kind"] == "rolled_back"]
    assert len(rolled) == 1 and rolled[0]["details"]["guard"] == "live_mae_ratio"
    mails = [s for s in smtp.subjects() if "rolled back" in s]
    assert mails == [f"[cd4ml critical] rolled back: version {bad}"]
    assert "live_mae_ratio" in next(m for m in smtp.messages if "rolled back" in m["Subject"]).get_content()
    assert [p["kind"] for p in http.json("/json")] == ["canary_started", "rolled_back", "canary_started", "promoted"]
    http.close()
    smtp.close()


def _inputs(batch):
    from components import features
    from serving import request as req

    return req.v2_inputs([{f: r[f] for f in features.FEATURE_NAMES} for r in batch])


def test_guards_fire_on_a_real_breach_and_not_on_a_few_unlucky_rows(tmp_path):
    """The judge alone, on evidence as the logs give it: small, noisy differences do not roll a
    canary back; clear ones do, naming the guard; equal evidence promotes."""
    from cd4ml.rollout import ArmEvidence, judge
    from serving.bandit import CANARY, Experiment

    config = PipelineConfig.from_env(environ={}, home=str(tmp_path), guard_min_rows=30, canary_min_rows=100)
    exp = Experiment(id="canary-2", champion="1", challengers=("2",), strategy=CANARY, share=0.2)

    def arm(requests=100, rows=500, errors=0, outliers=50, latency=0.3, labelled=500, mae=10.0, successes=None):
        return ArmEvidence(requests=requests, rows=rows, errors=errors, outliers=outliers,
                           latencies=[latency] * requests, labelled_rows=labelled, live_mae=mae,
                           successes=labelled * 0.9 if successes is None else successes, trials=labelled)

    serving = arm(requests=400, rows=2000, outliers=226, labelled=2000)
    unlucky = arm(requests=12, rows=60, outliers=15, latency=0.9, labelled=60)  # 25 % outliers on 60 rows
    assert judge(config, exp, {"1": serving, "2": unlucky}).action == "wait"
    # A copy of the serving model that drew a few outlier-heavy requests (one day's rows each): 31.7 %
    # of 60 rows in 6 requests against 9.3 %. Counting rows as independent rolled it back.
    few_heavy = arm(requests=6, rows=60, outliers=19, labelled=60)
    assert judge(config, exp, {"1": arm(requests=400, rows=2000, outliers=186, labelled=2000),
                               "2": few_heavy}).action == "wait"
    for guard, canary in (("outlier_rate_ratio", arm(rows=600, outliers=240, labelled=60)),
                          ("error_rate", arm(requests=70, errors=30, labelled=60)),
                          ("p99_latency_ratio", arm(requests=150, latency=300.0, labelled=60)),
                          ("live_mae_ratio", arm(labelled=60, mae=40.0))):
        verdict = judge(config, exp, {"1": serving, "2": canary})
        assert (verdict.action, verdict.guard) == ("rollback", guard), verdict
    assert judge(config, exp, {"1": serving, "2": arm(labelled=150, outliers=40)}).action == "promote"


def test_a_person_can_withdraw_a_waiting_version_and_promote_a_canary(trained_home, tmp_path, capsys):
    from cd4ml import cli
    from cd4ml.contract import EXPERIMENT_FILE
    from components import registry as reg

    root = str(tmp_path / "registry")
    path = trained_home.span1.pushed_path.rstrip("/")
    for name in ("1000", "1001", "1002"):
        copy_version(os.path.dirname(path), os.path.basename(path), root, name)
    guard(root, "1001")
    flags = ["--registry", root, "--home", str(tmp_path / "home")]
    assert cli.main(["rollout", *flags, "abort", "1001", "--reason", "wrong data"]) == 0
    assert reg.rollout_state(root, "1001") == ROLLED_BACK and reg.target(root)[0] == "1002"  # 1002: immediate
    guard(root, "1002")
    assert reg.target(root)[0] == "1000"
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), registry=root, rollout="guarded")
    assert rollout.step(config).line().startswith("started 1002: canary on 10% of traffic beside 1000")
    assert cli.main(["rollout", *flags]) == 0
    assert "canary 1002 on 10% of traffic" in capsys.readouterr().out
    assert cli.main(["rollout", *flags, "promote", "1002"]) == 0
    assert reg.rollout_state(root, "1002") == PROMOTED and reg.target(root)[0] == "1002"
    assert not os.path.exists(os.path.join(root, EXPERIMENT_FILE))
    assert cli.main(["rollout", *flags, "abort", "1001"]) == 2  # nothing to withdraw any more
    assert "neither the running canary nor waiting" in capsys.readouterr().err
