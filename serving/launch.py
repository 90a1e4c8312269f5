"""How to start the server: `seldon-core-microservice` from .venv-serving with our model class.

Shared by `cd4ml serve`, the demo loop, the tests and the benchmark, so all of them start (and stop)
the same thing. The serving environment is separate from the pipeline one (its pins clash with
TFX: docs/stack.md), hence a path to another venv rather than an import.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Optional, Tuple

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Microservice:
    """seldon-core-microservice on free localhost ports, in its own process group (so stopping it
    also stops the worker processes Seldon forks)."""

    def __init__(self, registry: str, log_dir: str, model_class: Optional[str] = None, **kwargs):
        self.port, self.metrics_port = free_port(), free_port()
        try:
            extra = {"model_class": model_class} if model_class else {}
            argv, env = command(registry, self.port, self.metrics_port, log_dir=log_dir, **kwargs, **extra)
        except ServingEnvMissing as err:
            raise RuntimeError(f"{err} (make test and make demo build it)") from err
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, "server.log")
        with open(self.log_path, "w") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.predict_url = f"{self.url}/api/v1.0/predictions"
        self.feedback_url = f"{self.url}/api/v1.0/feedback"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 300):
        """Until /health/status answers 200; raises with the server's log if it dies or times out."""
        import requests

        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"seldon-core-microservice exited at start:\n{self.log()[-4000:]}")
            try:
                if requests.get(f"{self.url}/health/status", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout:.0f} s:\n{self.log()[-4000:]}")
            time.sleep(0.5)

    def stop(self):
        if self.alive():
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()


@contextlib.contextmanager
def running(registry: str, log_dir: str, startup_seconds: float = 300, **kwargs) -> Iterator[Microservice]:
    """A ready server for the duration of the block, stopped afterwards whatever happens."""
    server = Microservice(registry, log_dir, **kwargs)
    try:
        server.wait_ready(startup_seconds)
        yield server
    finally:
        server.stop()
