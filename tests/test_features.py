"""The feature module is the single source of truth: its rules, and everything derived from it."""

import csv
import math
import os

import numpy as np
import pytest

from components import features, schema
from pipelines.config import REPO_ROOT


def test_label_and_leaky_columns_never_features():
    assert features.LABEL_KEY == "bikers"
    for leaky in ("casual", "registered", "bikers", "day"):
        assert leaky not in features.FEATURE_NAMES


@pytest.mark.parametrize("span", [1, 2])
def test_published_files_match_the_feature_module(span):
    path = os.path.join(REPO_ROOT, "data", "bikeshare", f"span-{span}", "bikeshare.csv")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == features.RAW_COLUMNS
        rows = list(reader)
    assert len(rows) > 4000
    for f in features.FEATURES:
        for row in rows:
            raw = row[f.name]
            value = raw if f.dtype == "string" else (int(raw) if f.dtype == "int" else float(raw))
            assert f.check(value) is None, (f.name, raw)


@pytest.mark.parametrize("name,value,words", [
    ("temp", "warm", ["temp", "string"]),
    ("temp", 1.5, ["temp", "range"]),
    ("temp", math.nan, ["temp", "NaN"]),
    ("hum", math.inf, ["hum", "infinity"]),
    ("weathersit", "tornado", ["weathersit", "unknown category", "tornado"]),
    ("hr", 24, ["hr", "unknown category"]),
    ("hr", 3.5, ["hr", "integer"]),
    ("season", None, ["season"]),
    ("holiday", True, ["holiday"]),
    ("mnth", 3, ["mnth", "string"]),
])
def test_check_names_feature_and_rule(name, value, words):
    message = features.feature(name).check(value)
    assert message is not None
    for word in words:
        assert word in message


def test_valid_values_pass():
    assert features.feature("temp").check(0.5) is None
    assert features.feature("hr").check(23) is None
    assert features.feature("weathersit").check("clear") is None


def test_encode_row_and_categories_agree():
    row = {"season": 3, "mnth": "July", "hr": 17, "holiday": 0, "weekday": 5, "workingday": 1,
           "weathersit": "cloudy/misty", "temp": 0.7, "atemp": 0.65, "hum": 0.5, "windspeed": 0.2}
    encoded = features.encode_row(row)
    assert len(encoded) == len(features.FEATURES)
    cats = features.categories_per_feature()
    assert set(cats) == {i for i, f in enumerate(features.FEATURES) if f.is_categorical}
    for index, n in cats.items():
        assert 0 <= encoded[index] < n
    assert encoded[features.FEATURE_NAMES.index("mnth")] == features.MONTHS.index("July")


def test_curated_schema_is_generated_from_the_feature_module():
    assert schema.is_current(), "run `cd4ml schema --write`"
    built = {f.name: f for f in schema.build_schema().feature}
    assert sorted(built) == sorted(features.SCHEMA_COLUMNS)
    assert list(built["weathersit"].string_domain.value) == list(features.WEATHER)
    assert built["temp"].float_domain.max == 1.0
    assert built["hr"].int_domain.is_categorical
    assert list(built["bikers"].not_in_environment) == ["SERVING"]
    optional = {"casual", "registered"}  # production cannot know them: a harvested span has none
    assert all(f.presence.min_fraction == 1.0 for name, f in built.items() if name not in optional)
    for name in optional:
        assert built[name].presence.min_count == 0 and not built[name].HasField("shape")
        assert (built[name].value_count.min, built[name].value_count.max) == (1, 1)
    assert features.SPLIT_KEY not in features.REQUIRED_COLUMNS and "day" in features.REQUIRED_COLUMNS


def test_metadata_connection_is_sqlite_by_default_or_a_mysql_url(tmp_path):
    from cd4ml import mlmd
    from pipelines.config import PipelineConfig

    config = PipelineConfig.from_env(environ={"CD4ML_HOME": str(tmp_path)})
    sqlite = mlmd.connection_config(config.metadata_path)
    assert sqlite.sqlite.filename_uri == str(tmp_path / "metadata.sqlite")
    mysql = mlmd.connection_config("mysql://ml:s%40cret@db.internal:3307/mlmd")
    assert (mysql.mysql.host, mysql.mysql.port, mysql.mysql.database) == ("db.internal", 3307, "mlmd")
    assert (mysql.mysql.user, mysql.mysql.password) == ("ml", "s@cret")


def test_config_rejects_a_badly_typed_variable_naming_it():
    from pipelines.config import PipelineConfig

    with pytest.raises(ValueError, match="CD4ML_EPOCHS='ten'"):
        PipelineConfig.from_env(environ={"CD4ML_EPOCHS": "ten"})


def test_the_one_pass_encoder_accepts_only_what_check_accepts_and_encodes_alike():
    """RowEncoder is the server's check and encode in one pass: it may leave a valid row to
    Feature.check (answering None), but never accepts a value check refuses, and what it
    encodes is encode_row's layout. Tried on the published rows, on odd values in every
    feature, and on a spec with a mixed vocabulary and unbounded ranges."""
    import random

    from tests.conftest import read_span

    mixed = (*features.FEATURES,
             features.Feature("code", features.CATEGORICAL, "float", "mixed vocabulary", vocabulary=(1, 2.5, "x")),
             features.Feature("count", features.NUMERIC, "int", "integer range", low=0, high=10 ** 6),
             features.Feature("free", features.NUMERIC, "float", "unbounded", low=-math.inf, high=math.inf))
    rng = random.Random(3)
    odd = [None, True, False, math.nan, math.inf, -math.inf, -1, 0, 1, 2, 1.0, 2.0, 2.5, -0.0, 0.5, 1.5, 23, 24,
           10 ** 30, -10 ** 30, 10 ** 400, "x", "", "8", "Jan", "clear", "0.2", b"clear", [1], {"a": 1}, (1,)]
    for spec in (features.FEATURES, mixed):
        encoder = features.RowEncoder(spec)
        good = {f.name: (f.vocabulary if f.is_categorical else (f.low if math.isfinite(f.low) else -1e9,
                                                                f.high if math.isfinite(f.high) else 1e9, 0.5))
                for f in spec}
        fast = valid_batches = 0
        for _ in range(3000):
            rows = [{f.name: rng.choice(good[f.name]) for f in spec} for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.7:
                rng.choice(rows)[rng.choice(spec).name] = rng.choice(odd)
            encoded = encoder.encode(rows)
            by_column = encoder.encode_columns([[row[f.name] for row in rows] for f in spec])
            valid = all(f.check(row[f.name]) is None for row in rows for f in spec)
            valid_batches += valid
            assert (encoded is None) == (by_column is None), rows
            if encoded is not None:
                fast += 1
                assert valid, rows
                expected = np.asarray([features.encode_row(row, spec) for row in rows], dtype=np.float32)
                assert np.array_equal(encoded, expected) and np.array_equal(by_column, expected), rows
        # The one pass takes almost every valid batch, so the server rarely walks Feature.check.
        assert valid_batches > 300 and fast > 0.9 * valid_batches, (fast, valid_batches)
    published = [features.parse_row({f.name: r[f.name] for f in features.FEATURES}) for r in read_span(2)[:500]]
    assert np.array_equal(features.RowEncoder().encode(published),
                          np.asarray([features.encode_row(r) for r in published], dtype=np.float32))
