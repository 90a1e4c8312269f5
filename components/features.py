"""The one place that says what the bike-demand data looks like.

Every consumer reads this module instead of keeping its own list: the curated schema
(`components/schema.py` renders it), the transform, the Keras model, the serving request
validator, the drift and outlier detectors and the data-drop checks. Adding a feature is one
entry here (see docs/adding-a-feature in the README).

Raw columns fall in three groups:
- features: what the model sees, each with a kind and a domain;
- the label (`bikers`);
- carried columns: in the data files, never given to the model. `day` is the day of the year
  (required). `casual` and `registered` sum to the label (they would leak it); production traffic
  cannot know them, so they are *optional*: a span harvested from the server's logs has no such
  columns, and the schema allows their absence (docs/loop.md). `split_group` is what the
  train/eval split hashes on: ExampleGen (components/example_gen.py) fills it with `day-<day>`
  when a file does not carry it, so all hours of a day land in the same split; a harvested span
  carries its own groups (the event day, or the request: see cd4ml/triggers/harvest.py).

This module must stay importable without TensorFlow: the serving validator and the CLI use it.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Dict, List, Optional, Sequence, Tuple, Union

NUMERIC = "numeric"
CATEGORICAL = "categorical"
KEY = "key"  # a string that only groups rows (no domain)

Value = Union[int, float, str]


@dataclasses.dataclass(frozen=True)
class Feature:
    """A raw column and the rules a value must follow.

    dtype is the raw type in the CSV and in tf.Examples: "int" (int64), "float" or "string".
    Numeric features carry a closed [low, high] range; categorical ones an ordered vocabulary.
    """

    name: str
    kind: str
    dtype: str
    description: str
    low: Optional[float] = None
    high: Optional[float] = None
    vocabulary: Tuple[Value, ...] = ()
    optional: bool = False   # a column a data file may leave out (never a feature)

    @property
    def is_categorical(self) -> bool:
        return self.kind == CATEGORICAL

    @property
    def types(self) -> "RawType":
        """This column's raw type in Python, numpy, TensorFlow and the Open Inference Protocol."""
        return _TYPES[self.dtype]

    def parse(self, text: str) -> Value:
        """A CSV cell as this column's Python value."""
        return self.types.python(text)

    def check(self, value) -> Optional[str]:
        """Return why `value` breaks this feature's rule, or None when it is valid."""
        if isinstance(value, bool) or value is None:
            return f"feature '{self.name}': expected {self.dtype}, got {value!r}"
        if self.dtype == "string":
            if not isinstance(value, str):
                return f"feature '{self.name}': expected a string, got {value!r}"
        else:
            if isinstance(value, str):
                return f"feature '{self.name}': expected a number ({self.dtype}), got the string {value!r}"
            if not isinstance(value, (int, float)):
                return f"feature '{self.name}': expected a number ({self.dtype}), got {value!r}"
            if value != value or value in (float("inf"), float("-inf")):
                return f"feature '{self.name}': NaN and infinity are not allowed"
            if isinstance(value, int) and not -sys.float_info.max <= value <= sys.float_info.max:
                return f"feature '{self.name}': {value} is too large for a number (beyond a float)"
            if self.dtype == "int" and not (isinstance(value, int) or float(value).is_integer()):
                return f"feature '{self.name}': expected an integer, got {value!r}"
        if self.kind == KEY:
            return None
        if self.is_categorical:
            if value not in self.vocabulary:
                shown = ", ".join(repr(v) for v in self.vocabulary)
                return f"feature '{self.name}': unknown category {value!r} (allowed: {shown})"
        else:
            if not self.low <= value <= self.high:
                return f"feature '{self.name}': {value!r} is outside the range [{self.low}, {self.high}]"
        return None


@dataclasses.dataclass(frozen=True)
class RawType:
    """One raw dtype in every representation, so no consumer keeps its own mapping."""

    python: type   # what a CSV cell or a JSON value becomes
    numpy: str     # dtype of a column of values (strings as Python objects)
    tf: str        # TensorFlow dtype name (`tf.as_dtype(t.tf)`)
    v2: str        # Open Inference Protocol (V2) tensor datatype


_TYPES = {
    "int": RawType(int, "int64", "int64", "INT64"),
    "float": RawType(float, "float32", "float32", "FP32"),
    "string": RawType(str, "object", "string", "BYTES"),
}

MONTHS = ("Jan", "Feb", "March", "April", "May", "June",
          "July", "Aug", "Sept", "Oct", "Nov", "Dec")
WEATHER = ("clear", "cloudy/misty", "light rain/snow", "heavy rain/snow")

FEATURES: Tuple[Feature, ...] = (
    Feature("season", CATEGORICAL, "int", "1 winter, 2 spring, 3 summer, 4 autumn", vocabulary=(1, 2, 3, 4)),
    Feature("mnth", CATEGORICAL, "string", "month as published", vocabulary=MONTHS),
    Feature("hr", CATEGORICAL, "int", "hour of the day", vocabulary=tuple(range(24))),
    Feature("holiday", CATEGORICAL, "int", "1 on a public holiday", vocabulary=(0, 1)),
    Feature("weekday", CATEGORICAL, "int", "0 Sunday .. 6 Saturday", vocabulary=tuple(range(7))),
    Feature("workingday", CATEGORICAL, "int", "1 neither weekend nor holiday", vocabulary=(0, 1)),
    Feature("weathersit", CATEGORICAL, "string", "weather situation", vocabulary=WEATHER),
    Feature("temp", NUMERIC, "float", "temperature, normalised to [0, 1]", low=0.0, high=1.0),
    Feature("atemp", NUMERIC, "float", "felt temperature, normalised to [0, 1]", low=0.0, high=1.0),
    Feature("hum", NUMERIC, "float", "relative humidity, normalised to [0, 1]", low=0.0, high=1.0),
    Feature("windspeed", NUMERIC, "float", "wind speed, normalised to [0, 1]", low=0.0, high=1.0),
)

LABEL = Feature("bikers", NUMERIC, "int", "rentals in the hour (casual + registered)", low=0, high=100000)

CARRIED: Tuple[Feature, ...] = (
    Feature("day", NUMERIC, "int", "day of the year; groups the split, never a feature", low=1, high=366),
    Feature("casual", NUMERIC, "int", "casual rentals: part of the label, never a feature", low=0, high=100000,
            optional=True),
    Feature("registered", NUMERIC, "int", "registered rentals: part of the label, never a feature",
            low=0, high=100000, optional=True),
    Feature("split_group", KEY, "string", "what the train/eval split hashes on (day-<day> unless a file "
            "carries it)", optional=True),
)

# The column the train/eval split hashes on, and how ExampleGen fills it when a file has none:
# all hours of one day land in the same split, so the eval split holds whole unseen days.
SPLIT_KEY = "split_group"


def day_group(day: int) -> str:
    return f"day-{int(day)}"

FEATURE_NAMES: List[str] = [f.name for f in FEATURES]
NUMERIC_FEATURES: List[str] = [f.name for f in FEATURES if not f.is_categorical]
CATEGORICAL_FEATURES: List[str] = [f.name for f in FEATURES if f.is_categorical]
LABEL_KEY = LABEL.name
# The columns of the published CSV, in its order (a data drop has these).
RAW_COLUMNS: List[str] = ["season", "mnth", "day", "hr", "holiday", "weekday", "workingday",
                          "weathersit", "temp", "atemp", "hum", "windspeed",
                          "casual", "registered", "bikers"]
# Every column the schema describes: the published ones and the split group ExampleGen adds.
SCHEMA_COLUMNS: List[str] = RAW_COLUMNS + [SPLIT_KEY]
# Slices the evaluator reports, each a single feature.
SLICES: List[str] = ["season", "weathersit", "workingday", "hr"]

_BY_NAME: Dict[str, Feature] = {f.name: f for f in (*FEATURES, LABEL, *CARRIED)}
assert sorted(_BY_NAME) == sorted(SCHEMA_COLUMNS), "SCHEMA_COLUMNS and the feature lists disagree"
# What every data file must carry: the schema's columns but the optional ones.
REQUIRED_COLUMNS: List[str] = [c for c in RAW_COLUMNS if not _BY_NAME[c].optional]


def feature(name: str) -> Feature:
    return _BY_NAME[name]


def all_columns() -> Sequence[Feature]:
    """Every raw column the schema describes: features, label and carried columns."""
    return [_BY_NAME[name] for name in SCHEMA_COLUMNS]


def transformed_name(name: str) -> str:
    return f"{name}_xf"


def categories_per_feature() -> Dict[int, int]:
    """Column index -> number of categories, in FEATURE_NAMES order (the drift test's categorical columns)."""
    return {i: len(f.vocabulary) for i, f in enumerate(FEATURES) if f.is_categorical}


def encode_row(row: Dict[str, Value], spec: Sequence[Feature] = FEATURES) -> List[float]:
    """A raw row as numbers in the spec's order: categories become their vocabulary index.

    Detectors work on this numeric layout; the index order is the vocabulary order of the spec
    (this module's, or the one a model version was trained with).
    """
    out: List[float] = []
    for f in spec:
        value = row[f.name]
        out.append(float(f.vocabulary.index(value)) if f.is_categorical else float(value))
    return out


class RowEncoder:
    """A specification's rules and encode_row's layout in one pass over a batch.

    The server used to check every value (Feature.check) and then encode it (encode_row): two
    walks, each scanning a vocabulary tuple, and for one row they cost more than the model
    (benchmarks/serving.py). Here a category is one dict lookup that checks and encodes it, a
    number one type test and one range test. It accepts only values Feature.check accepts and
    encodes them as encode_row does (tests/test_features.py tries both on hostile values). When a
    value is not plainly valid it answers None, and the caller walks Feature.check, which words
    the refusal (or accepts a rare form, such as 2.0 for an integer, and encodes it the slow way).
    Rows come from a Seldon body (encode), columns from V2 tensors (encode_columns).
    """

    def __init__(self, spec: Sequence[Feature] = FEATURES):
        self.spec = tuple(spec)
        self.names = tuple(f.name for f in self.spec)
        # Per feature: (name, category -> index or None, allowed number types, low, high).
        self._plan = []
        for f in self.spec:
            if f.is_categorical:
                own = str if f.dtype == "string" else int if f.dtype == "int" else (int, float)
                # Only entries of the feature's own type: an entry of another type never matches here.
                table = {v: float(i) for i, v in enumerate(f.vocabulary)
                         if isinstance(v, own) and not isinstance(v, bool)}
                self._plan.append((f.name, table, (), None, None))
            elif f.kind == NUMERIC:
                numbers = (int,) if f.dtype == "int" else (int, float)
                # Bounds within the floats: the range test then also refuses NaN, infinity and an
                # integer too large for a float, as Feature.check does.
                self._plan.append((f.name, None, numbers, max(f.low, -sys.float_info.max),
                                   min(f.high, sys.float_info.max)))
            else:  # a key has no number: never encoded here
                self._plan.append((f.name, None, (), None, None))

    def encode(self, rows: Sequence[Dict[str, Value]]):
        """The rows (each carrying every feature) as a float32 matrix in encode_row's layout;
        None when any value needs Feature.check."""
        import numpy as np

        out: List[float] = []
        append = out.append
        for row in rows:
            for name, table, numbers, low, high in self._plan:
                code = _code(row[name], table, numbers, low, high)
                if code is None:
                    return None
                append(code)
        return np.asarray(out, dtype=np.float32).reshape(len(rows), len(self._plan))

    def encode_columns(self, columns: Sequence[Sequence[Value]]):
        """One column of values per feature, in the spec's order and of one length, as encode
        gives the same rows."""
        import numpy as np

        out: List[float] = []
        append = out.append
        for (_, table, numbers, low, high), values in zip(self._plan, columns):
            for value in values:
                code = _code(value, table, numbers, low, high)
                if code is None:
                    return None
                append(code)
        return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(len(self._plan), -1).T)


def _code(value, table, numbers, low, high) -> Optional[float]:
    """RowEncoder's test of one value: its number, or None when Feature.check must decide."""
    kind = type(value)
    if table is not None:
        return table.get(value) if kind is str or kind is int or kind is float else None
    if kind in numbers and low <= value <= high:
        return float(value)
    return None


def decode_columns(encoded, spec: Sequence[Feature] = FEATURES) -> Dict[str, object]:
    """encode_row's numeric layout (a matrix, one row per example) back to one typed column per
    feature: what a SavedModel's raw signature takes. Used where many synthetic rows are scored at
    once (the explainer's coalitions), so no per-row dict is built."""
    import numpy as np

    matrix = np.asarray(encoded)
    columns: Dict[str, object] = {}
    for i, f in enumerate(spec):
        column = matrix[:, i]
        if f.is_categorical:
            column = np.asarray(f.vocabulary, dtype=f.types.numpy)[np.rint(column).astype(np.int64)]
        columns[f.name] = column.astype(f.types.numpy)
    return columns


def parse_row(row: Dict[str, str]) -> Dict[str, Value]:
    """A CSV row (all text) with every known column in its schema type; other columns unchanged."""
    return {k: _BY_NAME[k].parse(v) if k in _BY_NAME else v for k, v in row.items()}


# --- the specification a model version ships (contract.FEATURES_FILE) ---------------------------
# The server validates and encodes a request by the features of the version that answers it, so a
# version with another domain is served without a new image ("model as data").

def spec_to_json(spec: Sequence[Feature] = FEATURES) -> List[Dict[str, object]]:
    return [dict(dataclasses.asdict(f), vocabulary=list(f.vocabulary)) for f in spec]


def spec_from_json(items) -> Tuple[Feature, ...]:
    """Features from spec_to_json's form; ValueError naming the entry and the rule otherwise."""
    if not isinstance(items, list) or not items:
        raise ValueError("a feature specification is a non-empty list of features")
    spec, fields = [], {f.name for f in dataclasses.fields(Feature)}
    for i, item in enumerate(items):
        where = f"feature {i} ({item.get('name', '?') if isinstance(item, dict) else '?'})"
        if not isinstance(item, dict) or not {"name", "kind", "dtype"} <= set(item) or set(item) - fields:
            raise ValueError(f"{where}: expected an object with name, kind and dtype (and {sorted(fields)} only)")
        if item["kind"] not in (NUMERIC, CATEGORICAL) or item["dtype"] not in _TYPES:
            raise ValueError(f"{where}: kind must be {NUMERIC} or {CATEGORICAL}, dtype one of {sorted(_TYPES)}")
        f = Feature(**dict(item, description=item.get("description", ""),
                           vocabulary=tuple(item.get("vocabulary") or ())))
        if f.is_categorical and not f.vocabulary:
            raise ValueError(f"{where}: a categorical feature needs a vocabulary")
        if not f.is_categorical and (f.low is None or f.high is None or f.low > f.high):
            raise ValueError(f"{where}: a numeric feature needs low <= high")
        spec.append(f)
    names = [f.name for f in spec]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicated feature names in {names}")
    return tuple(spec)

