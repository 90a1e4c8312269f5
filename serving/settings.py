"""The server's settings, for both protocols: a value given explicitly (a SeldonDeployment
parameter, the model's URI in MLServer's model settings) wins; otherwise its CD4ML_* variable;
otherwise the serving core's default. No TensorFlow here: the Seldon wrapper resolves these in
its constructor, before the workers fork."""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional


def setting(name: str, value=None, cast=str):
    """`value` when given, else the environment variable `name`, cast; None when neither is set."""
    if value not in (None, ""):
        return cast(value)
    raw = os.environ.get(name)
    return cast(raw) if raw not in (None, "") else None


@dataclasses.dataclass(frozen=True)
class CoreSettings:
    registry: str
    version: Optional[str] = None        # CD4ML_SERVING_VERSION: serve only this one
    log_dir: Optional[str] = None        # CD4ML_SERVING_LOG_DIR
    drift_window: Optional[int] = None   # CD4ML_DRIFT_WINDOW
    poll_seconds: Optional[float] = None  # CD4ML_POLL_SECONDS
    max_rows: Optional[int] = None       # CD4ML_MAX_ROWS
    log_flush_seconds: Optional[float] = None  # CD4ML_LOG_FLUSH_SECONDS: batches to a gs:// log dir

    @classmethod
    def resolve(cls, registry=None, version=None, log_dir=None, drift_window=None, poll_seconds=None,
                max_rows=None, log_flush_seconds=None) -> "CoreSettings":
        found = setting("CD4ML_REGISTRY", registry)
        if not found:
            raise ValueError("the server needs a model registry: a 'registry' parameter (the model's URI on "
                             "MLServer) or CD4ML_REGISTRY")
        return cls(found, setting("CD4ML_SERVING_VERSION", version), setting("CD4ML_SERVING_LOG_DIR", log_dir),
                   setting("CD4ML_DRIFT_WINDOW", drift_window, int),
                   setting("CD4ML_POLL_SECONDS", poll_seconds, float), setting("CD4ML_MAX_ROWS", max_rows, int),
                   setting("CD4ML_LOG_FLUSH_SECONDS", log_flush_seconds, float))

    def core_kwargs(self) -> Dict[str, object]:
        """ModelService's arguments: the ones set here, the service's defaults for the rest."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
