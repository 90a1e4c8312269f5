"""How to start the server: `seldon-core-microservice` from .venv-serving with our model class.

Shared by `cd4ml serve`, the tests and the benchmark, so all three start the same thing. The
serving environment is separate from the pipeline one (seldon-core 1.18.2 pins clash with TFX:
stack notes), hence a path to another venv rather than an import.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CLASS = "serving.seldon_model.BikeDemandModel"


class ServingEnvMissing(RuntimeError):
    pass


def serving_venv() -> str:
    return os.environ.get("CD4ML_SERVING_VENV") or os.path.join(REPO_ROOT, ".venv-serving")


def microservice_binary() -> str:
    path = os.path.join(serving_venv(), "bin", "seldon-core-microservice")
    if not os.access(path, os.X_OK):
        raise ServingEnvMissing(f"the serving environment is missing ({path} not found): "
                                f"run `make serving-setup`")
    return path


def command(registry: str, port: int, metrics_port: int, version: Optional[str] = None,
            log_dir: Optional[str] = None, workers: int = 1, poll_seconds: Optional[float] = None,
            drift_window: Optional[int] = None, model_class: str = MODEL_CLASS,
            base_env: Optional[Dict[str, str]] = None) -> Tuple[List[str], Dict[str, str]]:
    """(argv, env) for one REST server; gRPC is off (one process per model, no second copy)."""
    argv = [microservice_binary(), model_class, "--http-port", str(port),
            "--metrics-port", str(metrics_port), "--grpc-workers", "0", "--workers", str(workers),
            "--log-level", "WARNING"]
    env = dict(os.environ if base_env is None else base_env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    env["CD4ML_REGISTRY"] = registry
    for name, value in (("CD4ML_SERVING_VERSION", version), ("CD4ML_SERVING_LOG_DIR", log_dir),
                        ("CD4ML_POLL_SECONDS", poll_seconds), ("CD4ML_DRIFT_WINDOW", drift_window)):
        if value is not None:
            env[name] = str(value)
        else:
            env.pop(name, None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return argv, env
