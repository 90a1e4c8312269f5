"""Lineage queries and the `cd4ml lineage` / `cd4ml runs` commands, against the real pipeline's
ML Metadata (the session's `home`: span 1, then span 2)."""

from __future__ import annotations

import json
import os

import pytest

from cd4ml import cli, mlmd


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_commands_on_an_empty_home(tmp_path, capsys):
    home = str(tmp_path / "empty")
    code, out, err = run_cli(capsys, "lineage", "--home", home)
    assert code == 1 and "nothing has run" in err
    code, out, err = run_cli(capsys, "runs", "--home", home, "--json")
    assert code == 0 and json.loads(out) == []


def test_runs_lists_a_run_that_never_reached_the_pipeline(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "20260101T000000.000000"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(
        {"run_id": run_dir.name, "status": "validation failed", "span": 7, "seconds": 0.1,
         "error": "span-7: no csv files"}))
    code, out, _ = run_cli(capsys, "runs", "--home", str(tmp_path), "--json")
    runs = json.loads(out)
    assert code == 0 and [r["result"] for r in runs] == ["validation failed"]
    assert runs[0]["status"] == "not started" and runs[0]["span"] == 7


def test_a_span_that_does_not_exist_is_named_and_leaves_no_run(tmp_path, capsys):
    """`cd4ml run --span 9` on a data root with spans 1 and 2: said plainly, exit 1, and no run
    folder or report for a run that never started (it was 'feature -' in a report before)."""
    from tests.conftest import DATA_ROOT

    home = tmp_path / "home"
    code, out, _ = run_cli(capsys, "run", "--home", str(home), "--data-root", DATA_ROOT, "--span", "9")
    assert code == 1
    assert "not started: span 9 does not exist" in out and "spans there: 1, 2" in out
    assert "feature" not in out and "report" not in out
    assert not (home / "runs").exists() or not os.listdir(home / "runs")
    code, out, _ = run_cli(capsys, "runs", "--home", str(home), "--json")
    assert json.loads(out) == []


@pytest.fixture(scope="module", params=["sqlite", "mysql"])
def home(request):
    """The same two runs with ML Metadata in SQLite and on a MariaDB server: every query and
    command must answer the same on both."""
    return request.getfixturevalue("trained_home" if request.param == "sqlite" else "mysql_home")


@pytest.fixture(scope="module")
def store(home):
    return mlmd.open_store(home.config.metadata_path)


@pytest.mark.slow
def test_runs_have_component_states_and_timing(home, store):
    runs = {r.run_id: r for r in mlmd.list_runs(store)}
    first, second = runs[home.span1.run_id], runs[home.span2.run_id]
    assert first.status == second.status == "complete"
    assert first.span == 1 and second.span == 2
    assert {"CsvExampleGen", "Transform", "Trainer", "Evaluator", "Pusher"} <= set(first.ran)
    assert not first.cached and not first.failed
    # What a run finds in the data root and the registry, our components find: they are steps too.
    assert {"TrainingWindow", "TunedHyperparameters", "ServingBaseline"} <= set(first.ran)
    trainer = next(s for s in first.steps if s.node == "Trainer")
    assert trainer.state == "ran" and trainer.execution.last_update_time_since_epoch >= \
        trainer.execution.create_time_since_epoch
    # Span 2 is new data: it trains again; the unchanged curated schema comes from the cache.
    assert {"CsvExampleGen", "Trainer"} <= set(second.ran)
    assert "ImportSchemaGen" in second.cached
    assert second.pushed_version == home.span2.pushed_version and second.new_push
    assert first.blessed is True and first.pushed_version == home.span1.pushed_version


@pytest.mark.slow
def test_latest_blessed_and_pushed(home, store):
    pushed = mlmd.latest_pushed_model(store)
    assert pushed["version"] == home.span2.pushed_version
    assert pushed["run_id"] == home.span2.run_id
    assert os.path.isdir(pushed["destination"])
    blessed = mlmd.latest_blessed_model(store)
    assert blessed["model_id"] == pushed["model_id"]
    assert [p["version"] for p in mlmd.pushed_models(store)] == [
        home.span1.pushed_version, home.span2.pushed_version]


def _producer(doc, artifact):
    return doc["executions"][artifact["produced_by"]]


def _input(doc, execution, key):
    ids = execution["inputs"][key]
    assert len(ids) == 1, (execution["node"], key, ids)
    return doc["artifacts"][ids[0]]


@pytest.mark.slow
@pytest.mark.parametrize("span", [1, 2])
def test_provenance_walks_from_pushed_model_to_span_files(home, store, span):
    result = home.span1 if span == 1 else home.span2
    doc = mlmd.provenance(store, result.pushed_version)
    assert doc["version"] == result.pushed_version
    pushed = next(a for a in doc["artifacts"].values() if a["type"] == "PushedModel")
    assert pushed["properties"]["pushed_version"] == result.pushed_version
    pusher = _producer(doc, pushed)
    assert pusher["node"] == "Pusher" and pusher["run_id"] == result.run_id
    model = _input(doc, pusher, "model")
    trainer = _producer(doc, model)
    assert model["type"] == "Model" and trainer["node"] == "Trainer"
    # The Trainer reads the raw training window and the graph Transform analyzed on that window.
    graph = _input(doc, trainer, "transform_graph")
    transform = _producer(doc, graph)
    assert graph["type"] == "TransformGraph" and transform["node"] == "Transform"
    # The training window: span 1 alone, then span 2 with span 1 before it (CD4ML_TRAIN_WINDOW_SPANS=2),
    # one artifact that TrainingWindow assembled from each span's ingested examples.
    assert transform["inputs"]["examples"] == trainer["inputs"]["examples"]
    assembled = _producer(doc, _input(doc, trainer, "examples"))
    assert assembled["node"] == "TrainingWindow"
    window = [doc["artifacts"][i] for i in assembled["inputs"]["examples"]]
    assert sorted(a["properties"]["span"] for a in window) == list(range(1, span + 1))
    for examples in window:
        assert _producer(doc, examples)["node"] == "CsvExampleGen"
    assert _input(doc, pusher, "model_blessing")["properties"]["blessed"] == 1

    summary = doc["summary"]
    assert summary["span"] == span
    assert [w["span"] for w in summary["window"]] == list(range(span, 0, -1))
    assert [w["run_id"] for w in summary["window"]] == [r.run_id for r in (home.span2, home.span1)[2 - span:]]
    expected_file = os.path.join(home.config.data_root, f"span-{span}", "bikeshare.csv")
    assert [f["name"] for f in summary["span_files"]] == [expected_file]
    assert not summary["span_files"][0].get("changed_since_run")
    for role in ("schema", "statistics", "transform_graph", "evaluation", "examples"):
        assert summary[role] and all(os.path.exists(uri) for uri in summary[role]), role
    assert summary["anomalies"] and summary["anomalies"][0]["clean_splits"]
    assert summary["blessed"] is True and summary["model"] == model["uri"]
    assert summary["trainer"]["custom_config"]["seed"] == home.config.seed
    assert summary["pusher"]["destination"] == result.pushed_path
    assert summary["metrics"]["mean_absolute_error"] > 0
    if any(e["node"] == "DetectorTrainer" for e in doc["executions"].values()):
        assert summary["detectors"] and all(os.path.exists(uri) for uri in summary["detectors"])
    if span == 2:  # compared with span 1's version, serving then: a leaf, not an ancestor
        assert summary["baseline_version"] == home.span1.pushed_version and len(summary["baseline_model"]) == 1
        # Everything was made by this run but what did not change: the curated schema's import,
        # the hyperparameters (nothing tuned) and span 1's ingestion.
        assert all(e["run_id"] == result.run_id or e["node"] in ("ImportSchemaGen", "TunedHyperparameters")
                   or (e["node"] == "CsvExampleGen" and e["run_id"] == home.span1.run_id)
                   for e in doc["executions"].values())
    else:
        assert summary["baseline_model"] == [] and summary["baseline_version"] is None


@pytest.mark.slow
def test_models_from_span(home, store):
    one, two = mlmd.models_from_span(store, 1), mlmd.models_from_span(store, 2)
    # Span 1 is in both models' training windows; span 2 only in the second's.
    assert [m["versions"] for m in one] == [[home.span1.pushed_version], [home.span2.pushed_version]]
    assert [m["versions"] for m in two] == [[home.span2.pushed_version]]
    assert one[0]["run_id"] == home.span1.run_id and one[0]["blessed"] is True
    assert mlmd.models_from_span(store, 9) == []


@pytest.mark.slow
def test_lineage_command(home, capsys, monkeypatch):
    monkeypatch.setenv("CD4ML_METADATA_PATH", home.config.metadata_path)  # SQLite or MySQL
    home_dir = home.config.home
    code, out, _ = run_cli(capsys, "lineage", "--home", home_dir)
    assert code == 0
    assert f"model version {home.span2.pushed_version}" in out
    for node in ("Pusher", "Trainer", "Transform", "CsvExampleGen", "Evaluator", "ExampleValidator"):
        assert f"<- {node} (execution" in out, node
    assert os.path.join("span-2", "bikeshare.csv") in out and "baseline_model:" in out
    assert f"baseline version {home.span1.pushed_version}" in out
    cost = next(line for line in out.splitlines() if line.strip().startswith("cost "))
    assert "CPU s" in cost and "in 2 run(s)" in cost  # span 1's ingestion ran in the first run

    code, out, _ = run_cli(capsys, "lineage", "--home", home_dir, home.span1.pushed_version, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["summary"]["span"] == 1
    assert {e["node"] for e in doc["executions"]} >= {"Pusher", "Trainer", "Transform", "CsvExampleGen"}

    code, out, _ = run_cli(capsys, "lineage", "--home", home_dir, "--span", "1", "--json")
    assert json.loads(out)["models"][0]["versions"] == [home.span1.pushed_version]
    code, out, _ = run_cli(capsys, "lineage", "--home", home_dir, "--blessed")
    assert home.span2.pushed_version in out
    code, _, err = run_cli(capsys, "lineage", "--home", home_dir, "no-such-version")
    assert code == 1 and "never pushed" in err


@pytest.mark.slow
def test_runs_command(home, capsys, monkeypatch):
    monkeypatch.setenv("CD4ML_METADATA_PATH", home.config.metadata_path)  # SQLite or MySQL
    code, out, _ = run_cli(capsys, "runs", "--home", home.config.home, "--json")
    runs = json.loads(out)[:2]  # other test files may add runs to the shared home later
    assert code == 0
    assert [r["run_id"] for r in runs] == [home.span1.run_id, home.span2.run_id]
    assert [r["result"] for r in runs] == ["ok", "ok"]
    assert "ImportSchemaGen" in runs[1]["cached"] and runs[1]["pushed_version"]
    # What each component used, measured by the runner and kept in ML Metadata: plausible figures.
    for run in runs:
        steps = {s["node"]: s["usage"] for s in run["steps"]}
        assert run["usage"]["cpu_seconds"] > 0 and run["usage"]["peak_mb"] > 100
        assert run["usage"]["cpu_seconds"] >= steps["Trainer"]["cpu_seconds"] > 0
        assert run["usage"]["peak_mb"] == max(u["peak_mb"] for u in steps.values() if u)
    first = {s["node"]: s["usage"] for s in runs[0]["steps"]}
    assert first["Trainer"]["cpu_seconds"] > first["ImportSchemaGen"]["cpu_seconds"]
    assert first["CsvExampleGen"]["read_mb"] > 0.1 and first["Trainer"]["written_mb"] > 0.01
    code, out, _ = run_cli(capsys, "runs", "--home", home.config.home, "--steps")
    assert "Trainer" in out and "cached" in out and home.span2.pushed_version in out
    assert "cpu s" in out.splitlines()[0] and "peak MB" in out.splitlines()[0]
    trainer_line = next(line for line in out.splitlines() if line.strip().startswith("Trainer"))
    assert float(trainer_line.split()[-2]) == round(first["Trainer"]["cpu_seconds"], 1)


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.slow)])
def new_store(request, tmp_path):
    """A factory of empty ML Metadata stores (their CD4ML_METADATA_PATH): SQLite files, or
    databases on the session's MariaDB server."""
    if request.param == "sqlite":
        return lambda name: str(tmp_path / f"{name}.sqlite")
    server = request.getfixturevalue("mariadb")
    return lambda name: server.new_database(name)


def test_bucket_objects_come_from_the_trigger_ledger(new_store):
    from cd4ml.triggers import drop as triggers

    ledger = triggers.MlmdLedger(new_store("m"), "lake", "incoming/")
    claim = ledger.claim("lake", "incoming/2011-h2.csv", 1717171717)
    ledger.update(claim, done=True, span=3, run_id="r-3", outcome="trained")
    other = ledger.claim("lake", "incoming/other.csv", 5)
    ledger.update(other, done=True, span=4, run_id="r-4", outcome="trained")
    objects = mlmd.bucket_objects(ledger.store, 3, "r-3")
    assert objects == [{"name": "gs://lake/incoming/2011-h2.csv", "generation": 1717171717,
                        "drop_run_id": "r-3", "outcome": "trained", "source": "bucket drop"}]
    assert mlmd.bucket_objects(mlmd.open_store(new_store("empty")), 3) == []


def test_operator_decisions_on_a_version(new_store):
    from cd4ml import promotion

    path = new_store("m")
    promotion.record(path, "/reg", promotion.Decision("promote", "200", "100", "hotfix", "2026-01-01T00:00:00"))
    promotion.record(path, "/reg", promotion.Decision("rollback", "100", "200", "bad canary", "2026-01-02T00:00:00"))
    store = mlmd.open_store(path)
    assert [(d["action"], d["reason"]) for d in mlmd.decisions_for(store, "200")] == [
        ("promote", "hotfix"), ("rollback", "bad canary")]
    assert mlmd.decisions_for(store, "999") == []
    assert mlmd.decisions_for(mlmd.open_store(new_store("empty")), "1") == []


@pytest.mark.slow
def test_prices_and_resource_requests_come_from_the_measured_runs(trained_home, tmp_path, capsys, monkeypatch):
    """A price per vCPU-hour and GB-hour turns what the runs used into a cost, and `cd4ml compile
    --requests-from-runs` sizes each Kubeflow task from its component's last measured run."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    from pipelines import usage

    home = trained_home.config.home
    monkeypatch.setenv("CD4ML_PRICE_VCPU_HOUR", "0.04")
    monkeypatch.setenv("CD4ML_PRICE_GB_HOUR", "0.005")
    code, out, _ = run_cli(capsys, "runs", "--home", home, "--json")
    run = next(r for r in json.loads(out) if r["run_id"] == trained_home.span2.run_id)
    used = [s["usage"] for s in run["steps"] if s["usage"]]
    assert run["cost"] == pytest.approx(usage.cost(used, 0.04, 0.005), abs=1e-6) and run["cost"] > 0
    assert run["cost"] == pytest.approx(sum(u["cpu_seconds"] for u in used) / 3600 * 0.04
                                        + sum(u["peak_mb"] / 1024 * u["wall_seconds"] / 3600 for u in used) * 0.005,
                                        abs=1e-6)
    code, out, _ = run_cli(capsys, "runs", "--home", home)
    assert "cost 0.0" in out

    for name, value in {"CD4ML_PIPELINE_ROOT": "gs://acme/root", "CD4ML_DATA_ROOT": "gs://acme/data",
                        "CD4ML_REGISTRY": "gs://acme/registry", "CD4ML_IMAGE": "localhost/p:1"}.items():
        monkeypatch.setenv(name, value)
    out_path = tmp_path / "job.json"
    code, out, err = run_cli(capsys, "compile", "--home", home, "--requests-from-runs", "-o", str(out_path))
    assert code == 0, err
    assert "resource requests from the last measured runs" in out and "would cost about" in out
    job = json.loads(out_path.read_text())
    json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())  # still a valid spec
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    latest = mlmd.latest_usage(mlmd.open_store(trained_home.config.metadata_path))
    trainer = executors["Trainer_executor"]["container"]["resources"]
    assert trainer == usage.requests(latest["Trainer"])
    assert trainer["memoryRequest"] >= latest["Trainer"]["peak_mb"] / 1024 and trainer["cpuRequest"] >= 0.25
    code, _, err = run_cli(capsys, "compile", "--home", str(tmp_path / "empty"), "--requests-from-runs",
                           "-o", str(tmp_path / "none.json"))
    assert code == 2 and "no measured run" in err
