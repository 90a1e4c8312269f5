"""Detectors: save/load round trip, the fast outlier scorer, and drift on real spans.

Fitted here on the CSV spans directly (fast, no pipeline run); the pipeline-trained set that ships
inside a pushed version is exercised in test_serving_core.py.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from components import detector_fit, features
from scoring import detector_core
from serving.telemetry import DEFAULT_DRIFT_WINDOW
from tests.conftest import read_span, tf_example


def _rows(span, days):
    return [{f.name: f.parse(r[f.name]) for f in features.FEATURES} for r in read_span(span) if days(int(r["day"]))]


@pytest.fixture(scope="module")
def span1_train():
    return _rows(1, lambda d: d % 2 == 0)


@pytest.fixture(scope="module")
def fitted(span1_train):
    return detector_fit.fit(detector_core.encode(span1_train), seed=7)


def _sample(rows, n, seed=0):
    return random.Random(seed).sample(rows, n)


def test_save_load_round_trip_is_plain_arrays(tmp_path, fitted, span1_train):
    drift, outlier, meta = fitted
    detector_core.save(str(tmp_path), drift, outlier, meta)
    assert {p.name for p in tmp_path.iterdir()} == {"drift.npz", "outlier.npz", "meta.json"}
    for name in ("drift.npz", "outlier.npz"):  # no pickled objects: loading runs no code
        with np.load(tmp_path / name, allow_pickle=False) as data:
            assert all(data[k].dtype != object for k in data.files)
    loaded = detector_core.load(str(tmp_path))
    x = detector_core.encode(_sample(span1_train, 300))
    np.testing.assert_array_equal(loaded.outlier_scores(x), outlier.score(x))
    assert loaded.threshold == outlier.threshold
    np.testing.assert_array_equal(loaded.drift.p_values(x), drift.p_values(x))
    assert loaded.drift.categories == drift.categories
    assert set(loaded.drift.categories) == set(features.categories_per_feature())


def test_load_refuses_other_features_and_an_incomplete_set(tmp_path, fitted):
    drift, outlier, meta = fitted
    detector_core.save(str(tmp_path), drift, outlier, dict(meta, features=["a", "b"]))
    with pytest.raises(ValueError, match="fitted on features"):
        detector_core.load(str(tmp_path))
    detector_core.save(str(tmp_path), drift, outlier, meta)
    (tmp_path / "outlier.npz").unlink()
    with pytest.raises(ValueError, match="outlier.npz"):
        detector_core.load(str(tmp_path))


def test_fast_scorer_equals_scikit_learn(span1_train):
    from sklearn.ensemble import IsolationForest

    x = detector_core.encode(span1_train)
    forest = IsolationForest(n_estimators=detector_core.N_ESTIMATORS, max_samples=256, random_state=3).fit(x)
    scorer = detector_fit.fast_forest(forest)
    odd = np.abs(np.random.default_rng(0).normal(size=(50, x.shape[1]))).astype(np.float32) * 3
    # Rows that sit on the cuts: each float32 next to a cut (the scorer keeps cuts as float32s
    # rounded down, which must decide every float32 value as sklearn's float64 cut does).
    tree = forest.estimators_[0].tree_
    internal = np.flatnonzero(tree.children_left != -1)
    edges = np.repeat(x[:1], 3 * len(internal), axis=0)
    for k, node in enumerate(internal):
        column, cut = tree.feature[node], np.float32(tree.threshold[node])
        edges[3 * k:3 * k + 3, column] = [np.nextafter(cut, np.float32(-np.inf)), cut,
                                          np.nextafter(cut, np.float32(np.inf))]
    for batch in (x[:1], x[:200], odd, edges):
        np.testing.assert_allclose(scorer.score(batch), -forest.decision_function(batch), rtol=0, atol=1e-12)


def test_drift_p_values_are_scipys_tests(fitted, span1_train):
    """Every feature's p-value is scipy's own test of the reference against the window (KS
    asymptotic for numbers, chi-squared for categories), for windows of either span and size."""
    from scipy.stats import chi2_contingency, ks_2samp

    drift, _, _ = fitted
    for span, size, seed in [(2, 200, 5), (1, 200, 6), (2, 50, 7), (1, 500, 8)]:
        window = detector_core.encode(_sample(_rows(span, lambda d: True), size, seed=seed))
        p = drift.p_values(window)
        for i, name in enumerate(features.FEATURE_NAMES):
            if i in drift.categories:
                cats = sorted(set(drift.categories[i]) | set(window[:, i].astype(int).tolist()))
                table = [[np.sum(col == c) for c in cats] for col in (drift.x_ref[:, i], window[:, i])]
                expected = chi2_contingency(table)[1]
            else:
                expected = ks_2samp(drift.x_ref[:, i], window[:, i], method="asymp").pvalue
            assert p[i] == pytest.approx(expected, rel=1e-12, abs=1e-300), (span, size, name)
    assert drift.threshold == pytest.approx(0.05 / len(features.FEATURES))  # Bonferroni over 11 tests


def test_chi_squared_p_value_is_scipys_on_any_table():
    """The drift test's own chi-squared (no generic machinery: a quarter of the time) gives scipy's
    p-value on tables of every width, Yates's correction at two categories included, and refuses
    a category in neither sample as scipy does."""
    from scipy.stats import chi2_contingency

    rng = np.random.default_rng(3)
    for k in [2, 2, 2, 3, 7, 12, 24]:
        for scale in [1, 5, 200]:
            table = rng.integers(0, scale + 1, size=(2, k))
            table[0] += 1  # every category in the reference, as the drift test's tables have it
            table[1, rng.integers(k)] += 1  # and a window of at least one row
            assert detector_core._chi2_p_value(table) == pytest.approx(chi2_contingency(table)[1], rel=1e-12,
                                                                        abs=1e-300), table
    assert detector_core._chi2_p_value(np.array([[3, 4], [3, 4]])) == 1.0  # Yates: identical rows
    with pytest.raises(ValueError, match="expected frequencies has a zero element"):
        detector_core._chi2_p_value(np.array([[3, 0, 4], [5, 0, 1]]))


def test_threshold_flags_about_one_percent_of_training_rows(fitted, span1_train):
    _, outlier, _ = fitted
    flagged = outlier.is_outlier(outlier.score(detector_core.encode(span1_train))).mean()
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


def test_detection_figures_at_the_serving_window(fitted):
    """The figures the window size was chosen by (docs/stack.md): fitted on even days of span 1,
    20 random windows of its odd days raise no alarm, 20 windows of span 2 all do."""
    drift, outlier, meta = fitted
    detectors = detector_core.Detectors(drift, outlier, meta)
    held_out, summer = _rows(1, lambda d: d % 2 == 1), _rows(2, lambda d: True)

    def alarms(rows):
        return sum(detectors.drift_test(detector_core.encode(_sample(rows, DEFAULT_DRIFT_WINDOW, seed)))["is_drift"]
                   for seed in range(20))

    false_alarms, detections = alarms(held_out), alarms(summer)
    assert (false_alarms, detections) == (0, 20)


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


def test_a_legacy_detector_set_is_told_apart_from_a_broken_one(tmp_path):
    (tmp_path / "meta.json").write_text('{"features": %s}' % __import__("json").dumps(features.FEATURE_NAMES))
    (tmp_path / "drift").mkdir()
    (tmp_path / "outlier").mkdir()
    with pytest.raises(detector_core.LegacyDetectors, match="alibi-detect format"):
        detector_core.load(str(tmp_path))


@pytest.mark.parametrize("count_batch", [8192, 7])  # the split counted in one batch, and in many
def test_the_fit_reads_an_even_sample_of_a_large_split(tmp_path, monkeypatch, count_batch):
    import tensorflow as tf

    def example(i):
        return tf_example(dict(_rows(1, lambda d: True)[0], hr=i % 24, temp=i / 1000), features.FEATURES)

    split = tmp_path / "Split-train"
    split.mkdir()
    with tf.io.TFRecordWriter(str(split / "data.gz"), options="GZIP") as writer:
        for i in range(100):
            writer.write(example(i))
    monkeypatch.setattr(detector_fit, "COUNT_BATCH", count_batch)
    assert len(detector_fit.read_examples(str(split), sample=None)) == 100
    sampled = detector_fit.read_examples(str(split), sample=30)
    assert len(sampled) == 25  # every 4th record: an even spread over the split, not its head
    assert [round(r["temp"] * 1000) for r in sampled[:3]] == [0, 4, 8] and round(sampled[-1]["temp"] * 1000) == 96
