"""Append-only JSONL logs (predictions, feedback, drift) with size-based rotation.

The prediction log is the raw material of monitoring and retraining, so every line is a complete
JSON object, written with one write() under a lock and flushed: a crash loses at most the line in
flight, never corrupts earlier ones. Rotated files keep a UTC timestamp in their name, so a reader
globbing `<name>*.jsonl` sees every line once, in order.
"""

from __future__ import annotations

import datetime
import json
import os
import threading
from typing import Dict, List, Optional

from cd4ml import contract

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUPS = 20
DEFAULT_FIND_BYTES = 16 * 1024 * 1024


class JsonlLog:
    def __init__(self, directory: str, name: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.name = name
        self.path = contract.log_file(directory, name)
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: Dict) -> None:
        line = json.dumps(record, separators=(",", ":"), default=_plain) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            if self._fh.tell() >= self.max_bytes:
                self._rotate()

    def _rotate(self):
        self._fh.close()
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        os.replace(self.path, contract.rotated_file(self.directory, self.name, stamp))
        for old in self.rotated()[:-self.backups or None]:
            os.remove(old)
        self._fh = open(self.path, "a", encoding="utf-8")

    def find(self, field: str, value: str, max_bytes: int = DEFAULT_FIND_BYTES) -> Optional[Dict]:
        """The newest record whose `field` equals the string `value`, from the tails of the current
        file and the newest rotated one (at most `max_bytes` of each); None when absent.

        Every worker of a server appends to the same file, so a record one worker wrote can be
        found by another: that is how feedback joins a prediction another worker answered.
        """
        needle = json.dumps({field: value}, separators=(",", ":"))[1:-1]
        for path in [self.path] + self.rotated()[-1:]:
            try:
                with open(path, "rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    start = max(0, fh.tell() - max_bytes)
                    fh.seek(start)
                    lines = fh.read().decode("utf-8", errors="replace").splitlines()
            except FileNotFoundError:  # rotated away by another worker meanwhile
                continue
            for line in reversed(lines[1:] if start else lines):  # a cut first line is skipped
                if needle in line:
                    try:
                        record = json.loads(line)
                    except ValueError:  # a line still being written
                        continue
                    if record.get(field) == value:
                        return record
        return None

    def rotated(self) -> List[str]:
        return contract.rotated_files(self.directory, self.name)

    def close(self):
        with self._lock:
            self._fh.close()


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
