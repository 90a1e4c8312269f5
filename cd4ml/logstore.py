"""Where the server's logs live and how every reader gets them back: a local folder or a gs:// prefix.

The server writes its prediction, feedback and drift logs; the drift trigger, the harvest, `cd4ml
compare` and the demo read them. On one machine that is a folder of JSONL files that every worker
appends to (serving/logs.py: JsonlLog). On a cluster each replica has its own disk, so the server
writes batches of lines as objects under a `gs://bucket/prefix` shared by every replica
(serving/logs.py: GcsJsonlLog), named so that they sort in time order:

    gs://bucket/prefix/<log name>/<UTC stamp>-<host>-<pid>-<sequence>.jsonl

This module is the one reader of both layouts (and the small JSON documents kept beside them: the
harvest ledger), and the one place that makes a google-cloud-storage client (anonymous against
STORAGE_EMULATOR_HOST, the local emulator of the demo and the tests). It needs no TensorFlow;
the serving layer may use it like the contract.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
from typing import Dict, Iterator, List, Optional, Tuple

from cd4ml.contract import FEEDBACK_LOG, PREDICTIONS_LOG, parse_ts, read_jsonl, rotated_files, log_file


def gcs_client(project: Optional[str] = None):
    """google-cloud-storage client; anonymous against STORAGE_EMULATOR_HOST (the local emulator)."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "cd4ml-local", credentials=AnonymousCredentials())
    return storage.Client(project=project or None)


def split_gs(location: str) -> Tuple[str, str]:
    """`gs://bucket/some/prefix/` -> ("bucket", "some/prefix") (no trailing slash)."""
    bucket, _, prefix = location[len("gs://"):].partition("/")
    return bucket, prefix.strip("/")


def gcs_object_name(prefix: str, name: str, stamp: str, writer: str, sequence: int) -> str:
    """A batch of log lines: sorts by time, and no two writers (host-pid) share a name."""
    return "/".join(p for p in (prefix, name, f"{stamp}-{writer}-{sequence:06d}.jsonl") if p)


@dataclasses.dataclass
class ReadStats:
    """What a read of a log saw: the files or objects, and lines that were not JSON (a crash)."""
    sources: List[str] = dataclasses.field(default_factory=list)
    torn_lines: int = 0


class LogStore:
    """The server's logs at `location` (a folder or gs://bucket/prefix), read-only but for ledgers."""

    def __init__(self, location: str, client=None):
        self.location = location.rstrip("/")
        self.remote = location.startswith("gs://")
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = gcs_client()
        return self._client

    def sources(self, name: str) -> List[str]:
        """The files (or objects) of one log, oldest first."""
        if self.remote:
            bucket, prefix = split_gs(self.location)
            folder = "/".join(p for p in (prefix, name) if p) + "/"
            names = sorted(b.name for b in self.client.list_blobs(bucket, prefix=folder) if b.name.endswith(".jsonl"))
            return [f"gs://{bucket}/{n}" for n in names]
        current = log_file(self.location, name)
        return rotated_files(self.location, name) + ([current] if os.path.exists(current) else [])

    def read(self, name: str, stats: Optional[ReadStats] = None) -> Iterator[Dict]:
        """Every record of a log, oldest source first; a torn line is counted in `stats`, never raised."""
        stats = stats if stats is not None else ReadStats()
        for source in self.sources(name):
            stats.sources.append(source)
            for line in self.lines(source):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    stats.torn_lines += 1
                    continue
                if isinstance(record, dict):
                    yield record
                else:
                    stats.torn_lines += 1

    def lines(self, source: str) -> List[str]:
        if source.startswith("gs://"):
            bucket, name = split_gs(source)
            try:
                return self.client.bucket(bucket).blob(name).download_as_bytes().decode("utf-8", "replace").splitlines()
            except Exception:  # noqa: BLE001 - deleted between list and read: nothing to read
                return []
        try:
            with open(source, encoding="utf-8", errors="replace") as fh:
                return fh.read().splitlines()
        except FileNotFoundError:  # rotated away meanwhile
            return []

    # --- small JSON documents beside the logs (the harvest ledger) --------------------------------
    def documents(self, folder: str) -> List[Tuple[str, Dict]]:
        """(path, document) for every *.json under `folder`, in name order; unreadable ones skipped."""
        found = []
        if self.remote:
            bucket, prefix = split_gs(self.location)
            for blob in sorted(self.client.list_blobs(bucket, prefix=f"{prefix}/{folder}/".lstrip("/")),
                               key=lambda b: b.name):
                if blob.name.endswith(".json"):
                    try:
                        found.append((f"gs://{bucket}/{blob.name}", json.loads(blob.download_as_bytes())))
                    except ValueError:
                        continue
            return found
        directory = os.path.join(self.location, folder)
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            if name.endswith(".json"):
                try:
                    with open(os.path.join(directory, name)) as fh:
                        found.append((os.path.join(directory, name), json.load(fh)))
                except ValueError:
                    continue
        return found

    def put_document(self, folder: str, name: str, document: Dict) -> str:
        text = json.dumps(document, indent=1, sort_keys=True)
        if self.remote:
            bucket, prefix = split_gs(self.location)
            target = "/".join(p for p in (prefix, folder, name) if p)
            self.client.bucket(bucket).blob(target).upload_from_string(text, content_type="application/json")
            return f"gs://{bucket}/{target}"
        directory = os.path.join(self.location, folder)
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, name)
        with open(path + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(path + ".tmp", path)
        return path


def read_records(location: str, name: str) -> Iterator[Dict]:
    """Every record of one log at `location` (folder or gs:// prefix)."""
    if location.startswith("gs://"):
        return LogStore(location).read(name)
    return read_jsonl(location, name)


def labelled_requests(location: str, since: Optional[datetime.datetime] = None,
                      store: Optional[LogStore] = None) -> List[Tuple[Dict, Dict]]:
    """(prediction record, feedback record) for every answered request whose truth came back,
    in feedback order: joined by request id, one truth per predicted row; feedback scored for a
    shadow challenger is left out (it repeats the champion's truth), and so is feedback older
    than `since`. (The harvest does the same join, counting what it leaves out.)"""
    store = store or LogStore(location)
    feedback = [f for f in store.read(FEEDBACK_LOG)
                if f.get("request_id") and not f.get("shadow") and (since is None or parse_ts(f["ts"]) > since)]
    if not feedback:
        return []
    wanted = {f["request_id"] for f in feedback}
    answered = {p["request_id"]: p for p in store.read(PREDICTIONS_LOG) if p.get("request_id") in wanted}
    pairs = [(answered.get(f["request_id"]), f) for f in feedback]
    return [(p, f) for p, f in pairs if p is not None and len(p.get("rows", [])) == len(f.get("truth", []))]
