"""`cd4ml compile` and `cd4ml submit`: the compiled KFP v2 job checked with kfp's own loader, and
the submit path against a local stand-in of the KFP v2 REST API (tests/kfp_fake.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from pipelines.config import REPO_ROOT
from tests.kfp_fake import FakeKfp

IMAGE = "europe-docker.pkg.dev/acme/cd4ml/pipeline:test"
CLUSTER_ENV = {
    "CD4ML_PIPELINE_ROOT": "gs://acme-cd4ml/pipeline-root",
    "CD4ML_DATA_ROOT": "gs://acme-cd4ml/data",
    "CD4ML_REGISTRY": "gs://acme-cd4ml/registry",
    "CD4ML_IMAGE": IMAGE,
    "CD4ML_MAE_BOUND": "77.5",
    "CD4ML_BEAM_ARGS": "--runner=DataflowRunner --project=acme --region=europe-west1",
}
# Every component of create_pipeline, and what must have run before it (transitively).
COMPONENTS = ["CsvExampleGen", "StatisticsGen", "ImportSchemaGen", "SchemaProposal", "ExampleValidator",
              "DataValidationGate", "DetectorTrainer", "TrainingWindow", "Transform", "TunedHyperparameters",
              "Trainer", "ServingBaseline", "Evaluator", "ModelExplainer", "Pusher", "ReleaseBundle"]
MUST_FOLLOW = {
    "StatisticsGen": ["CsvExampleGen"],
    "ExampleValidator": ["StatisticsGen", "ImportSchemaGen"],
    "DataValidationGate": ["ExampleValidator"],
    "TrainingWindow": ["DataValidationGate", "CsvExampleGen"],
    "Transform": ["DataValidationGate", "TrainingWindow"],
    "Trainer": ["Transform", "DataValidationGate", "TunedHyperparameters"],
    "ServingBaseline": ["Trainer"],
    "Evaluator": ["Trainer", "TrainingWindow", "ServingBaseline"],
    "ModelExplainer": ["Trainer", "CsvExampleGen"],
    "Pusher": ["Evaluator", "Trainer", "ModelExplainer"],
    "DetectorTrainer": ["CsvExampleGen", "DataValidationGate"],
    "ReleaseBundle": ["Pusher", "Evaluator", "DetectorTrainer"],
}


def cli(*args, env=None, home):
    environ = dict(os.environ, CD4ML_HOME=str(home), **(env or {}))
    environ.pop("CD4ML_KFP_HOST", None)
    return subprocess.run([sys.executable, "-m", "cd4ml.cli", *args], cwd=REPO_ROOT, env=environ,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    home = tmp_path_factory.mktemp("kfp-home")
    out = home / "build" / "pipeline.json"
    proc = cli("compile", "--span", "2", "-o", str(out), env=CLUSTER_ENV, home=home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compiled" in proc.stdout
    return str(out)


def test_compile_refuses_a_local_pipeline_root(tmp_path):
    env = dict(CLUSTER_ENV, CD4ML_PIPELINE_ROOT=str(tmp_path / "root"))
    proc = cli("compile", "-o", str(tmp_path / "p.json"), env=env, home=tmp_path)
    assert proc.returncode == 2
    assert "pipeline_root" in proc.stderr and "gs://" in proc.stderr
    assert not (tmp_path / "p.json").exists()


def _ancestors(tasks, name, seen=None):
    seen = set() if seen is None else seen
    for dep in tasks[name].get("dependentTasks", []):
        if dep not in seen:
            seen.add(dep)
            _ancestors(tasks, dep, seen)
    return seen


def test_compiled_spec_loads_with_kfp_and_has_every_component_in_order(compiled, tmp_path):
    from google.protobuf import json_format
    from kfp import components
    from kfp.pipeline_spec import pipeline_spec_pb2

    with open(compiled) as fh:
        job = json.load(fh)
    assert set(job) >= {"displayName", "labels", "pipelineSpec", "runtimeConfig"}
    # kfp's proto parses it strictly (an unknown field would fail) ...
    json_format.ParseDict(job["pipelineSpec"], pipeline_spec_pb2.PipelineSpec())
    # ... and kfp's own component loader accepts the IR.
    ir = tmp_path / "pipeline.yaml"
    ir.write_text(yaml.safe_dump(job["pipelineSpec"]))
    loaded = components.load_component_from_file(str(ir))
    spec = loaded.pipeline_spec
    tasks = json_format.MessageToDict(spec.root.dag)["tasks"]
    assert set(COMPONENTS) == set(tasks), sorted(tasks)
    for task, before in MUST_FOLLOW.items():
        assert set(before) <= _ancestors(tasks, task), (task, tasks[task].get("dependentTasks"))
    # Open-source KFP refuses a job with a resolver executor ("resolver executors not
    # implemented"): the job has none, and no importer either; every task is a container.
    executors = job["pipelineSpec"]["deploymentSpec"]["executors"]
    assert {kind for e in executors.values() for kind in e} == {"container"}
    # The only lifecycle hook is TFX's ExampleGen driver, which Vertex AI runs and open-source
    # KFP ignores; the executor resolves the span itself (tests/test_executors.py).
    hooks = {name for name, e in executors.items() if "lifecycle" in e["container"]}
    assert hooks == {"CsvExampleGen_executor"}


def _constant(param):
    """A task's constant input: `constant` in pipeline spec 2.1, `constantValue` in 2.0."""
    value = param["runtimeValue"]
    if "constant" in value:
        return value["constant"]
    return next(iter(value["constantValue"].values()))


def test_compiled_spec_carries_image_roots_beam_args_and_parameters(compiled):
    with open(compiled) as fh:
        job = json.load(fh)
    spec = job["pipelineSpec"]
    executors = spec["deploymentSpec"]["executors"]
    containers = [e["container"] for e in executors.values() if "container" in e]
    assert len(containers) >= len(COMPONENTS)
    assert {c["image"] for c in containers} == {IMAGE}
    gen_args = executors["CsvExampleGen_executor"]["container"]["args"]
    assert "--runner=DataflowRunner" in gen_args and "--project=acme" in gen_args
    assert job["runtimeConfig"]["gcsOutputDirectory"] == CLUSTER_ENV["CD4ML_PIPELINE_ROOT"]
    # Runtime parameters: declared by the pipeline, bound to the components, defaults from config.
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {
        "range_config", "eval_config", "serving_state", "hyperparameters_state"}
    tasks = spec["root"]["dag"]["tasks"]
    for task, name in (("ServingBaseline", "serving_state"), ("TunedHyperparameters", "hyperparameters_state")):
        assert tasks[task]["inputs"]["parameters"][name] == {"componentInputParameter": name}
        assert _constant(tasks[task]["inputs"]["parameters"]["registry"]) == CLUSTER_ENV["CD4ML_REGISTRY"]
    # The schema is the image's (relative to its working directory), not the compiling machine's.
    schema_file = _constant(tasks["ImportSchemaGen"]["inputs"]["parameters"]["schema_file"])
    assert schema_file == "components/schema/schema.pbtxt"
    gen_inputs = tasks["CsvExampleGen"]["inputs"]["parameters"]
    assert gen_inputs["range_config"] == {"componentInputParameter": "range_config"}
    assert _constant(gen_inputs["input_base"]) == CLUSTER_ENV["CD4ML_DATA_ROOT"]
    assert tasks["Evaluator"]["inputs"]["parameters"]["eval_config"] == {"componentInputParameter": "eval_config"}
    defaults = job["runtimeConfig"]["parameterValues"]
    assert json.loads(defaults["range_config"])["staticRange"] == {"startSpanNumber": 2, "endSpanNumber": 2}
    assert "77.5" in defaults["eval_config"]
    push = _constant(tasks["Pusher"]["inputs"]["parameters"]["push_destination"])
    assert CLUSTER_ENV["CD4ML_REGISTRY"] in json.dumps(push)
    # User code is imported from the image, not uploaded as a module file.
    trainer = json.dumps(tasks["Trainer"]["inputs"]["parameters"])
    assert "components.model.run_fn" in trainer
    assert job["labels"]["cd4ml-git-commit"]


def test_a_tuning_job_compiles_with_the_tuner_before_the_trainer(compiled, tmp_path):
    """--tune on a cluster: the Tuner imports tuner_fn from the image and publishes what it found;
    a plain job's Trainer takes the latest published tuning (TunedHyperparameters), as locally."""
    with open(compiled) as fh:
        plain = json.load(fh)["pipelineSpec"]["root"]["dag"]["tasks"]
    assert "Tuner" not in plain and "TunedHyperparameters" in _ancestors(plain, "Trainer")
    out = tmp_path / "tuned.json"
    proc = cli("compile", "--span", "2", "-o", str(out), env=dict(CLUSTER_ENV, CD4ML_TUNE="1"), home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as fh:
        tasks = json.load(fh)["pipelineSpec"]["root"]["dag"]["tasks"]
    assert "Tuner" in _ancestors(tasks, "Trainer") and "TunedHyperparameters" not in tasks
    assert "components.model.tuner_fn" in json.dumps(tasks["Tuner"]["inputs"]["parameters"])
    tuner = json.load(open(out))["pipelineSpec"]["deploymentSpec"]["executors"]["Tuner_executor"]
    assert tuner["container"]["args"][1] == "components.publishing_tuner.Executor"  # it publishes what it found


SERVED = "1765000000"
TUNED = "tuned-001765000000000.json"


@pytest.fixture(scope="module")
def acme_bucket():
    """The job's bucket on the real gcp-storage-emulator: spans 1 and 3 in the data root, a
    version serving in the registry (trained on span 2) and a published tuning beside it."""
    from cd4ml import storage

    with storage.local_emulator():
        client = storage.client()
        bucket = client.create_bucket("acme-cd4ml")
        for name, body in (("data/span-1/rows.csv", "day\n1\n"), ("data/span-3/rows.csv", "day\n3\n"),
                           (f"registry/{SERVED}/saved_model.pb", "x"),
                           (f"registry/{SERVED}/MANIFEST.json", json.dumps({"version": SERVED, "span": 2})),
                           (f"registry/.pipeline/hyperparameters/{TUNED}", json.dumps({"config": {}}))):
            bucket.blob(name).upload_from_string(body)
        yield bucket


def test_submit_uploads_the_spec_and_starts_a_named_run(compiled, tmp_path, monkeypatch, acme_bucket):
    """The run's parameters say what the data root and the registry hold at submission (read with
    the real GCS client from the emulator): the span (the latest unless given), the version
    serving and the newest tuning, so that KFP's cache answers a task only when they are unchanged."""
    from cd4ml import cli as cd4ml_cli

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    monkeypatch.setenv("CD4ML_HOME", str(tmp_path))
    with open(compiled) as fh:
        job = json.load(fh)
    commit = job["labels"]["cd4ml-git-commit"]
    with FakeKfp() as fake:
        code = cd4ml_cli.main(["submit", compiled, "--host", fake.host, "--experiment", "nightly",
                               "--token-file", str(token), "--span", "3", "--mae-bound", "60",
                               "--reason", "drop", "--wait"])
        assert code == 0
        assert [e["display_name"] for e in fake.experiments.values()] == ["nightly"]
        assert len(fake.uploads) == 1 and fake.uploads[0]["kind"] == "pipeline"
        assert yaml.safe_load(fake.uploads[0]["content"]) == job["pipelineSpec"]
        (run,) = fake.runs.values()
        assert run["display_name"].startswith(f"cd4ml-bikeshare-{commit}-drop-")
        assert run["experiment_id"] == next(iter(fake.experiments))
        ref = run["pipeline_version_reference"]
        assert ref["pipeline_version_id"] in [v["pipeline_version_id"] for v in fake.versions[ref["pipeline_id"]]]
        params = run["runtime_config"]["parameters"]
        assert json.loads(params["range_config"])["staticRange"]["startSpanNumber"] == 3
        assert json.loads(params["eval_config"]) != json.loads(job["runtimeConfig"]["parameterValues"]["eval_config"])
        assert "60.0" in params["eval_config"]
        assert params["serving_state"] == SERVED and params["hyperparameters_state"] == TUNED
        assert run["runtime_config"]["pipeline_root"] == CLUSTER_ENV["CD4ML_PIPELINE_ROOT"]
        assert {r["authorization"] for r in fake.requests} == {"Bearer s3cret"}
        assert fake.run_polls[run["run_id"]] >= 2, "--wait polled until a final state"

        # A second submit uploads a new version of the same pipeline.
        assert cd4ml_cli.main(["submit", compiled, "--host", fake.host, "--experiment", "nightly"]) == 0
        assert [u["kind"] for u in fake.uploads] == ["pipeline", "version"]
        assert len(fake.pipelines) == 1 and len(fake.runs) == 2
        latest = [r for r in fake.runs.values() if r is not run][0]["runtime_config"]["parameters"]
        assert json.loads(latest["range_config"])["staticRange"]["startSpanNumber"] == 3  # the newest span

        # A span the data root does not hold is refused before anything is submitted.
        assert cd4ml_cli.main(["submit", compiled, "--host", fake.host, "--span", "9"]) == 2
        assert len(fake.runs) == 2


def test_submit_wait_reports_a_failed_run(compiled, tmp_path, monkeypatch, capsys, acme_bucket):
    from cd4ml import cli as cd4ml_cli

    monkeypatch.setenv("CD4ML_HOME", str(tmp_path))
    with FakeKfp(final_state="FAILED") as fake:
        assert cd4ml_cli.main(["submit", compiled, "--host", fake.host, "--wait"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_submit_without_a_target_says_what_to_set(compiled, tmp_path, monkeypatch, capsys, acme_bucket):
    from cd4ml import cli as cd4ml_cli

    monkeypatch.setenv("CD4ML_HOME", str(tmp_path))
    for var in ("CD4ML_KFP_HOST", "CD4ML_GCP_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    assert cd4ml_cli.main(["submit", compiled]) == 2
    err = capsys.readouterr().err
    assert "CD4ML_KFP_HOST" in err and "CD4ML_GCP_PROJECT" in err
