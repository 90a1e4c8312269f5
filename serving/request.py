"""Turn a request body into a checked batch, or a 4xx that names the field and the rule.

A reader knows one protocol (read_seldon: Seldon v1's `data`/`jsonData`; read_v2: the Open
Inference Protocol's inputs) and gives rows of {feature: value} with the names and shapes
checked. check_and_encode then applies the value rules of a feature specification (the one
shipped inside the version that will answer, serving/version.py, else components.features:
types, categories, ranges) and gives the rows in the model's numeric layout in the same pass.
seldon_batch and v2_batch are what the server calls: both steps, as a Batch; v2_batch first
tries the common request in one pass over its tensors. parse is both steps for a caller that
wants the rows only. Everything is checked before any row is scored, so a batch is answered
whole or rejected whole.
"""

from __future__ import annotations

import datetime
import weakref
from typing import Dict, List, Optional, Sequence

import numpy as np

from cd4ml.contract import EVENT_TIME
from components import features

DEFAULT_MAX_ROWS = 1000


class RequestError(Exception):
    """A request the server refuses; `status` is the HTTP code, the message names field and rule."""

    def __init__(self, message: str, status: int = 400, rule: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.status = status
        self.rule = rule


def parse(payload, max_rows: int = DEFAULT_MAX_ROWS,
          spec: Sequence[features.Feature] = features.FEATURES) -> List[Dict[str, object]]:
    """Validated rows from a Seldon v1 body."""
    return check_values(read_seldon(payload, max_rows, spec), spec)


def read_seldon(payload, max_rows: int = DEFAULT_MAX_ROWS,
                spec: Sequence[features.Feature] = features.FEATURES) -> List[Dict[str, object]]:
    """Rows as {feature: value} from `data.names` + `data.ndarray`, or `jsonData` records; names,
    sizes and shapes checked, values not yet."""
    if not isinstance(payload, dict):
        raise RequestError(f"request body must be a JSON object, got {type(payload).__name__}",
                           rule="malformed")
    if "jsonData" in payload:
        records = payload["jsonData"]
        if isinstance(records, dict):
            records = records.get("instances", [records]) if "instances" in records else [records]
        if not isinstance(records, list):
            raise RequestError("field 'jsonData': expected a record or a list of records", rule="malformed")
        rows = records
        _check_size(len(rows), max_rows, "jsonData")
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(f"field 'jsonData' row {i}: expected an object of feature: value",
                                   rule="malformed")
            _check_names(list(row), f"jsonData row {i}", spec)
    elif "data" in payload:
        data = payload["data"]
        if not isinstance(data, dict):
            raise RequestError("field 'data': expected an object with 'names' and 'ndarray'", rule="malformed")
        if "ndarray" not in data:
            other = [k for k in ("tensor", "tftensor", "binData", "strData") if k in data]
            hint = f" ({other[0]} is not supported: named mixed-type features need ndarray)" if other else ""
            raise RequestError(f"field 'data.ndarray': missing{hint}", rule="malformed")
        names = data.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise RequestError("field 'data.names': expected the list of feature names", rule="malformed")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise RequestError(f"field 'data.names': duplicated feature {dup[0]!r}", rule="duplicate")
        _check_names(names, "data.names", spec)
        ndarray = data["ndarray"]
        if not isinstance(ndarray, list):
            raise RequestError("field 'data.ndarray': expected a list of rows", rule="malformed")
        _check_size(len(ndarray), max_rows, "data.ndarray")
        rows = []
        for i, values in enumerate(ndarray):
            if not isinstance(values, list) or len(values) != len(names):
                raise RequestError(f"field 'data.ndarray' row {i}: expected a list of {len(names)} values "
                                   f"(one per name in data.names)", rule="shape")
            rows.append(dict(zip(names, values)))
    else:
        raise RequestError("request needs 'data' ({'names': [...], 'ndarray': [[...]]}) or 'jsonData'",
                           rule="malformed")
    return rows


def check_and_encode(rows: List[Dict[str, object]], encoder: features.RowEncoder) -> np.ndarray:
    """Rows checked against the rules of `encoder.spec`, and in its numeric layout (the model's
    and the detectors' input): one pass for a valid batch; for any other, check_values words the
    first bad value."""
    encoded = encoder.encode(rows)
    if encoded is None:
        check_values(rows, encoder.spec)  # raises, or accepts a form the one pass leaves to it (2.0 for 2)
        encoded = np.asarray([features.encode_row(row, encoder.spec) for row in rows], dtype=np.float32)
    elif any(EVENT_TIME in row for row in rows):
        for i, row in enumerate(rows):
            if EVENT_TIME in row:
                row[EVENT_TIME] = check_event_time(row[EVENT_TIME], f"row {i}")
    return encoded.reshape(len(rows), len(encoder.spec))


class Batch:
    """A checked request: `encoded` for the model and the detectors, `rows` ({feature: value},
    for the log line, the feedback memory and a shadow) and the rows' event times, if sent.

    The rows of a V2 request are built from its columns only when asked for, which the server
    does after the answer is written."""

    __slots__ = ("encoded", "event_times", "_rows", "_columns", "_names")

    def __init__(self, encoded: np.ndarray, rows: Optional[List[Dict[str, object]]] = None,
                 event_times: Optional[List[Optional[str]]] = None,
                 columns: Optional[Sequence[list]] = None, names: Sequence[str] = ()):
        self.encoded, self.event_times = encoded, event_times
        self._rows, self._columns, self._names = rows, columns, names

    def __len__(self) -> int:
        return len(self.encoded)

    @property
    def rows(self) -> List[Dict[str, object]]:
        if self._rows is None:
            self._rows = [dict(zip(self._names, values)) for values in zip(*self._columns)]
        return self._rows


def seldon_batch(payload, max_rows: int, encoder: features.RowEncoder) -> Batch:
    """A Seldon v1 body as a checked Batch, against the answering version's encoder."""
    return _checked(read_seldon(payload, max_rows, encoder.spec), encoder)


def _checked(rows: List[Dict[str, object]], encoder: features.RowEncoder) -> Batch:
    encoded = check_and_encode(rows, encoder)
    return Batch(encoded, rows, split_event_times(rows))


def check_values(rows: List[Dict[str, object]], spec: Sequence[features.Feature]) -> List[Dict[str, object]]:
    """Rows that carry every feature of `spec`, checked against its rules; the first bad value
    is refused as Feature.check words it."""
    for i, row in enumerate(rows):
        for f in spec:
            problem = f.check(row[f.name])
            if problem:
                raise RequestError(f"row {i}: {problem}", rule=rule_of(problem))
        if EVENT_TIME in row:
            row[EVENT_TIME] = check_event_time(row[EVENT_TIME], f"row {i}")
    return rows


def check_event_time(value, where: str) -> Optional[str]:
    """An event time as sent (ISO 8601 date or date-time; null for unknown), or a RequestError."""
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RequestError(f"{where}: field '{EVENT_TIME}': expected an ISO 8601 date or date-time "
                           f"(e.g. 2011-07-04 or 2011-07-04T08:00:00), got {value!r}", rule="event_time") from None
    return value


def split_event_times(rows: List[Dict[str, object]]) -> Optional[List[Optional[str]]]:
    """Take the event times out of validated rows (in place); None when no row has one."""
    times = [row.pop(EVENT_TIME, None) for row in rows]
    return times if any(t is not None for t in times) else None


def _check_size(n: int, max_rows: int, field: str):
    if n == 0:
        raise RequestError(f"field '{field}': empty batch, send at least one row", rule="empty")
    if n > max_rows:
        raise RequestError(f"field '{field}': {n} rows is more than the limit of {max_rows} per request",
                           status=413, rule="too_large")


def _check_names(names: List[str], field: str, spec: Sequence[features.Feature]):
    expected = [f.name for f in spec]
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected and n != EVENT_TIME]
    if missing:
        raise RequestError(f"field '{field}': missing feature {missing[0]!r}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""), rule="missing")
    if extra:
        raise RequestError(f"field '{field}': unknown feature {extra[0]!r} (the model takes "
                           f"{', '.join(expected)})", rule="unknown_feature")


def rule_of(problem: str) -> str:
    """The rule a Feature.check message names (the 4xx's `rule`, the harvest's counts)."""
    for needle, rule in (("NaN", "not_finite"), ("unknown category", "unknown_category"),
                         ("outside the range", "out_of_range"), ("expected", "type")):
        if needle in problem:
            return rule
    return "invalid"


# --- the Open Inference Protocol (V2): one input tensor per feature ------------------------------
V2_NUMERIC = {"BOOL": False, "UINT8": True, "UINT16": True, "UINT32": True, "UINT64": True, "INT8": True,
              "INT16": True, "INT32": True, "INT64": True, "FP16": True, "FP32": True, "FP64": True}


def v2_batch(inputs, max_rows: int, encoder: features.RowEncoder) -> Batch:
    """V2 request inputs as a checked Batch, against the answering version's encoder.

    The common request (every feature once as a flat [N] tensor of its datatype, no event times,
    every value plainly valid) is checked and encoded in one pass over its tensors, and its rows
    are left to be built after the answer. Any other takes read_v2 and check_and_encode, which
    decide it and word a refusal (a request's parse and checks were a third of our time in the
    server, more than the model)."""
    plan = _v2_plan(encoder)
    n, columns = None, [None] * len(plan)
    if type(inputs) is list and len(inputs) == len(columns):
        for tensor in inputs:
            entry = plan.get(tensor.get("name")) if type(tensor) is dict else None
            if entry is None:
                break
            position, datatypes = entry
            shape, data = tensor.get("shape"), tensor.get("data")
            if (tensor.get("datatype") not in datatypes or type(shape) is not list or len(shape) != 1
                    or type(data) is not list or type(shape[0]) is not int or shape[0] != len(data)
                    or columns[position] is not None):
                break
            if n is None:
                n = len(data)
                if not 0 < n <= max_rows:
                    break
            elif len(data) != n:
                break
            columns[position] = data
        else:
            encoded = encoder.encode_columns(columns)
            if encoded is not None:
                return Batch(encoded, columns=columns, names=encoder.names)
    return _checked(read_v2(inputs, max_rows, encoder.spec), encoder)


def _v2_plan(encoder: features.RowEncoder) -> Dict[str, tuple]:
    """Input name -> (column position, datatypes taken), made once per encoder (one per version)."""
    plan = _V2_PLANS.get(encoder)
    if plan is None:
        numeric = frozenset(d for d, ok in V2_NUMERIC.items() if ok)
        plan = _V2_PLANS[encoder] = {f.name: (i, frozenset({"BYTES"}) if f.types.v2 == "BYTES" else numeric)
                                     for i, f in enumerate(encoder.spec)}
    return plan


_V2_PLANS: "weakref.WeakKeyDictionary[features.RowEncoder, Dict[str, tuple]]" = weakref.WeakKeyDictionary()


def read_v2(inputs, max_rows: int = DEFAULT_MAX_ROWS,
            spec: Sequence[features.Feature] = features.FEATURES) -> List[Dict[str, object]]:
    """Rows from V2 request inputs ([{name, datatype, shape, data}], one per feature, shape [N] or
    [N, 1]; optionally an `event_time` BYTES input); names, datatypes and shapes checked, values
    not yet (check_and_encode). Any numeric datatype is accepted for a numeric or integer-coded
    feature, BYTES for a string one."""
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("field 'inputs': expected one input per feature", rule="malformed")
    by_name: Dict[str, Dict] = {}
    for i, tensor in enumerate(inputs):
        name = tensor.get("name") if isinstance(tensor, dict) else None
        if not isinstance(name, str):
            raise RequestError(f"field 'inputs' item {i}: expected an object with a 'name'", rule="malformed")
        if name in by_name:
            raise RequestError(f"input '{name}': given twice", rule="duplicate")
        by_name[name] = tensor
    if len(by_name) != len(spec) or any(f.name not in by_name for f in spec):
        _check_names(list(by_name), "inputs", spec)  # raises unless the extra input is the event time
    fields = list(spec)
    if EVENT_TIME in by_name:
        fields.append(features.Feature(EVENT_TIME, features.KEY, "string", "when the row happens"))
    columns = [_v2_column(by_name[f.name], f) for f in fields]
    n_rows = len(columns[0])
    for f, values in zip(fields, columns):
        if len(values) != n_rows:
            raise RequestError(f"input '{f.name}': {len(values)} rows, other inputs have {n_rows} "
                               f"(every input needs one value per row)", rule="shape")
    _check_size(n_rows, max_rows, "inputs")
    names = [f.name for f in fields]
    return [dict(zip(names, values)) for values in zip(*columns)]


def _v2_column(tensor: Dict, f: features.Feature) -> list:
    datatype, shape, data = tensor.get("datatype"), tensor.get("shape"), tensor.get("data")
    wanted = f.types.v2
    if not (datatype == wanted if wanted == "BYTES" else V2_NUMERIC.get(datatype)):
        if wanted == "BYTES":
            raise RequestError(f"input '{f.name}': datatype must be BYTES (a category name), got {datatype!r}",
                               rule="datatype")
        raise RequestError(f"input '{f.name}': datatype must be numeric (INT*, UINT*, FP*), got {datatype!r}",
                           rule="datatype")
    if not (type(shape) is list and 1 <= len(shape) <= 2 and type(shape[0]) is int
            and (len(shape) == 1 or (type(shape[1]) is int and shape[1] == 1))):
        raise RequestError(f"input '{f.name}': shape must be [N] or [N, 1], got {shape!r}", rule="shape")
    if not isinstance(data, list):
        raise RequestError(f"input '{f.name}': 'data' must be a list", rule="malformed")
    if len(shape) == 2 or any(type(item) is list for item in data):  # [[v], [v]] or nested data
        data = [v for item in data for v in (item if isinstance(item, list) else [item])]
    if len(data) != shape[0]:
        raise RequestError(f"input '{f.name}': shape says {shape[0]} rows, data has {len(data)} values",
                           rule="shape")
    if wanted == "BYTES" and any(type(v) is bytes for v in data):  # gRPC's bytes_contents, binary tensors
        data = [_text(v, f.name, i) if type(v) is bytes else v for i, v in enumerate(data)]
    return data


def _text(value: bytes, name: str, row: int) -> str:
    """A BYTES element as the text it encodes: the protocol's strings are UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(f"input '{name}': value {row} is not UTF-8 text", rule="encoding") from None


def v2_inputs(rows: List[Dict[str, object]], spec: Sequence[features.Feature] = features.FEATURES,
              event_times: Optional[List[Optional[str]]] = None) -> List[Dict]:
    """Rows as a V2 request's inputs, one [N] tensor per feature (and the rows' event times when
    given): what a client sends, and what read_v2 reads back."""
    inputs = [{"name": f.name, "datatype": f.types.v2, "shape": [len(rows)], "data": [r[f.name] for r in rows]}
              for f in spec]
    if event_times:
        inputs.append({"name": EVENT_TIME, "datatype": "BYTES", "shape": [len(rows)], "data": list(event_times)})
    return inputs
