"""The contract test: the real seldon-core-microservice (.venv-serving) over HTTP.

It must answer the pushed holdout sample exactly as the SavedModel does in-process, reject every
bad input with a 4xx naming the field while staying up, count the rejections in Prometheus, and
swap in a newly pushed version under concurrent load without losing a request.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
import requests

from components import features
from serving.launch import running
from tests.concurrency import clients, wait_until
from tests.conftest import copy_version
from tests.test_serving_core import BAD_REQUESTS, GOOD, holdout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(span1_registry):
    return span1_registry


@pytest.fixture(scope="module")
def server(registry, tmp_path_factory):
    with running(registry, str(tmp_path_factory.mktemp("http-logs")), poll_seconds=0.5) as srv:
        yield srv


def post(server, payload, **kwargs):
    body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return requests.post(server.predict_url, data=body, headers={"Content-Type": "application/json"},
                         timeout=60, **kwargs)


def test_http_explain_attributes_every_prediction_to_every_feature(server, registry):
    rows = [r["features"] for r in holdout(registry)[:3]]
    predicted = post(server, {"jsonData": rows}).json()["data"]["ndarray"]
    reply = requests.post(server.explain_url, json={"jsonData": rows}, timeout=60)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["meta"]["tags"]["model_version"] == "1000"
    for row, prediction in zip(body["explanation"]["rows"], predicted):
        assert sorted(row["attributions"]) == sorted(features.FEATURE_NAMES)
        assert body["explanation"]["base_value"] + sum(row["attributions"].values()) == \
            pytest.approx(prediction, rel=0.01)
    for payload, status, needle in ((b"{nope", 400, "malformed"), (json.dumps(BAD_REQUESTS[2][1]), 400, "'temp'")):
        bad = requests.post(server.explain_url, data=payload, headers={"Content-Type": "application/json"},
                            timeout=60)
        assert bad.status_code == status and needle in bad.json()["status"]["info"], bad.text
    assert post(server, {"jsonData": rows}).status_code == 200


def test_http_predictions_match_the_saved_model_in_process(server, registry):
    from serving.version import LoadedVersion

    sample = holdout(registry)
    in_process = LoadedVersion(registry, "1000").predict([r["features"] for r in sample])
    recorded = np.asarray([r["expected"] for r in sample])
    np.testing.assert_allclose(in_process, recorded, rtol=1e-3, atol=1e-3)

    names = features.FEATURE_NAMES
    batch = post(server, {"data": {"names": names, "ndarray": [[r["features"][n] for n in names] for r in sample]}})
    assert batch.status_code == 200, batch.text
    body = batch.json()
    np.testing.assert_allclose(body["data"]["ndarray"], in_process, rtol=1e-3, atol=1e-3)
    assert body["meta"]["tags"]["model_version"] == "1000"
    assert len(body["meta"]["tags"]["outlier_score"]) == len(sample)

    for r, want in list(zip(sample, in_process))[:10]:  # single rows, as records
        one = post(server, {"jsonData": r["features"]})
        assert one.status_code == 200, one.text
        assert one.json()["data"]["ndarray"][0] == pytest.approx(float(want), rel=1e-3, abs=1e-3)
        assert one.json()["meta"]["tags"]["model_version"] == "1000"


@pytest.mark.parametrize("name,payload,status,needle", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_http_rejects_bad_input_naming_the_field(server, name, payload, status, needle):
    answer = post(server, payload)
    assert answer.status_code == status, answer.text
    assert needle in answer.json()["status"]["info"]
    assert server.alive()


def test_http_rejects_malformed_json_and_oversized_bodies_then_keeps_serving(server):
    broken = post(server, '{"data": {"names": ["season"')
    assert broken.status_code == 400 and "malformed JSON" in broken.json()["status"]["info"]
    huge = post(server, json.dumps({"jsonData": [GOOD] * 20000}))
    assert huge.status_code == 413 and "bytes" in huge.json()["status"]["info"]
    assert post(server, {"jsonData": [GOOD]}).status_code == 200
    health = requests.get(f"{server.url}/health/status", timeout=10).json()
    assert health["jsonData"]["version"] == "1000"


def test_rejections_outliers_and_feedback_reach_prometheus(server):
    assert post(server, {"jsonData": [dict(GOOD, hr=99)]}).status_code == 400
    answer = post(server, {"jsonData": [GOOD]}).json()
    feedback = requests.post(server.feedback_url, timeout=30, json={
        "response": {"meta": {"tags": answer["meta"]["tags"]}, "data": answer["data"]},
        "truth": {"data": {"ndarray": [answer["data"]["ndarray"][0] + 5.0]}}})
    assert feedback.status_code == 200, feedback.text
    assert feedback.json()["meta"]["tags"]["matched"] is True
    requests.get(f"{server.url}/health/status", timeout=10)  # health checks flush pending metrics
    text = requests.get(server.metrics_url, timeout=10).text
    for key in ("cd4ml_requests_total", "cd4ml_rejected_requests_total", "cd4ml_live_mae",
                "cd4ml_request_duration_seconds_bucket"):
        assert key in text, key
    assert 'rule="unknown_category"' in text


def test_feedback_by_request_id_joins_a_prediction_this_process_never_saw(registry, tmp_path):
    """Workers (and restarts) share the log directory, not memory: feedback naming only the request
    id joins the answer another server process gave, read from the shared prediction log."""
    logs = str(tmp_path / "logs")
    with running(registry, logs) as first:
        answers = [requests.post(first.predict_url, json={"jsonData": [GOOD]}, timeout=30).json()
                   for _ in range(3)]
    with running(registry, logs) as second:
        replies = [requests.post(second.feedback_url, timeout=30, json={
            "response": {"meta": {"tags": {"request_id": a["meta"]["tags"]["request_id"]}}},
            "truth": {"data": {"ndarray": [a["data"]["ndarray"][0] + 1.0]}}}) for a in answers]
        unknown = requests.post(second.feedback_url, timeout=30, json={
            "response": {"meta": {"tags": {"request_id": "f" * 32}}},
            "truth": {"data": {"ndarray": [1.0]}}})
    assert [r.status_code for r in replies] == [200] * 3, [r.text for r in replies]
    assert all(r.json()["meta"]["tags"]["matched"] for r in replies)
    assert unknown.status_code == 400 and "request_id" in unknown.text
    feedback = [json.loads(line) for line in open(tmp_path / "logs" / "feedback.jsonl")]
    assert [f["request_id"] for f in feedback] == [a["meta"]["tags"]["request_id"] for a in answers]
    assert all(f["abs_errors"] == [pytest.approx(1.0)] for f in feedback)


def test_http_hot_reload_under_concurrent_requests_loses_none(registry, tmp_path):
    source, registry = registry, str(tmp_path / "registry")
    os.makedirs(registry)
    copy_version(source, "1000", registry, "1000")
    with running(registry, str(tmp_path / "logs"), poll_seconds=0.3) as srv:
        results = []
        sessions = threading.local()

        def send_one():
            session = getattr(sessions, "session", None) or requests.Session()
            sessions.session = session
            try:
                r = session.post(srv.predict_url, json={"jsonData": [GOOD]}, timeout=60)
                results.append((r.status_code, r.json()["meta"]["tags"].get("model_version")))
            except Exception as err:  # noqa: BLE001 - a lost request is what we look for
                results.append((None, repr(err)))

        with clients(send_one, 3) as stop:
            copy_version(registry, "1000", registry, "2000")
            copy_version(registry, "1000", registry, "1500")  # older than the one serving: ignored
            # Until the new version answers, then while it keeps answering (both bounded).
            wait_until(lambda: any(v == "2000" for _, v in results[-10:]), stop, seconds=300, interval=0.05)
            seen = len(results)
            wait_until(lambda: len(results) >= seen + 30, stop, seconds=100, interval=0.05)
        lost = [r for r in results if r[0] != 200]
        assert lost == [], lost[:5]
        versions = [v for _, v in results]
        assert set(versions) == {"1000", "2000"} and versions[-1] == "2000"
        assert "now serving version 2000" in srv.log()


def test_corrupt_version_is_refused_over_http_while_the_old_one_serves(registry, tmp_path):
    local = str(tmp_path / "registry")
    os.makedirs(local)
    copy_version(registry, "1000", local, "1000")
    with running(local, str(tmp_path / "logs"), poll_seconds=0.3) as srv:
        bad = copy_version(local, "1000", local, "9000")
        with open(os.path.join(bad, "saved_model.pb"), "wb") as fh:
            fh.write(b"not a model")
        for _ in range(6000):
            if "REFUSED version 9000" in srv.log():
                break
            time.sleep(0.05)
        assert "REFUSED version 9000" in srv.log() and "still serving 1000" in srv.log()
        answer = post(srv, {"jsonData": [GOOD]})
        assert answer.status_code == 200 and answer.json()["meta"]["tags"]["model_version"] == "1000"


def test_seldon_client_from_the_serving_env(server):
    """seldon-core's own SeldonClient (the README's example) talks to the server."""
    import subprocess

    from serving.launch import serving_venv

    script = (
        "import json, sys\n"
        "from google.protobuf import json_format\n"
        "from seldon_core.seldon_client import SeldonClient\n"
        "client = SeldonClient(gateway='seldon', transport='rest', microservice_endpoint=sys.argv[1])\n"
        "result = client.microservice(method='predict', json_data=json.loads(sys.argv[2]))\n"
        "print(json.dumps({'success': result.success, 'msg': result.msg,"
        " 'response': json_format.MessageToDict(result.response)}))\n")
    out = subprocess.run([os.path.join(serving_venv(), "bin", "python"), "-c", script,
                          f"127.0.0.1:{server.port}", json.dumps([GOOD])],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["success"], answer["msg"]
    assert answer["response"]["meta"]["tags"]["model_version"] == "1000"
    assert len(answer["response"]["data"]["ndarray"]) == 1
