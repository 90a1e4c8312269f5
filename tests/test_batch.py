"""`cd4ml predict` on a span of the data root and on a gs:// prefix of the real storage emulator
(Beam's own GCS IO, anonymous against it), with a rejects file for bad rows."""

from __future__ import annotations

import csv
import json
import os

import pytest

from components import features
from tests.conftest import sample_rows, write_rows

pytestmark = pytest.mark.slow


def test_predict_scores_a_span_and_a_bucket_prefix_with_rejects(span1_registry, tmp_path, capsys):
    from cd4ml import cli, storage

    data_root = tmp_path / "data"
    rows = sample_rows(2, every=30)
    write_rows(str(data_root / "span-2" / "rows.csv"), rows)
    assert cli.main(["predict", "--registry", span1_registry, "--data-root", str(data_root), "span:2",
                     str(tmp_path / "scored")]) == 0
    out = capsys.readouterr().out
    assert f"scored {len(rows)} rows, rejected 0" in out and "version 1000" in out

    bad = dict(rows[0], weathersit="sandstorm")
    with storage.local_emulator():
        client = storage.client()
        bucket = client.create_bucket("cd4ml-batch")
        text = (tmp_path / "drop.csv")
        with open(text, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows[:20] + [bad])
        bucket.blob("incoming/drop.csv").upload_from_filename(str(text))
        bucket.blob("incoming/notes.txt").upload_from_string("not a data file")
        assert cli.main(["predict", "--registry", span1_registry, "gs://cd4ml-batch/incoming/",
                         "gs://cd4ml-batch/scored/"]) == 0
        assert "scored 20 rows, rejected 1" in capsys.readouterr().out
        lines = {name: [json.loads(line) for blob in client.list_blobs("cd4ml-batch", prefix=f"scored/{name}-")
                        for line in blob.download_as_text().splitlines()]
                 for name in ("predictions", "rejects")}
    assert len(lines["predictions"]) == 20 and {p["version"] for p in lines["predictions"]} == {"1000"}
    assert all(p["where"].startswith("gs://cd4ml-batch/incoming/drop.csv:") for p in lines["predictions"])
    assert set(lines["predictions"][0]["features"]) == set(features.FEATURE_NAMES)
    (reject,) = lines["rejects"]
    assert "feature 'weathersit': unknown category 'sandstorm'" in reject["problem"]
    assert reject["where"] == "gs://cd4ml-batch/incoming/drop.csv:22"
    assert not os.path.exists(str(tmp_path / "gs:"))
