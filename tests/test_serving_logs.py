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
