"""The JSONL logs the server writes: lookup across workers and rotation (no TensorFlow needed)."""

from serving.logs import JsonlLog


def test_find_returns_the_newest_record_across_writers_and_rotation(tmp_path):
    first, second = JsonlLog(str(tmp_path), "predictions"), JsonlLog(str(tmp_path), "predictions")
    first.write({"request_id": "a", "predictions": [1.0]})
    second.write({"request_id": "b", "predictions": [2.0]})
    first.write({"request_id": "a", "predictions": [3.0]})
    assert second.find("request_id", "a")["predictions"] == [3.0]
    assert first.find("request_id", "b")["predictions"] == [2.0]
    assert first.find("request_id", "c") is None
    assert first.find("request_id", 'a"') is None  # the value is matched as a JSON string

    first._rotate()  # the next line goes to a fresh file; the old one is the newest rotated file
    first.write({"request_id": "d", "predictions": [4.0]})
    assert second.find("request_id", "b")["predictions"] == [2.0]
    assert second.find("request_id", "d")["predictions"] == [4.0]


def test_find_reads_only_a_bounded_tail_and_skips_the_cut_line(tmp_path):
    log = JsonlLog(str(tmp_path), "predictions")
    log.write({"request_id": "old", "pad": "x" * 500})
    log.write({"request_id": "new", "pad": "y" * 10})
    assert log.find("request_id", "new", max_bytes=200)["request_id"] == "new"
    assert log.find("request_id", "old", max_bytes=200) is None  # beyond the tail, or cut
    assert log.find("request_id", "old")["pad"] == "x" * 500


def test_a_log_line_is_the_compact_json_of_its_record_with_numpy_values_and_no_nan(tmp_path):
    """json_line (orjson) writes what json.dumps with compact separators writes (text as UTF-8), one line per
    record; numpy scalars and arrays become plain numbers, and NaN becomes null (still JSON)."""
    import json

    import numpy as np

    from serving.logs import json_line

    record = {"ts": "2026-12-03T17:42:55.123+00:00", "request_id": "ab" * 16, "rows": [{"mnth": "Jan", "temp": 0.24}],
              "predictions": [32.80291748046875], "is_outlier": [False], "text": "naïve \"quoted\"\n"}
    assert json_line(record) == json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n"
    line = json_line({"scores": np.array([0.5, 1.25]), "n": np.int64(3), "p": np.float32(0.5),
                      "bad": float("nan"), 7: "int key"})
    assert line.endswith("}\n") and line.count("\n") == 1
    assert json.loads(line) == {"scores": [0.5, 1.25], "n": 3, "p": 0.5, "bad": None, "7": "int key"}
    log = JsonlLog(str(tmp_path), "predictions")
    log.write(record)
    log.write({"n": np.int64(4)})
    assert [json.loads(x) for x in open(log.path)] == [record, {"n": 4}]


def test_a_log_rotates_at_its_size_and_a_timestamp_reads_as_isoformat_writes_it(tmp_path):
    import datetime

    from serving.logs import now

    log = JsonlLog(str(tmp_path), "predictions", max_bytes=300)
    for i in range(10):
        log.write({"request_id": str(i), "pad": "x" * 100})
    assert log.rotated() and log.find("request_id", "9")["pad"] == "x" * 100
    assert all(len(open(path, "rb").read()) < 300 + 130 for path in log.rotated())  # cut at the first line past it

    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    stamp = now()
    after = datetime.datetime.now(datetime.timezone.utc)
    parsed = datetime.datetime.fromisoformat(stamp)
    assert before <= parsed <= after and parsed.isoformat(timespec="milliseconds") == stamp
