"""Google Cloud Storage for the triggers and the demo: the bucket helpers and the local emulator.

The real google-cloud-storage client everywhere (cd4ml.logstore.gcs_client, shared with the
server's log sink); against `STORAGE_EMULATOR_HOST` (the local gcp-storage-emulator of the demo
and the tests) it goes anonymous, as the emulator expects.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, List, Optional, Tuple

from cd4ml.logstore import gcs_client
from serving.launch import free_port


def parse_bucket(bucket: str) -> str:
    """`gs://name/` or `name` -> `name`."""
    return bucket[len("gs://"):].strip("/") if bucket.startswith("gs://") else bucket.strip("/")


def client(project: Optional[str] = None):
    """google-cloud-storage client; anonymous against STORAGE_EMULATOR_HOST (the local emulator)."""
    return gcs_client(project)


def remote_spans(client, data_root: str) -> List[int]:
    """The span numbers under a gs:// data root (`<root>/span-N/...`)."""
    from pipelines import spans

    bucket, _, root = data_root[len("gs://"):].partition("/")
    root = root.strip("/")
    found = set()
    for blob in client.bucket(bucket).list_blobs(prefix=(root + "/") if root else None):
        m = spans.SPAN_DIR.match(blob.name[len(root) + 1 if root else 0:].split("/")[0])
        if m:
            found.add(int(m.group(1)))
    return sorted(found)


def next_span(data_root: str, recorded, client=None) -> int:
    """One past every span in the data root and every span a trigger recorded (`recorded`), so
    a number is never reused, not even one whose data was quarantined."""
    from pipelines import spans

    used = set(recorded)
    used |= set(remote_spans(client or gcs_client(), data_root) if data_root.startswith("gs://")
                else spans.list_spans(data_root))
    return max(used, default=0) + 1


def ensure_bucket(bucket: str, gcs=None):
    gcs = gcs or client()
    bucket = parse_bucket(bucket)
    return gcs.lookup_bucket(bucket) or gcs.create_bucket(bucket)


def upload(path: str, bucket: str, prefix: str, name: Optional[str] = None, gcs=None) -> Tuple[str, int]:
    """Upload a file under `prefix` (what `cd4ml drop` does); returns (gs:// uri, generation)."""
    bucket = parse_bucket(bucket)
    gcs = gcs or client()
    target = prefix + (name or os.path.basename(path))
    blob = gcs.bucket(bucket).blob(target)
    blob.upload_from_filename(path, content_type="text/csv")
    return f"gs://{bucket}/{target}", int(blob.generation)


@contextlib.contextmanager
def local_emulator() -> Iterator[str]:
    """gcp-storage-emulator in this process on a free loopback port, STORAGE_EMULATOR_HOST set
    while it runs (the demo's bucket and the tests')."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        server.stop()
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old
