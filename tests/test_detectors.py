"""Detectors: save/load round trip, the fast outlier scorer, and drift on real spans.

Fitted here on the CSV spans directly (fast, no pipeline run); the pipeline-trained set that ships
inside a pushed version is exercised in test_serving_core.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from components import detector_core, features
from serving.core import DEFAULT_DRIFT_WINDOW
from tests.conftest import read_span


def _rows(span, days):
    out = []
    for r in read_span(span):
        if days(int(r["day"])):
            out.append({f.name: (r[f.name] if f.dtype == "string" else
                                 int(r[f.name]) if f.dtype == "int" else float(r[f.name]))
                        for f in features.FEATURES})
    return out


@pytest.fixture(scope="module")
def span1_train():
    return _rows(1, lambda d: d % 2 == 0)


@pytest.fixture(scope="module")
def fitted(span1_train):
    return detector_core.fit(detector_core.encode(span1_train), seed=7)


def _sample(rows, n, seed=0):
    return random.Random(seed).sample(rows, n)


def test_save_load_round_trip(tmp_path, fitted, span1_train):
    drift, outlier, meta = fitted
    detector_core.save(str(tmp_path), drift, outlier, meta)
    assert {p.name for p in tmp_path.iterdir()} >= {"drift", "outlier", "meta.json"}
    loaded = detector_core.load(str(tmp_path))
    x = detector_core.encode(_sample(span1_train, 300))
    np.testing.assert_allclose(loaded.outlier_scores(x), outlier.score(x), rtol=0, atol=1e-12)
    assert loaded.threshold == pytest.approx(outlier.threshold)
    before = drift.predict(x, drift_type="feature")["data"]["p_val"]
    after = loaded.drift.predict(x, drift_type="feature")["data"]["p_val"]
    np.testing.assert_allclose(after, before)
    assert set(loaded.drift.x_ref_categories) == set(features.categories_per_feature())
    assert loaded.drift.x_ref_categories == drift.x_ref_categories


def test_load_refuses_other_features(tmp_path, fitted):
    drift, outlier, meta = fitted
    detector_core.save(str(tmp_path), drift, outlier, dict(meta, features=["a", "b"]))
    with pytest.raises(ValueError, match="fitted on features"):
        detector_core.load(str(tmp_path))


def test_fast_scorer_equals_alibi_iforest(fitted, span1_train):
    _, outlier, _ = fitted
    x = detector_core.encode(_sample(span1_train, 200))
    odd = np.abs(np.random.default_rng(0).normal(size=(50, x.shape[1]))).astype(np.float32) * 3
    for batch in (x[:1], x, odd):
        np.testing.assert_allclose(detector_core.FastIForest(outlier.isolationforest, outlier.threshold)
                                   .score(batch), outlier.score(batch), rtol=0, atol=1e-12)


def test_threshold_flags_about_one_percent_of_training_rows(fitted, span1_train):
    _, outlier, _ = fitted
    scorer = detector_core.FastIForest(outlier.isolationforest, outlier.threshold)
    flagged = scorer.is_outlier(scorer.score(detector_core.encode(span1_train))).mean()
    assert 0.002 <= flagged <= 0.03


def test_drift_fires_on_span2_and_stays_quiet_on_held_out_span1(tmp_path, fitted):
    drift, outlier, meta = fitted
    detector_core.save(str(tmp_path), drift, outlier, meta)
    loaded = detector_core.load(str(tmp_path))
    held_out = _sample(_rows(1, lambda d: d % 2 == 1), DEFAULT_DRIFT_WINDOW, seed=1)
    quiet = loaded.drift_test(detector_core.encode(held_out))
    assert not quiet["is_drift"], quiet
    moved = loaded.drift_test(detector_core.encode(_sample(_rows(2, lambda d: True), DEFAULT_DRIFT_WINDOW, seed=2)))
    assert moved["is_drift"], moved
    assert "mnth" in moved["drifted"] and "temp" in moved["drifted"]
    assert set(moved["p_vals"]) == set(features.FEATURE_NAMES)


def test_component_checks_the_schema_domains_against_the_feature_module(tmp_path):
    from components import schema as curated
    from components.detectors import check_schema_domains

    with open(curated.SCHEMA_PATH) as fh:
        text = fh.read()
    (tmp_path / "schema.pbtxt").write_text(text)
    check_schema_domains(str(tmp_path))  # the curated schema agrees with features.py
    (tmp_path / "schema.pbtxt").write_text(text.replace('value: "heavy rain/snow"\n', "", 1))
    with pytest.raises(ValueError, match="weathersit"):
        check_schema_domains(str(tmp_path))
