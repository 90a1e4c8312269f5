"""Two pipeline runs and a bucket watcher writing to one ML Metadata store at the same time, as
three separate processes (the way a team's schedulers and watchers share a store): nothing is
lost and each is recorded, on SQLite and on a MariaDB server (docs/operations.md says what to
use when)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cd4ml import mlmd, storage
from cd4ml.mlmd import records
from pipelines.config import PipelineConfig

CD4ML = os.path.join(os.path.dirname(sys.executable), "cd4ml")


@pytest.fixture(params=["sqlite", "mysql"])
def metadata_path(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "home" / "metadata.sqlite")
    return request.getfixturevalue("mariadb").new_database("concurrent")


@pytest.mark.slow
def test_two_runs_and_a_watcher_at_once_are_all_recorded(tmp_path, sample_data_root, metadata_path):
    from cd4ml.storage import local_emulator

    home, data = str(tmp_path / "home"), str(tmp_path / "data")
    shutil.copytree(sample_data_root, data)
    env = dict(os.environ, CD4ML_HOME=home, CD4ML_DATA_ROOT=data, CD4ML_METADATA_PATH=metadata_path,
               CD4ML_EPOCHS="5")
    with local_emulator() as host:
        env["STORAGE_EMULATOR_HOST"] = host
        storage.ensure_bucket("cd4ml-concurrent")
        drop = os.path.join(sample_data_root, "span-2", "bikeshare.csv")
        storage.upload(drop, "cd4ml-concurrent", "incoming/", name="autumn.csv")
        commands = [[CD4ML, "run", "--span", "1"], [CD4ML, "run", "--span", "2"],
                    [CD4ML, "watch", "--bucket", "gs://cd4ml-concurrent", "--once"]]
        logs = [open(tmp_path / f"job-{i}.log", "w") for i in range(len(commands))]
        jobs = [subprocess.Popen(c, env=env, stdout=log, stderr=subprocess.STDOUT) for c, log in zip(commands, logs)]
        codes = [job.wait(timeout=900) for job in jobs]
    outputs = [open(tmp_path / f"job-{i}.log").read() for i in range(len(commands))]
    assert codes == [0, 0, 0], "\n----\n".join(o[-2000:] for o in outputs)

    config = PipelineConfig.from_env(environ={}, home=home, data_root=data, metadata_path=metadata_path)
    store = mlmd.open_store(config.metadata_path)
    runs = mlmd.list_runs(store)
    assert len(runs) == 3 and {r.status for r in runs} == {"complete"}, [(r.run_id, r.failed) for r in runs]
    assert sorted(r.span for r in runs) == [1, 2, 3]  # the drop became span 3
    assert all(r.blessed for r in runs) and len({r.pushed_version for r in runs}) == 3
    [dropped] = records.read(store, records.DROP)
    assert dropped["outcome"] == "trained" and dropped["span"] == 3 and dropped["state"] == "ran"
    # Beside the versions only the pipeline's own state (.pipeline: trusted spans) and no claim left.
    assert sorted(os.listdir(config.registry)) == sorted([r.pushed_version for r in runs] + [".pipeline"])


def test_two_pushes_in_the_same_second_claim_different_versions(tmp_path):
    from components.pusher import claim_version

    registry = str(tmp_path / "registry")
    os.makedirs(os.path.join(registry, "1000"))  # pushed earlier
    first, second = claim_version(registry, 1000.2), claim_version(registry, 1000.7)
    assert (first, second) == ("1001", "1002")
    assert sorted(os.listdir(registry)) == [".1001.claim", ".1002.claim", "1000"]
