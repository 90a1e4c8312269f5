"""Append-only JSONL logs (predictions, feedback, drift): a local file, or batches in a bucket.

The prediction log is the raw material of monitoring and retraining, so every line is a complete
JSON object. Locally (JsonlLog) each line is written with one write() under a lock and flushed: a
crash loses at most the line in flight, never corrupts earlier ones; rotated files keep a UTC
timestamp in their name, so a reader globbing `<name>*.jsonl` sees every line once, in order.

On a cluster every replica writes to one `gs://` prefix (GcsJsonlLog): lines are batched and each
batch becomes one object (cd4ml.logstore names and reads them), flushed every `flush_seconds` or
`batch_lines` lines, whichever comes first, and at shutdown. A replica that crashes loses the
batch it had not flushed yet, at most those few seconds of lines (docs/loop.md).
"""

from __future__ import annotations

import atexit
import datetime
import functools
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Dict, List, Optional

import orjson

from cd4ml import contract, logstore

log = logging.getLogger("cd4ml.serving")

DEFAULT_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_BACKUPS = 20
DEFAULT_FIND_BYTES = 16 * 1024 * 1024
# A bucket log flushes at least this often (a crashed replica loses at most these seconds of lines).
DEFAULT_FLUSH_SECONDS = 2.0
DEFAULT_BATCH_LINES = 1000


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
        self._fh = self._open()

    def _open(self):
        # Unbuffered bytes in append mode: a line is one write() call that lands at the end of the
        # file whichever worker of the server writes it, with no text layer to encode through and
        # nothing to flush (a third less time per line than a flushed text file).
        return open(self.path, "ab", buffering=0)

    def write(self, record: Dict) -> None:
        line = memoryview(json_bytes(record))
        with self._lock:
            while line:  # a regular file takes the whole line at once; a short write is finished
                line = line[self._fh.write(line):]
            if self._fh.tell() >= self.max_bytes:
                self._rotate()

    def _rotate(self):
        self._fh.close()
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        os.replace(self.path, contract.rotated_file(self.directory, self.name, stamp))
        for old in self.rotated()[:-self.backups or None]:
            os.remove(old)
        self._fh = self._open()

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


class GcsJsonlLog:
    """One log as batches of lines under `gs://bucket/prefix/<name>/`, shared by every replica."""

    def __init__(self, location: str, name: str, flush_seconds: float = DEFAULT_FLUSH_SECONDS,
                 batch_lines: int = DEFAULT_BATCH_LINES,
                 client=None):
        self.location, self.name = location.rstrip("/"), name
        self.bucket_name, self.prefix = logstore.split_gs(location)
        self.flush_seconds, self.batch_lines = flush_seconds, batch_lines
        self._client = client or logstore.gcs_client()
        self._bucket = self._client.bucket(self.bucket_name)
        self._writer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._sequence = 0
        self._lines: List[str] = []
        self._lock = threading.Lock()        # the buffer
        self._upload_lock = threading.Lock()  # one upload at a time, in order
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_periodically, name=f"cd4ml-log-{name}", daemon=True)
        self._flusher.start()
        # MLServer stops on SIGTERM without unloading its models: flush what is left at exit too.
        atexit.register(self.close)

    def write(self, record: Dict) -> None:
        line = json_line(record)
        with self._lock:
            self._lines.append(line)
            full = len(self._lines) >= self.batch_lines
        if full:
            self.flush()

    def flush(self) -> Optional[str]:
        """Upload the lines buffered so far as one object; its gs:// name, None when none were."""
        with self._upload_lock:
            with self._lock:
                lines, self._lines = self._lines, []
            if not lines:
                return None
            self._sequence += 1
            stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
            target = logstore.gcs_object_name(self.prefix, self.name, stamp, self._writer, self._sequence)
            try:
                self._bucket.blob(target).upload_from_string("".join(lines), content_type="application/jsonl")
            except Exception:  # noqa: BLE001 - keep the lines for the next try, keep serving
                log.exception("cd4ml serving: could not write %d %s log lines to gs://%s; will retry",
                              len(lines), self.name, self.bucket_name)
                with self._lock:
                    self._lines[:0] = lines
                return None
            return f"gs://{self.bucket_name}/{target}"

    def _flush_periodically(self):
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def find(self, field: str, value: str, max_objects: int = 50) -> Optional[Dict]:
        """The newest record whose `field` equals `value`: this replica's unflushed lines first,
        then the newest `max_objects` batches every replica flushed (feedback may reach another
        replica than the one that answered)."""
        with self._lock:
            pending = list(self._lines)
        for line in reversed(pending):
            record = json.loads(line)
            if record.get(field) == value:
                return record
        store = logstore.LogStore(self.location, client=self._client)
        for source in reversed(store.sources(self.name)[-max_objects:]):
            for line in reversed(store.lines(source)):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get(field) == value:
                    return record
        return None

    def close(self):
        self._stop.set()
        self.flush()


def open_log(location: str, name: str, max_bytes: Optional[int] = None, flush_seconds: Optional[float] = None):
    """The log `name` at `location`: batched objects for a gs:// prefix, else a local JSONL file."""
    if location.startswith("gs://"):
        return GcsJsonlLog(location, name, **({"flush_seconds": flush_seconds} if flush_seconds else {}))
    return JsonlLog(location, name, **({"max_bytes": max_bytes} if max_bytes else {}))


def json_bytes(record: Dict) -> bytes:
    """One record as one compact JSON line, UTF-8. orjson (Apache-2.0 or MIT) writes the same text
    as json.dumps with compact separators in a quarter of the time; the prediction log writes a
    line per request, so this is on every answer's path. NaN and infinity become null (valid JSON)."""
    return orjson.dumps(record, default=_plain, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)


def json_line(record: Dict) -> str:
    return json_bytes(record).decode()


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def now() -> str:
    """UTC now as `datetime.isoformat(timespec="milliseconds")` writes it (2011-07-04T08:00:00.123+00:00),
    in half the time: every answered request is stamped, and a second's text is made once."""
    t = time.time()
    second = int(t)
    return f"{_second_text(second)}.{int((t - second) * 1000):03d}+00:00"


@functools.lru_cache(maxsize=2)
def _second_text(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
