"""Data-drop triggers against gcp-storage-emulator (started here, localhost only): `cd4ml drop`,
`cd4ml watch --once` (exactly once, restart, quarantine, refused names, KFP submit) and the Cloud
Function through functions-framework's own test client. The slow test runs the real pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pytest

from cd4ml import storage
from pipelines import local_runner
from pipelines.config import REPO_ROOT, PipelineConfig
from tests.conftest import sample_rows, write_rows
from tests.kfp_fake import FakeKfp, job_file

BUCKET = "cd4ml-drops"


@pytest.fixture(scope="module")
def emulator():
    """The real gcp-storage-emulator on a free localhost port (the demo's own local bucket)."""
    from cd4ml.storage import local_emulator

    with local_emulator() as host:
        yield host


@pytest.fixture
def bucket(emulator, request):

    client = storage.client()
    import zlib

    name = f"{BUCKET}-{zlib.crc32(request.node.name.encode()):08x}"
    storage.ensure_bucket(name, client)
    yield name
    for blob in client.list_blobs(name):
        blob.delete()


@pytest.fixture
def home(tmp_path, sample_data_root):
    data = tmp_path / "data"
    shutil.copytree(os.path.join(sample_data_root, "span-1"), data / "span-1")
    return PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"), data_root=str(data), epochs=5)


class FakeRuns:
    """Stands in for local_runner.run in the fast tests: records spans, answers like the runner."""

    def __init__(self, exit_code=local_runner.OK, crash_on_call=None):
        self.calls = []
        self.exit_code = exit_code
        self.crash_on_call = crash_on_call

    def __call__(self, config, progress=print, run_id=None):
        self.calls.append(config.span)
        if self.crash_on_call == len(self.calls):
            raise KeyboardInterrupt("watcher killed mid-run")
        result = local_runner.RunResult(run_id=f"run-{len(self.calls)}", exit_code=self.exit_code,
                                        span=config.span, run_dir=os.path.join(config.home, "runs", "x"))
        if self.exit_code == local_runner.OK:
            result.pushed_version, result.new_push = f"{1000 + len(self.calls)}", True
        if self.exit_code == local_runner.VALIDATION_FAILED:
            result.problems = [{"split": "train", "feature": "weathersit", "rule": "unseen category",
                                "description": "weathersit: unexpected string values ('sunny')"}]
        return result


def handler_for(config, bucket, runs=None, **kw):
    from cd4ml.triggers import drop as triggers

    h = triggers.make_handler(config, f"gs://{bucket}", "incoming/", progress=lambda _: None, **kw)
    h.run_pipeline = runs
    return h


def drop(path, bucket, name):
    from cd4ml import cli

    assert cli.main(["drop", str(path), "--bucket", f"gs://{bucket}", "--name", name]) == 0


def span_csv(tmp_path, name="bikeshare.csv", every=4, span=2, mutate=None):
    rows = [r for r in sample_rows(span, every=every)]
    if mutate:
        rows = [mutate(dict(r)) for r in rows]
    path = tmp_path / "drops" / name
    write_rows(str(path), rows)
    return path


def test_drop_becomes_the_next_span_exactly_once(home, bucket, tmp_path):
    from cd4ml.triggers import drop as triggers

    good = span_csv(tmp_path)
    drop(good, bucket, "july.csv")
    runs = FakeRuns()
    results = handler_for(home, bucket, runs).poll_once()
    assert [r.outcome for r in results] == [triggers.TRAINED]
    assert runs.calls == [2]
    with open(os.path.join(home.data_root, "span-2", "july.csv")) as a, open(good) as b:
        assert a.read() == b.read()
    # Polling again, and a restarted watcher (a new ledger on the same MLMD), reprocess nothing.
    assert handler_for(home, bucket, runs).poll_once() == []
    assert runs.calls == [2]
    # The same name uploaded again is a new generation: a new drop, the next span.
    drop(good, bucket, "july.csv")
    results = handler_for(home, bucket, runs).poll_once()
    assert [(r.outcome, r.span) for r in results] == [(triggers.TRAINED, 3)]
    records = triggers.MlmdLedger(home.metadata_path, bucket, "incoming/").history()
    assert [(r["object"], r["span"], r["outcome"], r["state"]) for r in records] == [
        ("incoming/july.csv", 2, "trained", "ran"), ("incoming/july.csv", 3, "trained", "ran")]
    assert records[0]["generation"] != records[1]["generation"]
    assert records[0]["version"] == "1001"


def test_watch_cli_once_and_restart_resumes_an_interrupted_drop(home, bucket, tmp_path, monkeypatch):
    from cd4ml import cli
    from cd4ml.triggers import drop as triggers

    drop(span_csv(tmp_path, "a.csv"), bucket, "a.csv")
    drop(span_csv(tmp_path, "b.csv"), bucket, "b.csv")
    crashing = FakeRuns(crash_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        handler_for(home, bucket, crashing).poll_once()
    assert crashing.calls == [2, 3]
    # Restart through the CLI: a.csv finished (skipped), b.csv was interrupted (resumed, same span).
    runs = FakeRuns()
    monkeypatch.setattr(local_runner, "run", runs)
    monkeypatch.setenv("CD4ML_HOME", home.home)
    monkeypatch.setenv("CD4ML_DATA_ROOT", home.data_root)
    assert cli.main(["watch", "--bucket", f"gs://{bucket}", "--once"]) == 0
    assert runs.calls == [3]
    assert cli.main(["watch", "--bucket", f"gs://{bucket}", "--once"]) == 0
    assert runs.calls == [3]
    records = triggers.MlmdLedger(home.metadata_path, bucket, "incoming/").history()
    assert sorted((r["object"], r["span"], r["outcome"]) for r in records) == [
        ("incoming/a.csv", 2, "trained"), ("incoming/b.csv", 3, "trained")]


def test_names_that_escape_the_data_root_are_refused(home, bucket, tmp_path):
    from cd4ml.triggers import drop as triggers

    good = span_csv(tmp_path)
    client = storage.client()
    # The emulator itself rejects '..' in object names; the handler sees them in events anyway.
    evil_events = ["incoming/../../etc/cron.csv", "incoming/..", "incoming/a/../../../b.csv"]
    evil = ["incoming/sub/x.csv", "incoming/.hidden.csv", "incoming/a\\b.csv", "incoming/notes.txt"]
    for name in evil:
        client.bucket(bucket).blob(name).upload_from_filename(str(good))
    runs = FakeRuns()
    handler = handler_for(home, bucket, runs)
    direct = [handler.handle(name, 7) for name in evil_events]
    results = handler.poll_once()
    assert sorted(r.key.split("#")[0] for r in results) == sorted(f"gs://{bucket}/{n}" for n in evil)
    assert {r.outcome for r in results + direct} == {triggers.REFUSED}
    assert runs.calls == []
    assert sorted(os.listdir(home.data_root)) == ["span-1"]
    assert not os.path.exists(os.path.join(os.path.dirname(home.data_root), "etc"))
    assert handler_for(home, bucket, runs).poll_once() == []  # recorded: never retried


def test_unreadable_drop_is_quarantined_with_its_report(home, bucket, tmp_path):
    from cd4ml.triggers import drop as triggers

    bad = span_csv(tmp_path, "nohour.csv", mutate=lambda r: {k: v for k, v in r.items() if k != "hr"})
    drop(bad, bucket, "nohour.csv")
    runs = FakeRuns()
    (result,) = handler_for(home, bucket, runs).poll_once()
    assert result.outcome == triggers.QUARANTINED and "hr" in result.detail
    assert runs.calls == [] and sorted(os.listdir(home.data_root)) == ["span-1"]
    client = storage.client()
    names = [b.name for b in client.list_blobs(bucket, prefix="quarantine/")]
    assert len(names) == 2 and any(n.endswith(".report.txt") for n in names)
    report = client.bucket(bucket).blob(next(n for n in names if n.endswith(".report.txt"))).download_as_text()
    assert "missing required column" in report and "hr" in report
    (local,) = os.listdir(os.path.join(home.home, "quarantine"))
    assert "missing required column" in open(os.path.join(home.home, "quarantine", local, "report.txt")).read()


def test_drop_failing_validation_is_quarantined_and_its_span_removed(home, bucket, tmp_path):
    from cd4ml.triggers import drop as triggers

    drop(span_csv(tmp_path), bucket, "sunny.csv")
    runs = FakeRuns(exit_code=local_runner.VALIDATION_FAILED)
    (result,) = handler_for(home, bucket, runs).poll_once()
    assert result.outcome == triggers.QUARANTINED and runs.calls == [2]
    assert sorted(os.listdir(home.data_root)) == ["span-1"], "a bad span must not become the latest"
    # The next good drop does not reuse the quarantined span number.
    drop(span_csv(tmp_path), bucket, "good.csv")
    (result,) = handler_for(home, bucket, FakeRuns()).poll_once()
    assert (result.outcome, result.span) == (triggers.TRAINED, 3)


def _job(tmp_path, bucket: str) -> str:
    return job_file(str(tmp_path / "pipeline.json"), f"gs://{bucket}/data", f"gs://{bucket}/registry")


def test_watch_submit_copies_in_the_bucket_and_starts_a_kfp_run(home, bucket, tmp_path):
    from cd4ml.triggers import drop as triggers

    drop(span_csv(tmp_path), bucket, "aug.csv")
    with FakeKfp() as fake:
        config = dataclasses.replace(home, data_root=f"gs://{bucket}/data", kfp_host=fake.host)
        (result,) = handler_for(config, bucket, submit_job=_job(tmp_path, bucket)).poll_once()
        assert result.outcome == triggers.SUBMITTED and result.span == 1
        (run,) = fake.runs.values()
        assert json.loads(run["runtime_config"]["parameters"]["range_config"])["staticRange"]["startSpanNumber"] == 1
        assert "-drop-" in run["display_name"] and "abc123" in run["display_name"]
    client = storage.client()
    assert [b.name for b in client.list_blobs(bucket, prefix="data/")] == ["data/span-1/aug.csv"]


def test_cloud_function_submits_once_per_object_generation(bucket, tmp_path, monkeypatch):
    import functions_framework
    from cloudevents.http import CloudEvent, to_structured


    good = span_csv(tmp_path)
    uri_gen = storage.upload(str(good), bucket, "incoming/", name="sept.csv")
    with FakeKfp() as fake:
        monkeypatch.setenv("CD4ML_DATA_ROOT", f"gs://{bucket}/data")
        monkeypatch.setenv("CD4ML_KFP_HOST", fake.host)
        monkeypatch.setenv("CD4ML_HOME", str(tmp_path / "fn-home"))
        monkeypatch.setenv("CD4ML_PIPELINE_JOB", _job(tmp_path, bucket))
        app = functions_framework.create_app(target="on_drop",
                                             source=os.path.join(REPO_ROOT, "cloud_function", "main.py"),
                                             signature_type="cloudevent")
        client = app.test_client()

        def post(name, generation, kind="google.cloud.storage.object.v1.finalized"):
            event = CloudEvent({"type": kind, "source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
                                "subject": f"objects/{name}"},
                               {"bucket": bucket, "name": name, "generation": str(generation)})
            headers, body = to_structured(event)
            return client.post("/", headers=headers, data=body)

        assert post("incoming/sept.csv", uri_gen[1]).status_code == 200
        assert post("incoming/sept.csv", uri_gen[1]).status_code == 200  # redelivery: a no-op
        assert len(fake.runs) == 1
        assert post("incoming/../x.csv", 1).status_code == 200        # refused, nothing submitted
        assert post("incoming/sept.csv", uri_gen[1], kind="google.cloud.storage.object.v1.deleted").status_code == 200
        assert len(fake.runs) == 1
    gcs = storage.client()
    markers = sorted(b.name for b in gcs.list_blobs(bucket, prefix="_cd4ml/processed/"))
    assert len(markers) == 2
    records = {r["key"].split("#")[0]: r for r in
               (json.loads(gcs.bucket(bucket).blob(m).download_as_text()) for m in markers)}
    done = records[f"gs://{bucket}/incoming/sept.csv"]
    assert done["state"] == "complete" and done["outcome"] == "submitted" and done["span"] == 1
    assert records[f"gs://{bucket}/incoming/../x.csv"]["outcome"] == "refused"


@pytest.mark.slow
def test_real_pipeline_trains_a_good_drop_and_quarantines_a_bad_one(trained_home, tmp_path, emulator, monkeypatch):
    """The real pipeline: a good span-2 sample is trained and pushed; an unseen category stops at
    ExampleValidator, is quarantined (one alert per sink, with the report), and the registry is
    unchanged."""
    from cd4ml import alerts
    from cd4ml.triggers import drop as triggers
    from tests.alert_receivers import HttpReceiver, SmtpReceiver, alert_env

    http, smtp = HttpReceiver(), SmtpReceiver()
    for name, value in alert_env(http, smtp).items():
        monkeypatch.setenv(name, value)

    home = str(tmp_path / "home")
    shutil.copytree(trained_home.config.home, home)
    data_root = os.path.join(home, "data")
    config = dataclasses.replace(trained_home.config, home=home, data_root=data_root,
                                 pipeline_root=trained_home.config.pipeline_root,
                                 registry=os.path.join(home, "registry"),
                                 metadata_path=os.path.join(home, "metadata.sqlite"))
    client = storage.client()
    storage.ensure_bucket("cd4ml-real", client)
    before = sorted(os.listdir(config.registry))

    def sunny(row):
        row["weathersit"] = "sunny" if int(row["day"]) % 8 == 0 else row["weathersit"]
        return row

    bad = span_csv(tmp_path, "sunny.csv", mutate=sunny)
    storage.upload(str(bad), "cd4ml-real", "incoming/", name="sunny.csv", gcs=client)
    handler = triggers.make_handler(config, "gs://cd4ml-real", "incoming/", client=client)
    (result,) = handler.poll_once()
    assert result.outcome == triggers.QUARANTINED, result.line()
    assert sorted(os.listdir(config.registry)) == before
    assert sorted(os.listdir(data_root)) == ["span-1", "span-2"]
    with open(os.path.join(home, "quarantine", os.listdir(os.path.join(home, "quarantine"))[0], "report.txt")) as fh:
        assert "weathersit" in fh.read()
    alerts.alerter(config.home).flush(60)
    (refused,) = http.json("/json")
    assert refused["kind"] == "data_refused" and refused["subject"] == "span 3"
    assert "weathersit" in refused["details"]["report"]
    assert len([p for p in http.posts if p["path"] != "/json"]) == 1
    assert smtp.subjects() == ["[cd4ml warning] data refused: span 3"]
    smtp.close()
    http.close()

    good = span_csv(tmp_path, "good.csv", span=2, every=2)
    storage.upload(str(good), "cd4ml-real", "incoming/", name="good.csv", gcs=client)
    (result,) = handler.poll_once()
    assert result.outcome in (triggers.TRAINED, triggers.NOT_BLESSED), result.line()
    assert result.span == 4  # span 3 went to the quarantined drop and is never reused
    assert os.path.isdir(os.path.join(data_root, "span-4"))
