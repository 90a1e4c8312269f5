"""Start and stop the real `seldon-core-microservice` (from .venv-serving) for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from typing import Iterator, Optional

import requests

from serving.launch import ServingEnvMissing, command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, process: subprocess.Popen, port: int, metrics_port: int, log_path: str):
        self.process, self.port, self.metrics_port, self.log_path = process, port, metrics_port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.predict_url = f"{self.url}/api/v1.0/predictions"
        self.feedback_url = f"{self.url}/api/v1.0/feedback"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def alive(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def running(registry: str, log_dir: str, startup_seconds: float = 300, model_class: Optional[str] = None,
            **kwargs) -> Iterator[Server]:
    """A server on free localhost ports; raises with the server's log if it does not come up."""
    port, metrics_port = free_port(), free_port()
    try:
        extra = {"model_class": model_class} if model_class else {}
        argv, env = command(registry, port, metrics_port, log_dir=log_dir, **kwargs, **extra)
    except ServingEnvMissing as err:
        raise RuntimeError(f"{err} (make test builds it)") from err
    os.makedirs(log_dir, exist_ok=True)
    log_path = os.path.join(log_dir, "server.log")
    with open(log_path, "w") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(process, port, metrics_port, log_path)
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            if not server.alive():
                raise RuntimeError(f"seldon-core-microservice exited at start:\n{server.log()[-4000:]}")
            try:
                if requests.get(f"{server.url}/health/status", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {startup_seconds} s:\n{server.log()[-4000:]}")
            time.sleep(0.5)
        yield server
    finally:
        if server.alive():
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
