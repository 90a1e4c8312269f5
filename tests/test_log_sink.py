"""The server's logs in a bucket: batches of lines under one gs:// prefix shared by every replica,
against the real google-cloud-storage client and a local GCS emulator; then two real servers
(MLServer, .venv-v2) writing at once, feedback reaching the other replica, and the harvest seeing
every labelled row exactly once."""

from __future__ import annotations

import time

import pytest
import requests

from cd4ml import storage
from cd4ml.logstore import LogStore
from cd4ml.triggers.harvest import Harvester
from pipelines.config import PipelineConfig
from serving import request
from serving.launch import running
from serving.logs import GcsJsonlLog
from tests.test_serving_core import GOOD

BUCKET = "cd4ml-logs"


@pytest.fixture(scope="module")
def emulator():
    with storage.local_emulator() as host:
        storage.ensure_bucket(BUCKET)
        yield host


def test_batches_become_objects_and_read_back_in_order(emulator):
    prefix = f"gs://{BUCKET}/unit"
    a = GcsJsonlLog(prefix, "predictions", flush_seconds=60, batch_lines=3)
    b = GcsJsonlLog(prefix, "predictions", flush_seconds=60, batch_lines=100)
    for i in range(7):
        a.write({"request_id": f"a{i}"})
    b.write({"request_id": "b0"})
    logs = LogStore(prefix)
    assert len(logs.sources("predictions")) == 2  # two full batches of a; the rest still buffered
    assert b.find("request_id", "a4") == {"request_id": "a4"}  # another writer's flushed line
    assert b.find("request_id", "b0") == {"request_id": "b0"}  # its own buffered line
    assert a.find("request_id", "a6") == {"request_id": "a6"}
    assert a.find("request_id", "nope") is None
    a.close()
    b.close()
    # Objects sort by the time they were flushed: a's two batches, then a's rest, then b's.
    assert [r["request_id"] for r in logs.read("predictions")] == [f"a{i}" for i in range(7)] + ["b0"]
    names = [s.rsplit("/", 1)[1] for s in logs.sources("predictions")]
    assert names == sorted(names) and len(set(names)) == 4


def test_a_crash_loses_only_the_unflushed_batch(emulator):
    prefix = f"gs://{BUCKET}/crash"
    log = GcsJsonlLog(prefix, "feedback", flush_seconds=60, batch_lines=2)
    for i in range(5):
        log.write({"request_id": f"r{i}"})
    # The process dies here: the fifth line was never flushed (no close, no atexit).
    assert [r["request_id"] for r in LogStore(prefix).read("feedback")] == ["r0", "r1", "r2", "r3"]
    log._lines.clear()  # noqa: SLF001 - what the crash took with it; atexit must not resurrect it


def test_a_torn_object_line_is_counted_not_raised(emulator):
    from cd4ml.logstore import ReadStats

    prefix = f"gs://{BUCKET}/torn"
    storage.client().bucket(BUCKET).blob("torn/drift/20260101T000000000000-h-1-000001.jsonl").upload_from_string(
        '{"ts": "x"}\n{"ts": "y", "cut')
    stats = ReadStats()
    assert list(LogStore(prefix).read("drift", stats)) == [{"ts": "x"}]
    assert stats.torn_lines == 1


@pytest.mark.slow
def test_two_servers_share_one_bucket_and_the_harvest_sees_every_row_once(emulator, span1_registry, tmp_path,
                                                                         monkeypatch):
    location = f"gs://{BUCKET}/serving-logs"
    monkeypatch.setenv("CD4ML_LOG_FLUSH_SECONDS", "0.5")
    rows = [dict(GOOD, hr=h) for h in range(4)]
    with running(span1_registry, location, protocol="v2", work_dir=str(tmp_path / "a"), poll_seconds=0) as one, \
            running(span1_registry, location, protocol="v2", work_dir=str(tmp_path / "b"), poll_seconds=0) as two:
        answered = []
        for i in range(10):
            server = (one, two)[i % 2]
            reply = requests.post(server.predict_url, json={"inputs": request.v2_inputs(rows)}, timeout=60)
            assert reply.status_code == 200, reply.text
            answered.append((server, reply.json()["parameters"]["request_id"]))
        time.sleep(1.5)  # both replicas flushed their batches
        for i, (server, rid) in enumerate(answered):
            other = two if server is one else one  # feedback reaches the other replica
            reply = requests.post(other.feedback_url, json={"request_id": rid, "truth": [1, 2, 3, i]}, timeout=60)
            assert reply.status_code == 200 and reply.json()["matched"] is True, reply.text
        time.sleep(1.5)
    logs = LogStore(location)
    # <stamp>-<host>-<pid>-<instance>-<sequence>.jsonl: the writer is what sits between stamp and sequence.
    writers = {s.rsplit("/", 1)[1].split("-", 1)[1].rsplit("-", 1)[0] for s in logs.sources("predictions")}
    assert len(writers) == 2  # two processes wrote, each its own objects
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), data_root=str(tmp_path / "data"))
    harvester = Harvester(config, log_dir=location, progress=lambda _: None)
    first = harvester.harvest()
    assert first.report.rows == 40 and first.report.requests == 10 and first.report.problems == {}
    assert sorted(first.report.request_ids) == sorted(rid for _, rid in answered)
    again = harvester.harvest()
    assert again.report.rows == 0 and again.report.problems == {"already_harvested": 10}
    assert harvester.logs.documents("harvested")[0][0] == f"{location}/harvested/span-1.json"
