"""The serving core, in-process (pipeline environment): validation, scoring, detectors, drift,
logs, feedback, model-as-data reloads and refusal of broken versions.

Request validation needs no model; everything else serves the span-1 version that the real
pipeline pushed in `trained_home` (copied, so tests can add and break versions freely).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time

import numpy as np
import pytest

from components import features
from components import registry as reg
from serving.request import RequestError, check_and_encode, parse, read_seldon
from tests.concurrency import clients, wait_until
from tests.conftest import copy_version, read_span

GOOD = {"season": 1, "mnth": "Jan", "hr": 8, "holiday": 0, "weekday": 1, "workingday": 1,
        "weathersit": "clear", "temp": 0.2, "atemp": 0.21, "hum": 0.5, "windspeed": 0.1}


def ndarray(rows, names=None):
    names = names or features.FEATURE_NAMES
    return {"data": {"names": names, "ndarray": [[r[n] for n in names] for r in rows]}}


# Each bad input, and a word its message must contain (the field, or the rule).
BAD_REQUESTS = [
    ("missing feature", {"jsonData": [{k: v for k, v in GOOD.items() if k != "hum"}]}, 400, "'hum'"),
    ("extra feature", {"jsonData": [dict(GOOD, casual=3)]}, 400, "'casual'"),
    ("wrong type", {"jsonData": [dict(GOOD, temp="warm")]}, 400, "'temp'"),
    ("string for int", ndarray([dict(GOOD, hr="8")]), 400, "'hr'"),
    ("float for int", {"jsonData": [dict(GOOD, hr=8.5)]}, 400, "'hr'"),
    ("bool", {"jsonData": [dict(GOOD, holiday=True)]}, 400, "'holiday'"),
    ("null", {"jsonData": [dict(GOOD, windspeed=None)]}, 400, "'windspeed'"),
    ("NaN", {"jsonData": [dict(GOOD, temp=float("nan"))]}, 400, "NaN"),
    ("infinity", {"jsonData": [dict(GOOD, atemp=float("inf"))]}, 400, "'atemp'"),
    ("unknown category", {"jsonData": [dict(GOOD, weathersit="sunny")]}, 400, "'weathersit'"),
    ("unknown int category", {"jsonData": [dict(GOOD, hr=24)]}, 400, "'hr'"),
    ("out of range", {"jsonData": [dict(GOOD, hum=1.5)]}, 400, "'hum'"),
    ("empty batch", ndarray([]), 400, "empty"),
    ("empty jsonData", {"jsonData": []}, 400, "empty"),
    ("ragged row", {"data": {"names": features.FEATURE_NAMES, "ndarray": [[1, "Jan"]]}}, 400, "row 0"),
    ("duplicate name", {"data": {"names": features.FEATURE_NAMES + ["hr"], "ndarray": [[0] * 12]}}, 400, "'hr'"),
    ("no data", {"meta": {}}, 400, "'data'"),
    ("tensor payload", {"data": {"names": ["a"], "tensor": {"shape": [1], "values": [1]}}}, 400, "ndarray"),
    ("not an object", [1, 2, 3], 400, "JSON object"),
    ("too many rows", {"jsonData": [GOOD] * 1001}, 413, "limit"),
]


@pytest.mark.parametrize("name,payload,status,needle", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_are_refused_naming_field_and_rule(name, payload, status, needle):
    with pytest.raises(RequestError) as info:
        parse(payload)
    assert info.value.status == status
    assert needle in info.value.message, info.value.message
    # The server's path (read, then check and encode in one pass) refuses it in the same words.
    with pytest.raises(RequestError) as served:
        check_and_encode(read_seldon(payload), features.RowEncoder())
    assert (served.value.status, served.value.message) == (info.value.status, info.value.message)


def test_good_requests_in_both_layouts():
    names = list(reversed(features.FEATURE_NAMES))  # column order is free, names decide
    assert parse(ndarray([GOOD, GOOD], names)) == [GOOD, GOOD]
    assert parse({"jsonData": GOOD}) == [GOOD]
    assert parse({"jsonData": [GOOD]}) == [GOOD]


def test_the_server_path_encodes_good_rows_and_rare_valid_forms_alike():
    """check_and_encode: the one pass for a plain batch, Feature.check's walk for a form it leaves
    to it (2.0 for the integer 2; an event time is checked on either path)."""
    encoder = features.RowEncoder()
    plain = check_and_encode([dict(GOOD), dict(GOOD, hr=9)], encoder)
    assert plain.dtype == np.float32 and plain.shape == (2, len(features.FEATURES))
    assert plain.tolist() == np.float32([features.encode_row(GOOD), features.encode_row(dict(GOOD, hr=9))]).tolist()
    assert check_and_encode([dict(GOOD, hr=8.0, event_time="2011-07-04")], encoder).tolist() == plain[:1].tolist()
    counted = features.RowEncoder((*features.FEATURES, features.Feature("count", features.NUMERIC, "int", "",
                                                                         low=0, high=10)))
    assert counted.encode([dict(GOOD, count=2.0)]) is None  # left to Feature.check, which accepts it
    rare = check_and_encode([dict(GOOD, count=2.0, event_time="2011-07-04")], counted)
    assert rare.tolist() == [plain[0].tolist() + [2.0]]
    for row, with_spec in ((dict(GOOD, event_time="yesterday"), encoder),
                           (dict(GOOD, count=2.0, event_time="now"), counted)):
        with pytest.raises(RequestError, match="event_time"):
            check_and_encode([row], with_spec)


def test_prediction_log_rotates_and_keeps_every_line(tmp_path):
    from serving.logs import JsonlLog

    log = JsonlLog(str(tmp_path), "predictions", max_bytes=200, backups=100)
    for i in range(50):
        log.write({"i": i, "rows": [GOOD]})
    log.close()
    files = log.rotated() + [log.path]
    assert len(files) > 5
    lines = [json.loads(line) for path in files for line in open(path)]
    assert [entry["i"] for entry in lines] == list(range(50))


def test_registry_picks_the_newest_complete_version_unless_pinned(tmp_path):
    for name, complete in (("900", True), ("1000", True), ("1100", False)):
        os.makedirs(tmp_path / name)
        if complete:
            (tmp_path / name / reg.MANIFEST).write_text("{}")
    assert reg.versions(str(tmp_path)) == ["900", "1000", "1100"]  # numeric, not text, order
    assert reg.target(str(tmp_path)) == ("1000", "newest complete version")
    (tmp_path / reg.PIN_FILE).write_text(json.dumps({"version": "900"}))
    assert reg.target(str(tmp_path))[0] == "900"
    assert reg.target(str(tmp_path), pinned="1100")[0] == "1100"


# ----- with the pipeline's pushed version -----------------------------------------------------

@pytest.fixture(scope="module")
def span1_version(trained_home):
    path = trained_home.span1.pushed_path
    assert path and os.path.isdir(os.path.join(path, "detectors")), "span-1 version ships no detectors"
    return os.path.dirname(path), os.path.basename(path.rstrip("/"))


@pytest.fixture()
def registry(tmp_path, span1_version):
    src, version = span1_version
    root = tmp_path / "registry"
    root.mkdir()
    copy_version(src, version, str(root), "1000")
    return str(root)


def good_requests(core):
    """(send one GOOD request, [(when it began, the version that answered)], errors raised): for
    client threads."""
    answers, errors = [], []

    def send_one():
        began = time.monotonic()
        try:
            answers.append((began, core.predict({"jsonData": [GOOD]}).version))
        except Exception as err:  # noqa: BLE001 - any failure is what the tests look for
            errors.append(err)

    return send_one, answers, errors


def make_core(registry, tmp_path, **kwargs):
    from serving.service import ModelService

    kwargs.setdefault("poll_seconds", 0)
    return ModelService(registry, log_dir=str(tmp_path / "logs"), **kwargs).load()


def holdout(registry, version="1000"):
    with open(os.path.join(registry, version, "holdout.jsonl")) as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.slow
def test_scores_like_the_saved_model_and_logs_every_request(registry, tmp_path):
    core = make_core(registry, tmp_path)
    sample = holdout(registry)
    result = core.predict({"jsonData": [r["features"] for r in sample]})
    assert result.version == "1000"
    np.testing.assert_allclose(result.predictions, [r["expected"] for r in sample], rtol=1e-3, atol=1e-3)
    assert len(result.outlier_scores) == len(sample) and len(result.is_outlier) == len(sample)
    core.close()
    logged = [json.loads(line) for line in open(tmp_path / "logs" / "predictions.jsonl")]
    assert logged[-1]["request_id"] == result.request_id and logged[-1]["version"] == "1000"
    assert logged[-1]["rows"][0] == sample[0]["features"]


@pytest.mark.slow
def test_outlier_scores_flag_extreme_rows(registry, tmp_path):
    core = make_core(registry, tmp_path)
    odd = dict(GOOD, mnth="Dec", season=1, hr=3, weathersit="heavy rain/snow", temp=1.0, atemp=1.0,
               hum=0.0, windspeed=1.0)
    normal = [r["features"] for r in holdout(registry)]
    result = core.predict({"jsonData": normal + [odd]})
    assert result.is_outlier[-1] is True
    assert result.outlier_scores[-1] > np.median(result.outlier_scores[:-1])
    assert sum(result.is_outlier[:-1]) <= 0.1 * len(normal)


def _span_rows(span, days, n, seed):
    rows = [{f.name: (r[f.name] if f.dtype == "string" else int(r[f.name]) if f.dtype == "int"
                      else float(r[f.name])) for f in features.FEATURES}
            for r in read_span(span) if days(int(r["day"]))]
    return random.Random(seed).sample(rows, n)


@pytest.mark.slow
def test_drift_window_fires_on_span2_and_stays_quiet_on_held_out_span1(registry, tmp_path):
    """The span-1 model's shipped detectors: held-out span-1 days (the sample trained on even days)
    keep quiet, span-2 rows raise drift, through the request window and the drift log."""
    core = make_core(registry, tmp_path, drift_window=200)
    for row in _span_rows(1, lambda d: d % 2 == 1, 200, seed=3):
        core.predict({"jsonData": [row]})
    core.wait_for_drift_tests()
    quiet = core.last_drift
    assert quiet is not None and quiet["is_drift"] is False, quiet
    rows = _span_rows(2, lambda d: True, 200, seed=4)
    for i in range(0, 200, 20):
        core.predict({"jsonData": rows[i:i + 20]})
    core.wait_for_drift_tests()
    assert core.last_drift["is_drift"] is True and "mnth" in core.last_drift["drifted"]
    core.close()
    log = [json.loads(line) for line in open(tmp_path / "logs" / "drift.jsonl")]
    assert [entry["is_drift"] for entry in log] == [False, True]
    assert set(log[1]["p_vals"]) == set(features.FEATURE_NAMES)
    gauges = {(m["key"], m["tags"].get("feature")) for m in core.metrics() if m["type"] == "GAUGE"}
    assert ("cd4ml_drift_p_value", "mnth") in gauges and ("cd4ml_drift", None) in gauges


@pytest.mark.slow
def test_feedback_joins_by_request_id_for_live_mae(registry, tmp_path):
    core = make_core(registry, tmp_path)
    result = core.predict({"jsonData": [GOOD, GOOD]})
    truth = [p + 3.0 for p in result.predictions]
    joined = core.feedback(truth, request_id=result.request_id)
    assert joined["matched"] and joined["version"] == "1000"
    assert joined["live_mae"] == pytest.approx(3.0)
    with pytest.raises(RequestError, match="truth"):
        core.feedback([1.0], request_id=result.request_id)
    with pytest.raises(RequestError, match="request_id"):
        core.feedback([1.0], request_id="unknown")


def test_a_deferred_answer_is_recorded_when_its_loop_runs_it_before_the_next_request(registry, tmp_path):
    """The V2 runtime hands the after-answer work to its loop's call_soon: nothing of it runs
    before the answer is returned, all of it (log line, metrics, feedback memory, drift window)
    runs before the loop takes the next request, and a failure in it is logged, never raised."""
    import asyncio

    core = make_core(registry, tmp_path)
    log_path = tmp_path / "logs" / "predictions.jsonl"
    seen = {}

    async def serve():
        loop = asyncio.get_running_loop()
        answer = core.predict({"jsonData": [GOOD, GOOD]}, defer=loop.call_soon)
        seen["lines_at_answer"] = log_path.read_text().count("\n") if log_path.exists() else 0
        seen["window_at_answer"] = core.telemetry.window_rows
        await asyncio.sleep(0)  # the loop's next turn: where the next request would be read
        seen["feedback"] = core.feedback([p + 1.0 for p in answer.predictions], request_id=answer.request_id)
        return answer

    answer = asyncio.run(serve())
    assert seen["lines_at_answer"] == 0 and seen["window_at_answer"] == 0
    assert seen["feedback"]["matched"] and seen["feedback"]["live_mae"] == pytest.approx(1.0)
    assert core.telemetry.window_rows == 2
    logged = [json.loads(line) for line in open(log_path)]
    assert [r["request_id"] for r in logged] == [answer.request_id]
    assert [m["value"] for m in core.metrics() if m["key"] == "cd4ml_rows_total"] == [2]

    core.telemetry.predictions_log.close()  # the next line cannot be written
    later = []
    refused = core.predict({"jsonData": [GOOD]}, defer=later.append)
    assert refused.predictions and len(later) == 1
    later[0]()  # logs the failure instead of raising into the event loop
    assert [json.loads(line)["request_id"] for line in open(log_path)] == [answer.request_id]
    core.close()


@pytest.mark.slow
def test_feedback_joins_a_prediction_another_worker_answered(registry, tmp_path):
    """Gunicorn workers share the log directory but not memory: the join reads the prediction log."""
    answering, receiving = make_core(registry, tmp_path), make_core(registry, tmp_path)
    result = answering.predict({"jsonData": [GOOD, GOOD]})
    answering.predict({"jsonData": [GOOD]})  # a later line: the lookup finds the right one
    truth = [p + 2.0 for p in result.predictions]
    joined = receiving.feedback(truth, request_id=result.request_id)
    assert joined["matched"] and joined["version"] == "1000"
    assert joined["live_mae"] == pytest.approx(2.0)
    entry = json.loads(open(tmp_path / "logs" / "feedback.jsonl").read().splitlines()[-1])
    assert entry["request_id"] == result.request_id and entry["predictions"] == result.predictions
    with pytest.raises(RequestError, match="request_id"):
        receiving.feedback([1.0], request_id="f" * 32)


@pytest.mark.slow
def test_new_version_is_picked_up_and_pin_wins(registry, tmp_path, span1_version):
    core = make_core(registry, tmp_path)
    assert core.version == "1000"
    copy_version(registry, "1000", registry, "2000")
    assert core.refresh() and core.version == "2000"
    with open(os.path.join(registry, reg.PIN_FILE), "w") as fh:
        json.dump({"version": "1000", "by": "cd4ml rollback"}, fh)
    assert core.refresh() and core.version == "1000"
    assert core.predict({"jsonData": [GOOD]}).version == "1000"


def _with_domains(version_dir: str, **ranges):
    """Rewrite a copied version's features.json: numeric feature -> (low, high)."""
    path = os.path.join(version_dir, "features.json")
    with open(path) as fh:
        spec = json.load(fh)
    for item in spec:
        if item["name"] in ranges:
            item["low"], item["high"] = ranges[item["name"]]
    with open(path, "w") as fh:
        json.dump(spec, fh)


@pytest.mark.slow
def test_each_request_is_validated_by_the_domains_of_the_version_that_answers(registry, tmp_path):
    """Model as data: a version trained on other domains is served, and enforced, without a new
    server; the swap happens under traffic and loses no request."""
    from serving.request import RequestError

    core = make_core(registry, tmp_path)
    assert "features.json" in json.load(open(os.path.join(registry, "1000", "MANIFEST.json")))["files"]
    windy, hot = dict(GOOD, windspeed=1.5), dict(GOOD, temp=0.7)
    with pytest.raises(RequestError, match=r"windspeed.*outside the range \[0.0, 1.0\]"):
        core.predict({"jsonData": [windy]})
    assert core.predict({"jsonData": [hot]}).version == "1000"

    send_one, answers, errors = good_requests(core)

    newer = copy_version(registry, "1000", registry, "6000")
    _with_domains(newer, windspeed=(0.0, 2.0), temp=(0.0, 0.5))
    with clients(send_one, 3) as stop:
        assert core.refresh() and core.version == "6000"
        before = len(answers)
        assert wait_until(lambda: len(answers) >= before + 20, stop, seconds=100, interval=0.01)
    assert errors == [] and {version for _, version in answers} == {"1000", "6000"}
    assert core.predict({"jsonData": [windy]}).version == "6000"
    with pytest.raises(RequestError, match=r"temp.*outside the range \[0.0, 0.5\]"):
        core.predict({"jsonData": [hot]})


def test_a_feature_specification_that_breaks_a_rule_is_named():
    from components import features

    spec = features.spec_to_json()
    assert features.spec_from_json(spec) == features.FEATURES
    broken = [dict(spec[0], vocabulary=[])] + spec[1:]
    with pytest.raises(ValueError, match="feature 0 \\(season\\): a categorical feature needs a vocabulary"):
        features.spec_from_json(broken)
    with pytest.raises(ValueError, match="temp.*low <= high"):
        features.spec_from_json([dict(f, low=2.0) if f["name"] == "temp" else f for f in spec])
    with pytest.raises(ValueError, match="duplicated"):
        features.spec_from_json(spec + spec[:1])


@pytest.mark.slow
def test_a_version_with_legacy_detectors_serves_without_them(registry, tmp_path, caplog):
    """Versions pushed while detectors were saved by alibi-detect stay rollback targets."""
    core = make_core(registry, tmp_path)
    legacy = copy_version(registry, "1000", registry, "2500")
    detectors = os.path.join(legacy, "detectors")
    for name in os.listdir(detectors):
        if name.endswith(".npz"):
            os.remove(os.path.join(detectors, name))
    os.makedirs(os.path.join(detectors, "drift"))
    os.makedirs(os.path.join(detectors, "outlier"))
    with caplog.at_level("WARNING", logger="cd4ml.serving"):
        assert core.refresh() and core.version == "2500"
    assert "alibi-detect format" in caplog.text
    answer = core.predict({"jsonData": [GOOD]})
    assert answer.version == "2500" and answer.outlier_scores is None and len(answer.predictions) == 1


@pytest.mark.slow
def test_half_written_and_corrupt_versions_are_refused_while_the_old_one_serves(registry, tmp_path, caplog):
    core = make_core(registry, tmp_path)
    half = copy_version(registry, "1000", registry, "3000")
    os.remove(os.path.join(half, reg.MANIFEST))  # copy still in progress
    assert not core.refresh() and core.version == "1000"
    corrupt = copy_version(registry, "1000", registry, "4000")
    variables = [os.path.join(corrupt, "variables", n) for n in os.listdir(os.path.join(corrupt, "variables"))
                 if n.startswith("variables.data")]
    for path in variables:
        with open(path, "r+b") as fh:
            fh.truncate(16)
    with caplog.at_level("ERROR", logger="cd4ml.serving"):
        assert not core.refresh()
    assert core.version == "1000"
    assert "REFUSED version 4000" in caplog.text and "still serving 1000" in caplog.text
    assert "4000" in core.health()["refused"]
    assert core.predict({"jsonData": [GOOD]}).version == "1000"


@pytest.mark.slow
def test_reload_under_concurrent_requests_loses_none(registry, tmp_path):
    core = make_core(registry, tmp_path)
    send_one, answers, errors = good_requests(core)

    with clients(send_one, 4) as stop:
        copy_version(registry, "1000", registry, "5000")
        assert core.refresh()
        swapped = time.monotonic()
        # Let the clients run on the new version for a while.
        assert wait_until(lambda: sum(began > swapped for began, _ in answers) >= 20, stop, seconds=100,
                          interval=0.01)
    assert errors == []
    # A request that began before the swap may finish after later ones (its thread waited for the
    # interpreter lock); every one that began after it is answered by the new version.
    assert {version for began, version in answers if began < swapped} >= {"1000"}
    assert {version for began, version in answers if began > swapped} == {"5000"}


@pytest.mark.slow
def test_shadow_scores_the_challenger_without_changing_any_answer(registry, tmp_path, trained_home):
    from cd4ml import compare, promotion

    copy_version(trained_home.config.registry, trained_home.span2.pushed_version, registry, "1100")
    champion_only = make_core(registry, tmp_path / "plain")
    challenger_only = make_core(registry, tmp_path / "challenger", version="1000")
    rows = [r["features"] for r in holdout(registry)][:10]
    expected = champion_only.predict({"jsonData": rows}).predictions
    challenger = challenger_only.predict({"jsonData": rows}).predictions

    promotion.shadow(registry, "1000", "try the span-1 model")
    core = make_core(registry, tmp_path)
    assert core.version == "1100" and core.shadow_version == "1000"
    answer = core.predict({"jsonData": rows})
    assert answer.version == "1100" and answer.predictions == expected  # answers unchanged
    logged = [json.loads(line) for line in open(tmp_path / "logs" / "predictions.jsonl")]
    assert logged[-1]["shadow_version"] == "1000"
    assert logged[-1]["shadow_predictions"] == pytest.approx(challenger, rel=1e-6)

    truth = [p + 2.0 for p in answer.predictions]
    core.feedback(truth, request_id=answer.request_id)
    assert core.live_mae("1100") == pytest.approx(2.0)
    assert core.live_mae("1000") == pytest.approx(
        sum(abs(c - t) for c, t in zip(challenger, truth)) / len(truth), rel=1e-5)
    live = compare.live(str(tmp_path / "logs"))
    assert live["1100"]["labelled"] == live["1000"]["labelled"] == len(rows)
    assert core.health()["shadow"] == "1000"

    promotion.shadow(registry, None)
    core.refresh()
    assert core.shadow_version is None
    core.predict({"jsonData": rows[:1]})
    last = json.loads(open(tmp_path / "logs" / "predictions.jsonl").read().splitlines()[-1])
    assert "shadow_version" not in last
    with pytest.raises(promotion.PromotionError):
        promotion.shadow(registry, "9999")


@pytest.mark.slow
def test_a_version_without_the_encoded_signature_serves_the_same_through_serving_raw(registry, tmp_path):
    """Versions pushed before `serving_encoded` existed stay servable (and rollback targets): the
    same SavedModel saved with only its two older signatures answers the same predictions."""
    import tensorflow as tf

    from cd4ml.contract import ENCODED_SIGNATURE, EXAMPLE_SIGNATURE, RAW_SIGNATURE
    from scoring.raw_signature import LITE_ATOL, LITE_RTOL
    from serving.version import LoadedVersion

    current = LoadedVersion(registry, "1000")
    assert current._signature.encoded
    older = copy_version(registry, "1000", registry, "999")
    loaded = tf.saved_model.load(older)
    shutil.rmtree(os.path.join(older, "variables"))
    os.remove(os.path.join(older, "saved_model.pb"))
    tf.saved_model.save(loaded, older, signatures={name: loaded.signatures[name]
                                                   for name in (EXAMPLE_SIGNATURE, RAW_SIGNATURE)})
    assert ENCODED_SIGNATURE not in tf.saved_model.load(older).signatures
    before = LoadedVersion(registry, "999")  # loads: its holdout check passes through serving_raw
    assert not before._signature.encoded and not before._signature.lite  # nothing to convert
    rows = [r["features"] for r in holdout(registry)]
    np.testing.assert_allclose(before.predict(rows), current.predict(rows), rtol=LITE_RTOL, atol=LITE_ATOL)
    core = make_core(registry, tmp_path, version="999")
    assert core.predict({"jsonData": rows}).predictions == before.predict(rows).tolist()
    core.close()


@pytest.mark.slow
def test_the_server_answers_through_tensorflow_lite_as_serving_raw_does(registry):
    """The served version's rows go through the Lite conversion of `serving_encoded`, which answers
    within LITE_RTOL of `serving_raw`'s own __call__ on every holdout row, in batches of any size
    and from several threads at once (one interpreter per thread)."""
    import concurrent.futures

    from scoring import detector_core
    from scoring.raw_signature import LITE_ATOL, LITE_RTOL
    from serving.version import LoadedVersion

    version = LoadedVersion(registry, "1000")
    signature = version._signature
    assert signature.lite
    rows = [r["features"] for r in holdout(registry)]
    encoded = detector_core.encode(rows, version.features)
    expected = signature._call_signature(features.decode_columns(encoded, version.features))
    for size in (1, 3, len(rows), 1):  # each change of batch size resizes the interpreter
        np.testing.assert_allclose(version.predict_encoded(encoded[:size]), expected[:size],
                                   rtol=LITE_RTOL, atol=LITE_ATOL)
    assert not np.array_equal(expected, np.zeros_like(expected))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: version.predict_encoded(encoded[i % len(rows):]), range(200)))
    for i, got in enumerate(answers):
        np.testing.assert_allclose(got, expected[i % len(rows):], rtol=LITE_RTOL, atol=LITE_ATOL)


@pytest.mark.slow
def test_a_lite_conversion_that_answers_differently_is_dropped(registry):
    """The Lite path is checked like the other fast paths: one that is off by more than its
    tolerance is never used, and the version answers through TensorFlow, bit for bit."""
    from scoring import detector_core
    from scoring.raw_signature import RawSignature

    rows = [r["features"] for r in holdout(registry)]
    encoded = detector_core.encode(rows)
    signature = RawSignature(os.path.join(registry, "1000"), lite=True)
    assert signature.lite
    right = signature._lite
    signature._lite = lambda matrix: right(matrix) + 0.01  # a conversion that rounds wrongly
    assert not signature.agrees_with_signature(encoded)
    assert not signature.lite
    expected = signature._call_signature(features.decode_columns(encoded))
    np.testing.assert_array_equal(signature.predict_encoded(encoded), expected)


def test_a_batch_is_refused_at_its_first_bad_value_whatever_the_column():
    """A big batch goes through the server's one pass (check_and_encode) or parse; a bad value
    anywhere is refused naming the first bad row and value as a row-by-row check words it (and a
    good batch of every type passes)."""
    rows = [dict(GOOD, hr=h % 24, temp=0.5 if h % 2 else 1) for h in range(50)]
    assert len(parse({"jsonData": [dict(r) for r in rows]})) == 50
    assert check_and_encode([dict(r) for r in rows], features.RowEncoder()).shape == (50, len(features.FEATURES))
    for field, value, needle in [("temp", float("nan"), "NaN"), ("hr", 24, "unknown category 24"),
                                 ("hum", 1.5, "outside the range"), ("weathersit", 3, "expected a string"),
                                 ("season", True, "expected int"), ("holiday", 10 ** 400, "too large"),
                                 ("windspeed", "0.1", "the string '0.1'")]:
        for refuse in (lambda b: parse({"jsonData": b}), lambda b: check_and_encode(b, features.RowEncoder())):
            batch = [dict(r) for r in rows]
            batch[37][field] = value
            batch[41]["temp"] = -1.0  # a later bad row must not be the one named
            with pytest.raises(RequestError) as err:
                refuse(batch)
            assert err.value.message.startswith(f"row 37: feature '{field}'") and needle in err.value.message, \
                err.value.message


def test_feedback_credits_the_experiment_that_routed_it_even_if_it_ends_meanwhile(registry, tmp_path):
    """The race: an experiment ends (or another starts) between a feedback's look at it and its
    scoring. The feedback still scores the experiment that routed the request, never the next one,
    and never fails."""
    from serving.bandit import Experiment
    from cd4ml.contract import EXPERIMENT_FILE

    copy_version(registry, "1000", registry, "1001")
    first = Experiment(id="e-first", champion="1000", challengers=("1001",), strategy="epsilon-greedy", epsilon=1.0)
    with open(os.path.join(registry, EXPERIMENT_FILE), "w") as fh:
        fh.write(first.to_json())
    core = make_core(registry, tmp_path)
    assert core.experiment.id == "e-first"
    result = core.predict({"jsonData": [GOOD]})
    looked = core.desk._arm_of

    def then_the_experiment_changes(*args, **kwargs):
        found = looked(*args, **kwargs)
        second = Experiment(id="e-second", champion="1000", challengers=("1001",))
        with open(os.path.join(registry, EXPERIMENT_FILE), "w") as fh:
            fh.write(second.to_json())
        core.refresh_experiment()  # what the poller does, at the worst moment
        return found

    core.desk._arm_of = then_the_experiment_changes
    answer = core.feedback([p + 1 for p in result.predictions], request_id=result.request_id)
    assert answer["experiment"]["id"] == "e-first" and answer["experiment"]["arm"] == result.version
    assert core.experiment.id == "e-second" and core.snapshot.counts.labelled == 0  # the new one got nothing
    logged = [json.loads(line) for line in open(os.path.join(tmp_path, "logs", "feedback.jsonl"))]
    assert [(r["experiment"], r["arm"]) for r in logged] == [("e-first", result.version)]
    os.remove(os.path.join(registry, EXPERIMENT_FILE))
    core.refresh_experiment()  # and when it ends instead: no experiment, still no failure
    result = core.predict({"jsonData": [GOOD]})
    assert "experiment" not in core.feedback([1.0], request_id=result.request_id)


def test_timings_nobody_scrapes_stay_bounded_and_the_drop_is_counted():
    """Without a scrape, a timing per request accumulated for ever (the memory growth under load)."""
    from serving.metrics import DeltaMetrics

    counters = DeltaMetrics(max_timers=100)
    for i in range(1000):
        counters.observe("cd4ml_request_duration_seconds", float(i), version="1")
        assert len(counters.timers) <= 100
    drained = counters.drain()
    timers = [m["value"] for m in drained if m["type"] == "TIMER"]
    (dropped,) = [m["value"] for m in drained if m["key"] == "cd4ml_timings_dropped_total"]
    assert timers == [float(i) for i in range(1000 - len(timers), 1000)]  # the newest are kept
    assert dropped + len(timers) == 1000 and counters.timers == []


def test_the_request_path_takes_no_lock_and_a_swap_is_one_snapshot(registry, tmp_path):
    """Every lock the serving rooms own is held by another thread (a publisher mid-swap, the
    telemetry sink, the feedback desk, the metrics): a request is still answered, because it reads
    one immutable snapshot; what it leaves behind waits until the locks are free."""
    import threading

    copy_version(registry, "1000", registry, "1001")
    core = make_core(registry, tmp_path, version="1000")
    locks = [core.repository._publishing, core.telemetry._lock, core.desk._lock, core.telemetry.metrics._lock]
    for lock in locks:
        lock.acquire()
    deferred, answers = [], []
    worker = threading.Thread(target=lambda: answers.append(core.predict({"jsonData": [GOOD]}, defer=deferred.append)))
    worker.start()
    worker.join(timeout=30)
    for lock in locks:
        lock.release()
    assert answers and answers[0].version == "1000" and len(deferred) == 1
    deferred[0]()
    assert core.metrics() and core.feedback([1.0], request_id=answers[0].request_id)["matched"]

    before = core.snapshot
    core.repository.pinned = "1001"
    assert core.refresh() and core.version == "1001"
    assert before.current.version == "1000" and core.snapshot is not before  # published anew, not changed
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        before.current = None  # frozen: a request's snapshot cannot change under it
    core.close()
