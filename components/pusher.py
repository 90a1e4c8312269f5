"""Pusher's executor with version names that two concurrent runs cannot share.

TFX's filesystem Pusher names a version by the current epoch second and, when that directory
already exists, skips the copy but still reports the push as done. Two runs pushing within the
same second (a scheduled run and a drop, say) would then share one version directory, and the
second run's release bundle would describe the first run's model. Here each push first claims
its name: the next free second, reserved by creating `<registry>/.<version>.claim` exclusively
(O_EXCL, atomic on a local or mounted filesystem); TFX then writes that version as usual. Names
stay epoch seconds, so "newest" keeps its meaning. A gs:// registry has no atomic create through
tf.io.gfile: there the claim is a check, and one pushing pipeline per registry is the rule
(docs/operations.md).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List

from tfx import types
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.utils import proto_utils

from cd4ml.contract import CLAIM_SUFFIX


def claim_version(registry: str, now: float) -> str:
    """The first epoch second from `now` on that no version or claim in the registry uses."""
    version = int(now)
    while True:
        name = str(version)
        claim = os.path.join(registry, f".{name}{CLAIM_SUFFIX}")
        if not fileio.exists(os.path.join(registry, name)):
            if "://" in registry:
                if not fileio.exists(claim):
                    with fileio.open(claim, "w") as fh:
                        fh.write(name)
                    return name
            else:
                fileio.makedirs(registry)
                try:
                    os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    return name
                except FileExistsError:
                    pass
        version += 1


class _Clock:
    """Stands in for the `time` module inside TFX's Pusher executor for one push."""

    def __init__(self, version: str):
        self._version = float(version)

    def time(self) -> float:
        return self._version


class Executor(tfx_pusher.Executor):
    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties["push_destination"], destination)
        registry = destination.filesystem.base_directory
        version = claim_version(registry, time.time())
        tfx_pusher.time = _Clock(version)
        try:
            super().Do(input_dict, output_dict, exec_properties)
        finally:
            tfx_pusher.time = time
            claim = os.path.join(registry, f".{version}{CLAIM_SUFFIX}")
            if fileio.exists(claim):
                fileio.remove(claim)
