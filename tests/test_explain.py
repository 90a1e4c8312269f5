"""Explanations: exact Shapley attributions over the raw features (scoring/explain.py), the
global importances and explainability check every pushed version carries, `cd4ml explain`, and
an old version without an explainer answering 409 while it keeps serving predictions.

The servers' explain endpoints over HTTP are tested beside their other endpoints
(test_serving_v2.py, test_serving_http.py); the check stopping a push and `--tune` in
test_tuning_and_gate.py.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import requests

from components import features
from scoring import explain
from pipelines.config import PipelineConfig
from tests.conftest import copy_version

NUMERIC = [f for f in features.FEATURES if not f.is_categorical]


# --- the method ----------------------------------------------------------------------------------

def test_a_linear_model_gets_its_closed_form():
    """Interventional Shapley values of f(x) = a.x + c are a_i (x_i - mean of the background)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=len(features.FEATURES))
    background = rng.uniform(size=(9, len(features.FEATURES)))
    rows = rng.uniform(size=(3, len(features.FEATURES)))
    got = explain.Explainer(lambda x: x @ a + 7.0, background).explain(rows)
    expected = a * (rows - background.mean(axis=0))
    attributions = np.array([[row[f.name] for f in features.FEATURES] for row in got.attributions])
    np.testing.assert_allclose(attributions, expected, rtol=1e-4, atol=1e-4)
    assert got.base_value == pytest.approx(float((background @ a).mean() + 7.0), rel=1e-5)


def test_a_nonlinear_model_matches_the_permutation_definition():
    """Shapley's own definition, averaged over all 4! orders in which features join."""
    spec = NUMERIC

    def model(x):
        x = np.asarray(x, np.float64)
        return x[:, 0] * x[:, 1] + np.maximum(x[:, 2], 0.5) - x[:, 3] ** 2

    rng = np.random.default_rng(1)
    background = rng.uniform(size=(5, 4))
    row = rng.uniform(size=4)

    def value(coalition):
        mixed = background.copy()
        mixed[:, list(coalition)] = row[list(coalition)]
        return model(mixed).mean()

    expected = np.zeros(4)
    orders = list(itertools.permutations(range(4)))
    for order in orders:
        joined = []
        for i in order:
            before = value(joined)
            joined.append(i)
            expected[i] += (value(joined) - before) / len(orders)
    got = explain.Explainer(model, background, spec).explain(row[None, :])
    np.testing.assert_allclose([got.attributions[0][f.name] for f in spec], expected, rtol=1e-4, atol=1e-5)
    assert got.base_value + sum(got.attributions[0].values()) == pytest.approx(got.predictions[0], rel=1e-5)
    assert math.factorial(4) == len(orders)


def test_importances_are_shares_that_sum_to_one():
    got = explain.importances(explain.Explanation(0.0, [1.0, 2.0], [{"a": 2.0, "b": -1.0}, {"a": -2.0, "b": 3.0}]))
    assert got["mean_abs"] == {"a": 2.0, "b": 2.0}
    assert got["share"] == {"a": 0.5, "b": 0.5}


# --- the explainability rules --------------------------------------------------------------------

def test_rules_name_the_feature_and_the_rule():
    share = {"hr": 0.7, "temp": 0.3, "hum": 0.0}
    assert explain.check({"share": share}, PipelineConfig.from_env(environ={}).explainability_rules) == []
    problems = explain.check({"share": share}, explain.ExplainabilityRules(forbidden=("hr", "casual"),
                                                                             max_share=0.6))
    assert len(problems) == 2
    assert "'hr'" in problems[0] and "'forbidden'" in problems[0] and "70.0%" in problems[0]
    assert "'hr'" in problems[1] and "'max_share'" in problems[1] and "60%" in problems[1]
    # A forbidden column the model never takes (the default leak columns) carries nothing.
    assert explain.check({"share": share}, explain.ExplainabilityRules(("casual", "registered"), 0.8)) == []


def test_bad_rules_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match="forbidden.*'colour'"):
        explain.ExplainabilityRules(forbidden=("colour",), max_share=0.5)
    with pytest.raises(ValueError, match="max_share"):
        explain.ExplainabilityRules(forbidden=(), max_share=1.5)
    with pytest.raises(ValueError, match="CD4ML_EXPLAIN_FORBIDDEN.*'colour'"):
        PipelineConfig.from_env(environ={"CD4ML_EXPLAIN_FORBIDDEN": "hr,colour"})
    rules = PipelineConfig.from_env(environ={"CD4ML_EXPLAIN_FORBIDDEN": " hr , casual",
                                             "CD4ML_EXPLAIN_MAX_SHARE": "0.5"}).explainability_rules
    assert rules == explain.ExplainabilityRules(forbidden=("hr", "casual"), max_share=0.5)
    assert explain.ExplainabilityRules.from_json(rules.to_json()) == rules


def test_a_background_must_match_the_version_features():
    text = json.dumps({"features": features.FEATURE_NAMES, "rows": [[0] * len(features.FEATURES)]})
    assert explain.background_from_json(text, features.FEATURES).shape == (1, len(features.FEATURES))
    with pytest.raises(ValueError, match="features are"):
        explain.background_from_json(json.dumps({"features": ["hr"], "rows": [[1]]}), features.FEATURES)
    bad = [[0] * len(features.FEATURES)]
    bad[0][features.FEATURE_NAMES.index("weathersit")] = 9  # no such category
    with pytest.raises(ValueError, match="'weathersit'"):
        explain.background_from_json(json.dumps({"features": features.FEATURE_NAMES, "rows": bad}),
                                     features.FEATURES)


# --- real pushed versions ------------------------------------------------------------------------

pytest_slow = pytest.mark.slow


def _version_dir(result) -> str:
    return result.pushed_path.rstrip("/")


@pytest_slow
def test_every_pushed_version_carries_importances_compared_with_the_baseline(trained_home):
    first, second = (_version_dir(r) for r in (trained_home.span1, trained_home.span2))
    for path in (first, second):
        with open(os.path.join(path, "MANIFEST.json")) as fh:
            assert "explainer/" in json.load(fh)["files"]
    with open(os.path.join(second, "explainer", explain.IMPORTANCES_FILE)) as fh:
        imp = json.load(fh)
    assert sorted(imp["share"]) == sorted(features.FEATURE_NAMES)
    assert sum(imp["share"].values()) == pytest.approx(1.0)
    assert imp["passed"] is True and imp["violations"] == []
    assert imp["rules"] == {"forbidden": ["casual", "registered"], "max_share": 0.85}
    assert sorted(imp["baseline"]["share"]) == sorted(features.FEATURE_NAMES)  # span 1's model, same rows
    with open(os.path.join(first, "explainer", explain.IMPORTANCES_FILE)) as fh:
        assert json.load(fh)["baseline"] is None  # the first model has nothing to compare with
    with open(os.path.join(trained_home.span2.run_dir, "report.html")) as fh:
        page = fh.read()
    assert "How the model decides" in page and "What changed against the baseline model" in page
    assert "alt='global importances'" in page and "Explainability check" in page


@pytest.fixture
def explain_cli(capsys, monkeypatch):
    """`cd4ml explain ARGS` in this process (TensorFlow is loaded once, not per call): its exit
    code, stdout and stderr."""
    from cd4ml import cli

    def run(*args, stdin=""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main(["explain", *args])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["cd4ml", "explain", *args], code, out.out, out.err)

    return run


def _holdout(path):
    with open(os.path.join(path, "holdout.jsonl")) as fh:
        return [json.loads(line) for line in fh][:4]


@pytest_slow
def test_cli_explains_every_feature_additively(trained_home, tmp_path, explain_cli):
    version = trained_home.span2.pushed_version
    holdout = _holdout(_version_dir(trained_home.span2))
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([h["features"] for h in holdout]))
    out = explain_cli("--home", trained_home.config.home, "--json", str(rows))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["version"] == version and len(doc["rows"]) == len(holdout)
    for row, h in zip(doc["rows"], holdout):
        assert sorted(row["attributions"]) == sorted(features.FEATURE_NAMES)
        assert row["prediction"] == pytest.approx(h["expected"], rel=1e-3)
        assert doc["base_value"] + sum(row["attributions"].values()) == pytest.approx(row["prediction"], rel=0.01)

    table = explain_cli("--home", trained_home.config.home, "--version", trained_home.span1.pushed_version, "-",
                        stdin=rows.read_text())
    assert table.returncode == 0, table.stderr
    assert f"version {trained_home.span1.pushed_version}: base value" in table.stdout
    assert table.stdout.count("row ") == len(holdout) and "weathersit" in table.stdout

    rows.write_text(json.dumps([dict(holdout[0]["features"], hr=25)]))
    bad = explain_cli("--home", trained_home.config.home, str(rows))
    assert bad.returncode == 2 and "'hr'" in bad.stderr and "unknown category 25" in bad.stderr


@pytest.fixture(scope="module")
def old_and_new_registry(tmp_path_factory, trained_home):
    """Version 1000: the span-1 version as pushed before versions carried an explainer."""
    root = str(tmp_path_factory.mktemp("old-registry"))
    path = copy_version(os.path.dirname(_version_dir(trained_home.span1)), trained_home.span1.pushed_version,
                        root, "1000")
    shutil.rmtree(os.path.join(path, "explainer"))
    with open(os.path.join(path, "MANIFEST.json")) as fh:
        manifest = json.load(fh)
    manifest["files"].remove("explainer/")
    with open(os.path.join(path, "MANIFEST.json"), "w") as fh:
        json.dump(manifest, fh)
    return root


@pytest_slow
def test_a_version_without_explainer_answers_409_and_keeps_serving(old_and_new_registry, trained_home, tmp_path,
                                                                    explain_cli):
    from serving.launch import running
    from tests.concurrency import wait_until
    from tests.test_serving_core import GOOD

    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([GOOD]))
    out = explain_cli("--registry", old_and_new_registry, "--version", "1000", str(rows))
    assert out.returncode == 2 and "1000" in out.stderr and "no explainer" in out.stderr

    body = {"jsonData": [GOOD]}
    with running(old_and_new_registry, str(tmp_path / "logs"), poll_seconds=0.5) as server:
        refused = requests.post(server.explain_url, json=body, timeout=60)
        assert refused.status_code == 409, refused.text
        assert "version 1000" in refused.json()["status"]["info"]
        assert requests.post(server.predict_url, json=body, timeout=60).status_code == 200
        # A newly pushed version (with its explainer) hot-loads, and the same server explains.
        copy_version(os.path.dirname(_version_dir(trained_home.span2)), trained_home.span2.pushed_version,
                     old_and_new_registry, "2000")
        assert wait_until(lambda: requests.post(server.explain_url, json=body, timeout=60).status_code == 200,
                          threading.Event(), 60, 0.5)
        answer = requests.post(server.explain_url, json=body, timeout=60).json()
        assert answer["meta"]["tags"]["model_version"] == "2000"
        row = answer["explanation"]["rows"][0]
        assert answer["explanation"]["base_value"] + sum(row["attributions"].values()) == \
            pytest.approx(row["prediction"], rel=0.01)
