"""The compiled Kubeflow job, run here task by task as Kubeflow runs it (pipelines/kubeflow_local.py).

`cd4ml compile` in a copy of the repository (deleted before the run: the job must not depend on
the compiling machine's paths), then `cd4ml submit --local`: span 1 under open-source KFP's rules
(no resolver, no lifecycle hook) pushes a version into the mapped gs:// registry, and `cd4ml serve`
on that registry answers with it. Span 2 arrives; a run under Vertex AI's rules (its ExampleGen
hook runs) trains on the window [2, 1] with the served version as its baseline, exactly as the
local runner does on the same data (trained_home: same window, same baseline, same metrics). A
rerun with nothing changed is answered by KFP's cache and pushes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from cd4ml.contract import MAE, MANIFEST, MODEL_NAME
from pipelines.config import REPO_ROOT

BUCKET = "acme-cd4ml"
ENV = {"CD4ML_PIPELINE_ROOT": f"gs://{BUCKET}/root", "CD4ML_DATA_ROOT": f"gs://{BUCKET}/data",
       "CD4ML_REGISTRY": f"gs://{BUCKET}/registry", "CD4ML_IMAGE": "localhost/cd4ml-pipeline:test",
       "CD4ML_EPOCHS": "15"}  # as trained_home, which the local runner trained on the same data


def cd4ml(*args, cwd=REPO_ROOT, home, timeout=900):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CD4ML_")}
    environ.update(ENV, CD4ML_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "cd4ml.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The job compiled in a copy of the repository, which is gone before anything runs."""
    base = tmp_path_factory.mktemp("compile")
    copy = base / "elsewhere" / "cd4ml"
    shutil.copytree(REPO_ROOT, copy, ignore=shutil.ignore_patterns(".venv*", ".git", "__pycache__", "*.egg-info"))
    out = base / "pipeline.json"
    proc = cd4ml("compile", "-o", str(out), cwd=str(copy), home=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.rmtree(base / "elsewhere")
    text = out.read_text()
    assert str(copy) not in text and str(base / "elsewhere") not in text
    return str(out)


def run_here(job, gcs, home, backend):
    proc = cd4ml("submit", job, "--local", "--backend", backend, "--gcs-dir", str(gcs), "--json", home=home)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def serve_and_ask(registry: str, tmp_path, rows):
    """`cd4ml serve` on the registry: the version it answers with, and its predictions for `rows`."""
    from serving.launch import free_port
    from serving.request import v2_inputs

    port, metrics = free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CD4ML_")}
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "cd4ml.cli", "serve", "--registry", registry,
                                   "--port", str(port), "--metrics-port", str(metrics),
                                   "--log-dir", str(tmp_path / "serving-logs")],
                                  cwd=REPO_ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        answer = requests.post(f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer",
                               json={"inputs": v2_inputs(rows)}, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        predictions = next(o["data"] for o in body["outputs"] if o["name"] == "predictions")
        return body["model_version"], predictions
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def score_in_batch_job(gcs, tmp_path, holdout, served, version):
    """The batch-scoring job (`cd4ml compile --batch`), run as KFP runs it: the rows scored with
    the version served, exactly as the server scored them; a bad row rejected with its rule."""
    incoming = gcs / BUCKET / "batch" / "incoming"
    incoming.mkdir(parents=True)
    bad = dict(holdout[0]["features"], hr=25)
    with open(incoming / "rows.jsonl", "w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in [r["features"] for r in holdout] + [bad])
    job = tmp_path / "batch.json"
    proc = cd4ml("compile", "--batch", f"gs://{BUCKET}/batch/incoming/", f"gs://{BUCKET}/batch/scored/{{date}}",
                 "-o", str(job), home=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scores gs://acme-cd4ml/batch/incoming/ -> gs://acme-cd4ml/batch/scored/{date}" in proc.stdout
    ran = run_here(str(job), gcs, tmp_path, "oss")
    assert ran["state"] == "succeeded" and list(ran["tasks"]) == ["batch-score"]
    (day,) = os.listdir(gcs / BUCKET / "batch" / "scored")
    assert day == time.strftime("%Y-%m-%d", time.gmtime())
    scored = {}
    for kind in ("predictions", "rejects"):
        folder = gcs / BUCKET / "batch" / "scored" / day
        scored[kind] = [json.loads(line) for name in sorted(os.listdir(folder)) if name.startswith(kind)
                        for line in open(folder / name)]
    by_line = {int(p["where"].rsplit(":", 1)[1]): p for p in scored["predictions"]}
    assert [by_line[i + 1]["prediction"] for i in range(len(holdout))] == pytest.approx(served, rel=1e-5)
    assert {p["version"] for p in scored["predictions"]} == {version}
    (reject,) = scored["rejects"]
    assert "feature 'hr'" in reject["problem"] and reject["where"].endswith(f"rows.jsonl:{len(holdout) + 1}")
    # The task's output artifact: cd4ml predict's summary, with what the task used.
    with open(gcs / BUCKET / "root" / "cd4ml-batch-scoring" / ran["run_id"] / "batch-score" / "summary") as fh:
        summary = json.load(fh)
    assert (summary["scored"], summary["rejected"], summary["version"]) == (len(holdout), 1, version)
    assert summary["usage"]["cpu_seconds"] > 0 and ran["tasks"]["batch-score"]["usage"]["cpu_seconds"] > 0


def test_the_compiled_job_runs_task_by_task_on_open_source_kfp_then_vertex_rules(
        job, tmp_path, sample_data_root, trained_home):
    gcs = tmp_path / "gcs"
    data, registry = gcs / BUCKET / "data", gcs / BUCKET / "registry"
    shutil.copytree(os.path.join(sample_data_root, "span-1"), data / "span-1")

    first = run_here(job, gcs, tmp_path, "oss")
    assert first["state"] == "succeeded"
    assert {t["state"] for t in first["tasks"].values()} == {"succeeded"} and len(first["tasks"]) == 16
    assert first["window"] == [1] and first["baseline"] == ""
    # What each task used, measured inside the task (the compiled command wraps TFX's entrypoint in
    # pipelines/measured_executor.py, which puts it in the output artifacts' metadata, as a pod
    # would): bytes read and written are known only there, not to os.wait4. Summed for the run.
    tasks = first["tasks"]
    assert first["usage"]["cpu_seconds"] > tasks["Trainer"]["usage"]["cpu_seconds"] > \
        tasks["ImportSchemaGen"]["usage"]["cpu_seconds"] > 0
    assert all(t["usage"]["written_mb"] > 0 and t["usage"]["peak_mb"] > 0 for t in tasks.values())
    assert tasks["Trainer"]["usage"]["read_mb"] > 0
    assert first["parameters"]["serving_state"] == "none"
    assert json.loads(first["parameters"]["range_config"])["staticRange"]["startSpanNumber"] == 1
    # Open-source KFP runs no lifecycle hook: the span was resolved by ExampleGen's executor.
    assert not os.path.exists(first["tasks"]["CsvExampleGen"]["log"] + ".hook")
    v1 = first["pushed_version"]
    with open(registry / v1 / MANIFEST) as fh:
        manifest = json.load(fh)
    assert manifest["span"] == 1 and manifest["baseline"] is None

    with open(registry / v1 / "holdout.jsonl") as fh:
        holdout = [json.loads(line) for line in fh][:5]
    version, predictions = serve_and_ask(str(registry), tmp_path, [r["features"] for r in holdout])
    assert version == v1
    assert predictions == pytest.approx([r["expected"] for r in holdout], rel=1e-3, abs=1e-3)
    score_in_batch_job(gcs, tmp_path, holdout, predictions, v1)

    shutil.copytree(os.path.join(sample_data_root, "span-2"), data / "span-2")
    second = run_here(job, gcs, tmp_path, "vertex")
    assert second["state"] == "succeeded"
    assert os.path.exists(second["tasks"]["CsvExampleGen"]["log"] + ".hook")  # Vertex ran the driver
    assert second["parameters"]["serving_state"] == v1
    # As the local runner did on the same data: the window [2, 1], the served version as the
    # baseline, and so the same model, metric for metric.
    assert second["window"] == trained_home.span2.window == [2, 1]
    assert second["baseline"] == v1
    v2 = second["pushed_version"]
    assert v2 and v2 != v1
    with open(registry / v2 / MANIFEST) as fh:
        manifest = json.load(fh)
    assert manifest["span"] == 2 and manifest["baseline"] == v1
    assert manifest["metrics"][MAE] == pytest.approx(trained_home.span2.metrics["overall"][MAE], abs=1e-4)
    assert sorted(os.listdir(registry / ".pipeline" / "trusted-spans")) == ["span-1.json", "span-2.json"]

    again = run_here(job, gcs, tmp_path, "vertex")
    assert {t["state"] for t in again["tasks"].values()} == {"cached"}
    assert again["pushed_version"] == v2
    assert sorted(v for v in os.listdir(registry) if v.isdigit()) == sorted([v1, v2])


def test_open_source_kfp_refuses_a_job_with_a_resolver(job):
    """What open-source KFP answers when such a run is created (its backend has no resolver executor)."""
    from pipelines import kubeflow_local

    with open(job) as fh:
        compiled = json.load(fh)
    kubeflow_local.check_backend(compiled, "oss")
    compiled["pipelineSpec"]["deploymentSpec"]["executors"]["old_resolver_executor"] = {"resolver": {}}
    with pytest.raises(kubeflow_local.JobRefused, match="resolver executors not implemented"):
        kubeflow_local.check_backend(compiled, "oss")
