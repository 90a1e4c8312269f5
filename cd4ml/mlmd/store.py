"""The ML Metadata store: how to connect, whether it exists, and how to read values out of it.

`CD4ML_METADATA_PATH` is either a SQLite file (the embedded default) or a
`mysql://user:password@host:port/database` URL (a shared store, as on a Kubeflow cluster).
Everything in `cd4ml.mlmd` goes through the MLMD client API (no SQL), so it works the same on both;
nothing here prints a password (`describe` is what messages show).
"""

from __future__ import annotations

import datetime
import os
import urllib.parse

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

STATE_NAMES = {
    metadata_store_pb2.Execution.UNKNOWN: "unknown",
    metadata_store_pb2.Execution.NEW: "new",
    metadata_store_pb2.Execution.RUNNING: "running",
    metadata_store_pb2.Execution.COMPLETE: "ran",
    metadata_store_pb2.Execution.FAILED: "failed",
    metadata_store_pb2.Execution.CACHED: "cached",
    metadata_store_pb2.Execution.CANCELED: "canceled",
}


def sqlite_config(path: str) -> metadata_store_pb2.ConnectionConfig:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return config


def connection_config(spec: str) -> metadata_store_pb2.ConnectionConfig:
    """The MLMD connection for CD4ML_METADATA_PATH: a SQLite file (the embedded default) or
    `mysql://user:password@host:port/database` (a shared store, as on a Kubeflow cluster)."""
    if not is_url(spec):
        return sqlite_config(spec)
    url = urllib.parse.urlparse(spec)
    config = metadata_store_pb2.ConnectionConfig()
    config.mysql.host = url.hostname or "localhost"
    config.mysql.port = url.port or 3306
    config.mysql.database = url.path.lstrip("/")
    config.mysql.user = urllib.parse.unquote(url.username or "")
    config.mysql.password = urllib.parse.unquote(url.password or "")
    return config


def is_url(spec: str) -> bool:
    return spec.startswith("mysql://")


def open_store(spec: str, create: bool = True) -> metadata_store.MetadataStore:
    """Connect; a SQLite file's folder is created unless `create` is False."""
    if create and not is_url(spec):
        os.makedirs(os.path.dirname(os.path.abspath(spec)), exist_ok=True)
    return metadata_store.MetadataStore(connection_config(spec))


def exists(spec: str) -> bool:
    """Whether there can be anything to read: a SQLite file that exists, or any MySQL URL (a server
    is asked, not guessed at; a dead one raises when opened)."""
    return is_url(spec) or os.path.exists(spec)


def describe(spec: str) -> str:
    """The store for a message: a MySQL URL without its password."""
    if not is_url(spec):
        return spec
    url = urllib.parse.urlparse(spec)
    user = f"{urllib.parse.unquote(url.username)}@" if url.username else ""
    port = f":{url.port}" if url.port else ""
    return f"mysql://{user}{url.hostname or 'localhost'}{port}{url.path}"


def prop(artifact: metadata_store_pb2.Artifact, name: str, default=None):
    """A (custom) property value of an artifact or execution, whatever its value type."""
    for props in (artifact.custom_properties, artifact.properties):
        if name in props:
            value = props[name]
            kind = value.WhichOneof("value")
            if kind == "struct_value":
                from google.protobuf import json_format

                return json_format.MessageToDict(value.struct_value)
            return getattr(value, kind) if kind else default
    return default


def timestamp(value: int) -> str:
    """An MLMD time (milliseconds since the epoch) as ISO 8601 UTC; "" for none."""
    if not value:
        return ""
    return datetime.datetime.fromtimestamp(value / 1000, datetime.timezone.utc).isoformat(timespec="seconds")


def plain(value):
    """Property values made JSON-friendly (struct values decoded, bytes as text)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def event_key(event: metadata_store_pb2.Event) -> str:
    """The input or output key of an event ('examples', 'model', ...)."""
    for step in event.path.steps:
        if step.HasField("key"):
            return step.key
    return ""
