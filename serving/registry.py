"""Which version to serve: model as data, read from the registry directory (local or gs://).

The registry holds one directory per pushed version; a version is complete once MANIFEST.json
exists (ReleaseBundle writes it last), so a half-copied version is never picked. An operator pins a
version by writing `<registry>/SERVING.json` ({"version": ...}; `cd4ml promote/rollback` do that);
without a pin the newest complete version wins. Only tf.io.gfile is used, so gs:// works as-is.
"""

from __future__ import annotations

import json
import logging
import os
from typing import List, Optional, Tuple

import tensorflow as tf

MANIFEST = "MANIFEST.json"  # same name as components.release.MANIFEST (which needs TFX to import)
PIN_FILE = "SERVING.json"

log = logging.getLogger("cd4ml.serving")


def _order(name: str):
    # Pusher names versions by epoch seconds: compare numerically, names with letters after.
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def versions(registry: str) -> List[str]:
    """Every version directory, oldest first (complete or not)."""
    if not tf.io.gfile.isdir(registry):
        return []
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(registry)]
    names = [n for n in names if not n.startswith(".") and tf.io.gfile.isdir(os.path.join(registry, n))]
    return sorted(names, key=_order)


def is_complete(registry: str, version: str) -> bool:
    return tf.io.gfile.exists(os.path.join(registry, version, MANIFEST))


def complete_versions(registry: str) -> List[str]:
    return [v for v in versions(registry) if is_complete(registry, v)]


def read_pin(registry: str) -> Optional[str]:
    """The pinned version from SERVING.json, or None. An unreadable pin file is logged and ignored."""
    path = os.path.join(registry, PIN_FILE)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as fh:
            version = json.load(fh).get("version")
        return str(version) if version else None
    except (ValueError, AttributeError, tf.errors.OpError) as err:
        log.error("cd4ml serving: ignoring %s: %s", path, err)
        return None


def target(registry: str, pinned: Optional[str] = None) -> Tuple[Optional[str], str]:
    """(version to serve, why): an explicit pin, else SERVING.json, else the newest complete one."""
    if pinned:
        return pinned, "pinned by --version"
    pin = read_pin(registry)
    if pin:
        return pin, f"pinned by {PIN_FILE}"
    complete = complete_versions(registry)
    if complete:
        return complete[-1], "newest complete version"
    return None, f"no complete version (with {MANIFEST}) under {registry}"
