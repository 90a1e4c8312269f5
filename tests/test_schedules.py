"""Schedules in code (pipelines/schedules.py): the file's rules, and `cd4ml schedule apply` against
a stand-in of the KFP v2beta1 API (through kfp.Client) and of Vertex AI's schedules REST API:
idempotent, an edit keeps the runs in flight, a removed entry is removed."""

from __future__ import annotations

import datetime

import pytest
import yaml

from cd4ml import cli
from pipelines import schedules
from pipelines.config import PipelineConfig
from tests.kfp_fake import FakeKfp, job_file
from tests.vertex_fake import FakeVertex


def test_cron_fields_and_their_rules():
    at = datetime.datetime(2026, 12, 7, 3, 0)  # a Monday
    assert schedules.due("0 3 * * *", at) and not schedules.due("0 4 * * *", at)
    assert schedules.due("*/15 1-5 * 12 1", at) and not schedules.due("0 3 * * 0,6", at)
    for expression, needle in (("0 3 * *", "expected 5 fields"), ("61 * * * *", "minute '61' is outside 0-59"),
                               ("0 3 * * mon", "day of week 'mon' is not")):
        with pytest.raises(schedules.ScheduleError, match=needle):
            schedules.cron_values(expression)


@pytest.mark.parametrize("entry, needle", [
    ({"name": "Nightly", "cron": "0 3 * * *", "job": "train", "why": "x"}, "name must be lower-case"),
    ({"name": "a", "cron": "0 3 * * *", "job": "retrain", "why": "x"}, "job 'retrain' is not one of train, batch"),
    ({"name": "a", "cron": "0 3 * * *", "job": "train"}, "missing why"),
    ({"name": "a", "cron": "0 3 * * *", "job": "batch", "why": "x"}, "needs input and output"),
    ({"name": "a", "cron": "0 25 * * *", "job": "train", "why": "x"}, "hour '25' is outside 0-23"),
    ({"name": "a", "cron": "0 3 * * *", "job": "train", "why": "x", "when": 1}, "unknown field"),
])
def test_a_bad_entry_is_refused_naming_it_the_field_and_the_rule(tmp_path, entry, needle):
    path = tmp_path / "schedules.yaml"
    path.write_text(yaml.safe_dump({"schedules": [entry]}))
    with pytest.raises(schedules.ScheduleError, match=needle) as caught:
        schedules.load(str(path))
    assert "entry 1" in str(caught.value)


def test_the_repository_schedules_file_loads():
    assert [s.name for s in schedules.load(schedules_file())] == ["nightly-retrain", "nightly-batch-scoring"]


def schedules_file():
    from cd4ml.commands.schedule import DEFAULT_FILE

    return DEFAULT_FILE


@pytest.fixture
def jobs(tmp_path):
    from pipelines import batch_job

    train = job_file(str(tmp_path / "pipeline.json"), "gs://b/data", "gs://b/registry")
    config = PipelineConfig.from_env(environ={}, home=str(tmp_path), pipeline_root="gs://b/root",
                                     data_root="gs://b/data", registry="gs://b/registry")
    batch = str(tmp_path / "batch.json")
    batch_job.compile_batch_job(config, batch, "gs://b/in/", "gs://b/out/{date}", commit="abc")
    return {"train": train, "batch": batch}


def write(tmp_path, entries):
    path = tmp_path / "schedules.yaml"
    path.write_text(yaml.safe_dump({"schedules": entries}))
    return str(path)


TRAIN = {"name": "nightly-retrain", "cron": "0 3 * * *", "job": "train", "span": "latest", "why": "fresh models"}
BATCH = {"name": "scoring", "cron": "30 2 * * *", "job": "batch", "input": "gs://b/in/",
         "output": "gs://b/out/{date}", "why": "morning planning"}


def apply(path, jobs, *flags):
    return cli.main(["schedule", "apply", "--file", path, "--job", jobs["train"], "--batch-job", jobs["batch"], *flags])


def test_kfp_recurring_runs_follow_the_file_and_runs_in_flight_survive_an_edit(tmp_path, jobs, monkeypatch, capsys):
    monkeypatch.delenv("CD4ML_GCP_PROJECT", raising=False)
    with FakeKfp() as kfp:
        path = write(tmp_path, [TRAIN, BATCH])
        assert apply(path, jobs, "--host", kfp.host, "--dry-run") == 0
        assert kfp.changes == [{"method": "POST", "path": "/apis/v2beta1/experiments", "query": "",
                                "authorization": None}] and not kfp.recurring  # the experiment only
        assert apply(path, jobs, "--host", kfp.host) == 0
        made = list(kfp.changes)
        created = {r["display_name"]: r for r in kfp.recurring.values()}
        assert sorted(created) == ["cd4ml-nightly-retrain", "cd4ml-scoring"]
        assert created["cd4ml-nightly-retrain"]["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
        assert created["cd4ml-scoring"]["runtime_config"]["parameters"] == {"source": "gs://b/in/",
                                                                           "destination": "gs://b/out/{date}"}
        assert created["cd4ml-scoring"]["max_concurrency"] == 1 and created["cd4ml-scoring"]["no_catchup"]
        assert "2 change(s), 0 unchanged" in capsys.readouterr().out
        # Twice in a row: the second makes no change at all.
        assert apply(path, jobs, "--host", kfp.host) == 0
        assert kfp.changes == made and "0 change(s), 2 unchanged" in capsys.readouterr().out

        # An edit while a run of the old schedule is in flight: a new recurring run, the old one
        # disabled (not deleted: deleting it would kill its run), then deleted once the run is done.
        old_id = created["cd4ml-nightly-retrain"]["recurring_run_id"]
        in_flight = kfp.trigger(old_id)
        path = write(tmp_path, [dict(TRAIN, cron="0 4 * * *"), BATCH])
        assert apply(path, jobs, "--host", kfp.host) == 0
        out = capsys.readouterr().out
        assert "update   nightly-retrain: 0 0 3 * * * -> 0 4 * * *" in out and "disable  nightly-retrain" in out
        assert kfp.recurring[old_id]["mode"] == "DISABLE" and in_flight["run_id"] in kfp.runs and not kfp.killed
        live = [r for r in kfp.recurring.values() if r["display_name"] == "cd4ml-nightly-retrain" and
                r["mode"] == "ENABLE"]
        assert [r["trigger"]["cron_schedule"]["cron"] for r in live] == ["0 0 4 * * *"]
        in_flight["state"] = "SUCCEEDED"
        before = len(kfp.changes)
        assert apply(path, jobs, "--host", kfp.host) == 0
        assert old_id not in kfp.recurring and [c["method"] for c in kfp.changes[before:]] == ["DELETE"]
        # A removed entry is removed.
        path = write(tmp_path, [dict(TRAIN, cron="0 4 * * *")])
        assert apply(path, jobs, "--host", kfp.host) == 0
        assert sorted(r["display_name"] for r in kfp.recurring.values()) == ["cd4ml-nightly-retrain"]
        before = len(kfp.changes)
        assert apply(path, jobs, "--host", kfp.host) == 0
        assert kfp.changes[before:] == []


def test_vertex_schedules_follow_the_file_with_patch_and_delete(tmp_path, jobs, monkeypatch, capsys):
    monkeypatch.delenv("CD4ML_KFP_HOST", raising=False)
    with FakeVertex() as vertex:
        monkeypatch.setenv("CD4ML_VERTEX_API", vertex.url)
        path = write(tmp_path, [TRAIN, BATCH])
        flags = ("--project", "acme", "--region", "europe-west4")
        assert apply(path, jobs, *flags) == 0
        assert [c["method"] for c in vertex.changes] == ["POST", "POST"]
        batch = next(s for s in vertex.schedules.values() if s["displayName"] == "cd4ml-scoring")
        assert batch["cron"] == "TZ=UTC 30 2 * * *" and batch["maxConcurrentRunCount"] == "1"
        job = batch["createPipelineJobRequest"]["pipelineJob"]
        assert job["runtimeConfig"]["parameterValues"]["destination"] == "gs://b/out/{date}"
        assert batch["createPipelineJobRequest"]["parent"] == "projects/acme/locations/europe-west4"
        assert apply(path, jobs, *flags) == 0 and len(vertex.changes) == 2  # twice: nothing more
        path = write(tmp_path, [dict(TRAIN, cron="15 3 * * *")])
        assert apply(path, jobs, *flags) == 0
        assert [c["method"] for c in vertex.changes[2:]] == ["PATCH", "DELETE"]
        (left,) = vertex.schedules.values()
        assert left["cron"] == "TZ=UTC 15 3 * * *" and left["displayName"] == "cd4ml-nightly-retrain"
        assert apply(path, jobs, *flags) == 0 and len(vertex.changes) == 4


def test_the_same_file_runs_here_once_per_due_minute(tmp_path, capsys):
    """`cd4ml watch --schedules`: an entry due this minute runs once, however often the watcher
    polls or restarts within it; one not due does not run."""
    from cd4ml.triggers.schedule import LocalSchedule
    from pipelines import local_runner

    calls = []

    def runs(config, progress=print):
        calls.append(config.span)
        return local_runner.RunResult(run_id=f"run-{len(calls)}", exit_code=local_runner.OK, pushed_version="7")

    config = PipelineConfig.from_env(environ={}, home=str(tmp_path / "home"))
    entries = schedules.load(write(tmp_path, [TRAIN, dict(TRAIN, name="weekly-span-2", cron="0 3 * * 0", span="2")]))
    clock = [datetime.datetime(2026, 12, 7, 3, 0, 12, tzinfo=datetime.timezone.utc)]  # Monday 03:00
    local = LocalSchedule(config, entries, now=lambda: clock[0], run_pipeline=runs, progress=lambda _: None)
    (ran,) = local.run_due()
    assert ran == {"name": "nightly-retrain", "minute": "2026-12-07T03:00", "run_id": "run-1", "status": "ok",
                   "version": "7"} and calls == [None]
    clock[0] += datetime.timedelta(seconds=30)
    again = LocalSchedule(config, entries, now=lambda: clock[0], run_pipeline=runs, progress=lambda _: None)
    assert again.run_due() == [] and calls == [None]  # a restart within the minute runs nothing twice
    clock[0] = datetime.datetime(2026, 12, 13, 3, 0, tzinfo=datetime.timezone.utc)  # Sunday: both
    assert [r["name"] for r in local.run_due()] == ["nightly-retrain", "weekly-span-2"] and calls == [None, None, 2]
    assert cli.main(["watch", "--home", str(tmp_path / "empty"), "--schedules",
                     write(tmp_path, [dict(TRAIN, cron="0 3 31 2 *")]), "--once"]) == 0
    assert "nothing due this minute" in capsys.readouterr().out
