"""Which version to serve: model as data, read from the registry directory (local or gs://).

The registry holds one directory per pushed version; a version is complete once MANIFEST.json
exists (ReleaseBundle writes it last), so a half-copied version is never picked. An operator pins a
version by writing `<registry>/SERVING.json` ({"version": ...}; `cd4ml promote/rollback` do that);
without a pin the newest complete version wins. This module is the one statement of that rule: the
server, the `cd4ml models/promote/rollback` commands and the pipeline (whose baseline is the
version served now: components/baseline.py) all call it. Remote paths (gs://) go
through the google-cloud-storage client; local ones through os, so neither the CLI nor the
server needs TensorFlow to read it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from cd4ml.contract import (APPROVAL_FILE, APPROVED, CONTROL_FILES, GUARDED, MANIFEST, NOTHING, PENDING, PIN_FILE,
                            PIPELINE_STATE_DIR, PROMOTED, REJECTED, ROLLOUT_FILE, SHADOW_FILE, WAITING)

__all__ = ["MANIFEST", "PIN_FILE", "SHADOW_FILE"]  # re-exported for the registry's callers

log = logging.getLogger("cd4ml.registry")


def remote(path: str) -> bool:
    return "://" in path


# gs:// through the google-cloud-storage client (cd4ml/logstore.py: anonymous against the local
# emulator), so that the server, the CLI and `cd4ml submit` read a bucket registry without
# TensorFlow, and tests read one on the emulator; other schemes (ram://) through tf.io.gfile.
@functools.lru_cache(maxsize=4)
def _gcs_client(emulator: Optional[str]):
    from cd4ml.logstore import gcs_client

    return gcs_client()


def _gcs(path: str):
    """(bucket, object name) of a gs:// path."""
    from cd4ml.logstore import split_gs

    bucket, name = split_gs(path)
    return _gcs_client(os.environ.get("STORAGE_EMULATOR_HOST")).bucket(bucket), name


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    if path.startswith("gs://"):
        bucket, name = _gcs(path)
        return (bool(name) and bucket.blob(name).exists()) or isdir(path)
    return _gfile().exists(path) if remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    if path.startswith("gs://"):
        bucket, name = _gcs(path)
        return any(True for _ in bucket.list_blobs(prefix=f"{name}/" if name else None, max_results=1))
    return _gfile().isdir(path) if remote(path) else os.path.isdir(path)


def listdir(path: str) -> List[str]:
    if path.startswith("gs://"):
        bucket, name = _gcs(path)
        prefix = f"{name}/" if name else ""
        listing = bucket.list_blobs(prefix=prefix or None, delimiter="/")
        files = [blob.name[len(prefix):] for blob in listing]  # read the pages: prefixes fill in
        return sorted({n for n in files if n} | {p[len(prefix):].rstrip("/") for p in listing.prefixes})
    if not isdir(path):
        return []
    return [n.rstrip("/") for n in (_gfile().listdir(path) if remote(path) else os.listdir(path))]


def read_text(path: str) -> str:
    if path.startswith("gs://"):
        bucket, name = _gcs(path)
        return bucket.blob(name).download_as_text()
    if remote(path):
        with _gfile().GFile(path) as fh:
            return fh.read()
    with open(path) as fh:
        return fh.read()


def order(name: str):
    # Pusher names versions by epoch seconds: compare numerically, names with letters after.
    return (0, int(name), name) if name.isdigit() else (1, 0, name)


def versions(registry: str) -> List[str]:
    """Every version directory, oldest first (complete or not)."""
    names = [n for n in listdir(registry)
             if not n.startswith(".") and not n.endswith(".tmp") and isdir(os.path.join(registry, n))]
    return sorted(names, key=order)


def is_complete(registry: str, version: str) -> bool:
    return exists(os.path.join(registry, version, MANIFEST))


def complete_versions(registry: str) -> List[str]:
    return [v for v in versions(registry) if is_complete(registry, v)]


def _json_file(path: str) -> Dict:
    if not exists(path):
        return {}
    try:
        body = json.loads(read_text(path))
        return body if isinstance(body, dict) else {}
    except (ValueError, OSError) as err:
        log.error("cd4ml serving: ignoring %s: %s", path, err)
        return {}


def approval(registry: str, version: str) -> Optional[str]:
    """A version's approval: None when it needs none (pushed under CD4ML_PROMOTION=auto), else
    pending, approved or rejected (APPROVAL.json, written by `cd4ml approve/reject`)."""
    decided = _json_file(os.path.join(registry, version, APPROVAL_FILE)).get("decision")
    if decided in (APPROVED, REJECTED):
        return decided
    return PENDING if _json_file(os.path.join(registry, version, MANIFEST)).get("approval") == PENDING else None


def rollouts(registry: str) -> Dict[str, Dict]:
    """{version: its rollout record} from ROLLOUT.json (cd4ml/rollout.py writes it)."""
    found = _json_file(os.path.join(registry, ROLLOUT_FILE)).get("versions", {})
    return found if isinstance(found, dict) else {}


def rollout_state(registry: str, version: str, decided: Optional[Dict[str, Dict]] = None) -> Optional[str]:
    """None for a version pushed under CD4ML_ROLLOUT=immediate; for a guarded one, waiting (for
    its canary), canary, promoted, rolled_back or superseded."""
    if _json_file(os.path.join(registry, version, MANIFEST)).get("rollout") != GUARDED:
        return None
    decided = rollouts(registry) if decided is None else decided
    return str(decided.get(version, {}).get("state", WAITING))


def servable(registry: str, version: str, decided: Optional[Dict[str, Dict]] = None) -> bool:
    """Whether the server may pick a complete version by itself: not waiting for approval, not
    rejected, and (if it was pushed guarded) promoted from its canary."""
    return approval(registry, version) in (None, APPROVED) and \
        rollout_state(registry, version, decided) in (None, PROMOTED)


def servable_versions(registry: str) -> List[str]:
    decided = rollouts(registry)
    return [v for v in complete_versions(registry) if servable(registry, v, decided)]


def control_stamp(registry: str) -> Tuple:
    """What the control files beside the versions (pin, shadow, experiment, rollout) look like
    now, cheaply: one stat each here, one listing of the registry's top level in a bucket. A
    server polls it every fraction of a second and re-reads the registry when it changes."""
    if registry.startswith("gs://"):
        bucket, name = _gcs(registry)
        prefix = f"{name}/" if name else ""
        listing = bucket.list_blobs(prefix=prefix or None, delimiter="/")
        return tuple(sorted((b.name, b.generation) for b in listing if b.name[len(prefix):] in CONTROL_FILES))
    stamps = []
    for control in CONTROL_FILES:
        path = os.path.join(registry, control)
        if remote(path):
            stamps.append((control, _gfile().stat(path).mtime_nsec if _gfile().exists(path) else None))
        else:
            try:
                found = os.stat(path)
                stamps.append((control, found.st_mtime_ns, found.st_size, found.st_ino))
            except OSError:
                stamps.append((control, None))
    return tuple(stamps)


def read_shadow(registry: str) -> Optional[str]:
    """The shadow (challenger) version from SHADOW.json, or None."""
    path = os.path.join(registry, SHADOW_FILE)
    if not exists(path):
        return None
    try:
        shadow = json.loads(read_text(path))
        return str(shadow["version"]) if isinstance(shadow, dict) and shadow.get("version") else None
    except (ValueError, OSError) as err:
        log.error("cd4ml serving: ignoring %s: %s", path, err)
        return None


def read_pin(registry: str) -> Optional[Dict]:
    """The pin in SERVING.json ({"version", "reason", ...}), or None. An unreadable pin file is
    logged and ignored: a typo in it must not take the server down."""
    path = os.path.join(registry, PIN_FILE)
    if not exists(path):
        return None
    try:
        pin = json.loads(read_text(path))
        return pin if isinstance(pin, dict) and pin.get("version") else None
    except (ValueError, OSError) as err:
        log.error("cd4ml serving: ignoring %s: %s", path, err)
        return None


def target(registry: str, pinned: Optional[str] = None) -> Tuple[Optional[str], str]:
    """(version to serve, why): an explicit pin, else SERVING.json, else the newest complete one."""
    if pinned:
        return pinned, "pinned by --version"
    pin = read_pin(registry)
    if pin:
        reason = f" ({pin['reason']})" if pin.get("reason") else ""
        return str(pin["version"]), f"pinned by {PIN_FILE}{reason}"
    # Newest first, stopping at the first servable one: each look reads a version's files.
    decided = rollouts(registry)
    for version in reversed(versions(registry)):
        if is_complete(registry, version) and servable(registry, version, decided):
            return version, "newest complete version"
    return None, f"no complete, approved version (with {MANIFEST}) under {registry}"


# --- the pipeline's baseline: what serves now (components/baseline.py) ----------------------------
# The run parameter that keys ServingBaseline's cache, and the manifest field recording it.
SERVING_STATE = "serving_state"


def manifest(registry: str, version: str) -> Dict:
    return _json_file(os.path.join(registry, version, MANIFEST))


def baseline_version(registry: str, candidate_uri: str) -> Optional[str]:
    """The version the candidate is compared with: the one serving, unless that one *is* the
    candidate, in which case the one it was itself compared with (None: compare with nothing)."""
    served, _ = target(registry)
    if served is None:
        return None
    pushed = manifest(registry, served)
    if pushed.get("model") == candidate_uri:
        earlier = pushed.get("baseline")
        return earlier if earlier and is_complete(registry, earlier) else None
    return served


def serving_state(registry: str, span: Optional[int]) -> str:
    """What the registry serves, as the baseline's run parameter: the cache key of ServingBaseline.

    The version serving now; but when that version was trained on this run's span, the state its
    own run saw, so that a rerun of the same inputs has the same key as that run and stays
    cached (its candidate is that version: the baseline would be the same). Where the inputs did
    change, the Trainer's new model is ServingBaseline's input, so it reruns whatever this says.
    """
    served, _ = target(registry)
    if served is None:
        return NOTHING
    pushed = manifest(registry, served)
    if span is not None and pushed.get("span") == span and pushed.get(SERVING_STATE):
        return str(pushed[SERVING_STATE])
    return served


# --- the latest tuning the pipeline published (components/tuning.py) -------------------------------
TUNED_DIR = "hyperparameters"


def tuned_dir(registry: str) -> str:
    return os.path.join(registry, PIPELINE_STATE_DIR, TUNED_DIR)


def latest_tuned(registry: str) -> Optional[Tuple[str, Dict[str, Any]]]:
    """(file name, {"config": keras_tuner config, "tuned_by": the Tuner output's URI}) of the
    newest published tuning, or None."""
    folder = tuned_dir(registry)
    names = sorted(n for n in listdir(folder) if n.startswith("tuned-") and n.endswith(".json"))
    if not names:
        return None
    return names[-1], json.loads(read_text(os.path.join(folder, names[-1])))


def hyperparameters_state(registry: str) -> str:
    """The run parameter that keys TunedHyperparameters' cache: the newest published tuning."""
    found = latest_tuned(registry)
    return found[0] if found else NOTHING
