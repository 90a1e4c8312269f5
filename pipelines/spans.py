"""Span directories in the data root (`span-N/*.csv`) and the checks that fail fast on them.

TFX reads spans itself; these checks only catch what would otherwise surface as an obscure Beam
stack trace (no file, an empty file, a header without the required columns) and name the file
and column instead. Everything subtler (types, ranges, unseen categories) is ExampleValidator's
job, against the curated schema.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from typing import List, Optional

from components import features

SPAN_DIR = re.compile(r"^span-(\d+)$")


class SpanError(ValueError):
    """A span that cannot be read at all; the message names the file and the rule."""


class NoSuchSpan(SpanError):
    """The span asked for (or any span) is not in the data root: there is nothing to run on."""


def list_spans(data_root: str) -> List[int]:
    """The span numbers under a data root: a local folder or, for `cd4ml submit`, a gs:// prefix."""
    if "://" in data_root:
        from components import registry as reg  # gfile for remote paths, os for local ones

        return sorted(int(m.group(1)) for m in map(SPAN_DIR.match, reg.listdir(data_root)) if m)
    if not os.path.isdir(data_root):
        return []
    spans = []
    for name in os.listdir(data_root):
        m = SPAN_DIR.match(name)
        if m and os.path.isdir(os.path.join(data_root, name)):
            spans.append(int(m.group(1)))
    return sorted(spans)


def span_dir(data_root: str, span: int) -> str:
    return os.path.join(data_root, f"span-{span}")


def resolve_span(data_root: str, span: Optional[int]) -> int:
    spans = list_spans(data_root)
    if not spans:
        raise NoSuchSpan(f"{data_root}: no span-N directories (expected e.g. {data_root}/span-1/*.csv)")
    if span is None:
        return spans[-1]
    if span not in spans:
        raise NoSuchSpan(f"span {span} does not exist in {data_root} (spans there: "
                         f"{', '.join(map(str, spans))}; expected {span_dir(data_root, span)}/*.csv)")
    return span


def check_csv(path: str) -> int:
    """Check one CSV's header and that it has rows; returns the number of data rows."""
    if os.path.getsize(path) == 0:
        raise SpanError(f"{path}: the file is empty (rule: a span file has a header and at least one row)")
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None) or []
        missing = [c for c in features.REQUIRED_COLUMNS if c not in header]
        if missing:
            raise SpanError(f"{path}: missing required column(s) {', '.join(missing)} "
                            f"(rule: every column of components/features.py but the optional "
                            f"{', '.join(c.name for c in features.CARRIED if c.optional)} is required)")
        rows = 0
        for lineno, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise SpanError(f"{path}:{lineno}: {len(row)} fields where the header has {len(header)}")
            rows += 1
    if rows == 0:
        raise SpanError(f"{path}: header only, no data rows (rule: at least one row)")
    return rows


def check_span(data_root: str, span: int) -> int:
    files = sorted(glob.glob(os.path.join(span_dir(data_root, span), "*.csv")))
    if not files:
        raise SpanError(f"{span_dir(data_root, span)}: no *.csv file in the span")
    return sum(check_csv(f) for f in files)
