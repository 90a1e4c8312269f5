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
from typing import Dict, List

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUPS = 20


class JsonlLog:
    def __init__(self, directory: str, name: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 backups: int = DEFAULT_BACKUPS):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.name = name
        self.path = os.path.join(directory, f"{name}.jsonl")
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
        os.replace(self.path, os.path.join(self.directory, f"{self.name}.{stamp}.jsonl"))
        for old in self.rotated()[:-self.backups or None]:
            os.remove(old)
        self._fh = open(self.path, "a", encoding="utf-8")

    def rotated(self) -> List[str]:
        prefix = f"{self.name}."
        names = sorted(n for n in os.listdir(self.directory)
                       if n.startswith(prefix) and n.endswith(".jsonl") and n != f"{self.name}.jsonl")
        return [os.path.join(self.directory, n) for n in names]

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
