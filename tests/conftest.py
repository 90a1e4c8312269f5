"""Shared fixtures. The expensive one is `trained_home`: the real pipeline, run once per test
session on a small sample of both spans, whose MLMD store, registry and artifacts every
end-to-end test (pipeline, serving, lineage, notebooks, triggers) reads instead of training again.
"""

from __future__ import annotations

import csv
import json
import dataclasses
import os
import shutil
from typing import Dict, List

import pytest

from pipelines.config import REPO_ROOT, PipelineConfig

DATA_ROOT = os.path.join(REPO_ROOT, "data", "bikeshare")


def read_span(span: int) -> List[Dict[str, str]]:
    with open(os.path.join(DATA_ROOT, f"span-{span}", "bikeshare.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def write_rows(path: str, rows: List[Dict[str, str]], columns=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    columns = columns or list(rows[0].keys())
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def sample_rows(span: int, every: int = 2) -> List[Dict[str, str]]:
    """Whole days (every `every`-th day of the span), so the by-day split still sees full days."""
    return [r for r in read_span(span) if int(r["day"]) % every == 0]


@pytest.fixture(scope="session", autouse=True)
def repository_lake_untouched():
    """Tests write spans into temporary data roots, never into the repository's data/bikeshare: a
    harvested or dropped span there would become every default run's latest span."""
    from pipelines import spans

    assert spans.list_spans(DATA_ROOT) == [1, 2], sorted(os.listdir(DATA_ROOT))
    yield
    assert spans.list_spans(DATA_ROOT) == [1, 2], f"a test wrote into {DATA_ROOT}: {sorted(os.listdir(DATA_ROOT))}"


@pytest.fixture(scope="session")
def sample_data_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("data"))
    for span in (1, 2):
        write_rows(os.path.join(root, f"span-{span}", "bikeshare.csv"), sample_rows(span))
    return root


@dataclasses.dataclass
class TrainedHome:
    config: PipelineConfig
    span1: object  # local_runner.RunResult
    span2: object


def _train(tmp_path_factory, sample_data_root, **overrides) -> TrainedHome:
    """The real pipeline on the sample: span 1, then span 2 (drifted), in one home."""
    from cd4ml.runner import run_and_report
    from pipelines import local_runner

    home = str(tmp_path_factory.mktemp("home"))
    data_root = os.path.join(home, "data")
    shutil.copytree(sample_data_root, data_root)
    config = PipelineConfig.from_env(environ={}, home=home, data_root=data_root, epochs=15, **overrides)
    span1 = run_and_report(dataclasses.replace(config, span=1))
    assert span1.exit_code == local_runner.OK, local_runner.format_summary(span1)
    span2 = run_and_report(dataclasses.replace(config, span=2))
    assert span2.exit_code == local_runner.OK, local_runner.format_summary(span2)
    return TrainedHome(config=config, span1=span1, span2=span2)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory, sample_data_root) -> TrainedHome:
    """Span 1 then span 2, ML Metadata in the embedded SQLite file."""
    return _train(tmp_path_factory, sample_data_root)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory):
    """A real MariaDB server for the session (tests/mariadb.py)."""
    from tests.mariadb import running

    with running(str(tmp_path_factory.mktemp("mariadb"))) as server:
        yield server


@pytest.fixture(scope="session")
def mysql_home(tmp_path_factory, sample_data_root, mariadb) -> TrainedHome:
    """Span 1 then span 2, ML Metadata on the MariaDB server: the store a team shares."""
    return _train(tmp_path_factory, sample_data_root, metadata_path=mariadb.new_database())


def copy_version(src_registry: str, version: str, dst_registry: str, new_name: str = None) -> str:
    """Copy a version like a pusher would: everything first, MANIFEST.json last."""
    from components import registry as reg

    new_name = new_name or version
    src, dst = os.path.join(src_registry, version), os.path.join(dst_registry, new_name)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(reg.MANIFEST))
    with open(os.path.join(src, reg.MANIFEST)) as fh:
        manifest = json.load(fh)
    manifest["version"] = new_name
    with open(os.path.join(dst, reg.MANIFEST), "w") as fh:
        json.dump(manifest, fh)
    return dst


@pytest.fixture(scope="module")
def span1_registry(tmp_path_factory, trained_home) -> str:
    """A registry of its own (per test module: tests push into it) holding the span-1 version as 1000."""
    path = trained_home.span1.pushed_path
    root = str(tmp_path_factory.mktemp("registry"))
    copy_version(os.path.dirname(path), os.path.basename(path.rstrip("/")), root, "1000")
    return root


def tf_example(row: Dict[str, object], columns) -> bytes:
    """A serialized tf.Example of `row`'s values for `columns` (features.Feature), as ExampleGen writes them."""
    import tensorflow as tf

    feats = {}
    for col in columns:
        v = row[col.name]
        if col.dtype == "string":
            feats[col.name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
        elif col.dtype == "int":
            feats[col.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
        else:
            feats[col.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def pytest_collection_modifyitems(items):
    """A test that needs the session's pipeline runs is `slow` however it reaches them (through a
    fixture of a fixture too), so `make test-fast` never starts one."""
    for item in items:
        if {"trained_home", "mysql_home"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
