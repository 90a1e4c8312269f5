"""The feature module is the single source of truth: its rules, and everything derived from it."""

import csv
import math
import os

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


def test_a_column_is_screened_valid_only_when_every_value_passes_check():
    """Feature.all_valid is the server's shortcut for Feature.check over a batch: it may say no to
    a valid column (the check then decides) but never yes to a column with a bad value."""
    import random

    rng = random.Random(3)
    odd = [None, True, float("nan"), float("inf"), -1, 2, 0.5, 1.5, 10 ** 400, "x", "Jan", "clear", 3, 23, 24,
           1.0, "0.2", [1]]
    said_yes = 0
    for f in features.FEATURES:
        good = list(f.vocabulary) if f.is_categorical else [f.low, f.high, (f.low + f.high) / 2]
        assert f.all_valid(good * 3), f.name
        for _ in range(300):
            column = [rng.choice(good) for _ in range(5)] + [rng.choice(odd + good)]
            if f.all_valid(column):
                said_yes += 1
                assert all(f.check(v) is None for v in column), (f.name, column)
    assert said_yes > 100  # the screen passes most good columns, so it is worth having
