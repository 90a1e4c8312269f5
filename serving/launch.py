"""How to start a server: the Open Inference Protocol (V2) server, `mlserver start` from .venv-v2
with our runtime, or the Seldon v1 wrapper, `seldon-core-microservice` from .venv-serving.

Shared by `cd4ml serve`, the demo loop, the tests and the benchmark, so all of them start (and stop)
the same thing. The serving environment is separate from the pipeline one (its pins clash with
TFX: docs/stack.md), hence a path to another venv rather than an import.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from typing import Dict, Iterator, List, Optional, Tuple

from cd4ml.contract import MODEL_NAME
from serving.v2_workers import WORKERS_ENV

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_CLASS = "serving.seldon_model.BikeDemandModel"
V2_RUNTIME = "serving.mlserver_runtime.BikeDemandRuntime"


class ServingEnvMissing(RuntimeError):
    pass


def serving_venv() -> str:
    return os.environ.get("CD4ML_SERVING_VENV") or os.path.join(REPO_ROOT, ".venv-serving")


def v2_venv() -> str:
    return os.environ.get("CD4ML_V2_VENV") or os.path.join(REPO_ROOT, ".venv-v2")


def _binary(venv: str, name: str) -> str:
    path = os.path.join(venv, "bin", name)
    if not os.access(path, os.X_OK):
        raise ServingEnvMissing(f"the serving environment is missing ({path} not found): run `make serving-setup`")
    return path


def microservice_binary() -> str:
    return _binary(serving_venv(), "seldon-core-microservice")


def mlserver_binary() -> str:
    return _binary(v2_venv(), "mlserver")


def _server_env(registry: str, version=None, log_dir=None, poll_seconds=None, drift_window=None,
                base_env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The CD4ML_* settings both servers read (serving/seldon_model.py, serving/mlserver_runtime.py)."""
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
    return env


def command(registry: str, port: int, metrics_port: int, version: Optional[str] = None,
            log_dir: Optional[str] = None, workers: int = 1, poll_seconds: Optional[float] = None,
            drift_window: Optional[int] = None, model_class: str = MODEL_CLASS,
            base_env: Optional[Dict[str, str]] = None) -> Tuple[List[str], Dict[str, str]]:
    """(argv, env) for the Seldon v1 REST server; gRPC is off (one process per model, no second copy)."""
    argv = [microservice_binary(), model_class, "--http-port", str(port),
            "--metrics-port", str(metrics_port), "--grpc-workers", "0", "--workers", str(workers),
            "--log-level", "WARNING"]
    return argv, _server_env(registry, version, log_dir, poll_seconds, drift_window, base_env)


def v2_command(registry: str, port: int, metrics_port: int, settings_dir: str, grpc_port: Optional[int] = None,
               version: Optional[str] = None, log_dir: Optional[str] = None, poll_seconds: Optional[float] = None,
               drift_window: Optional[int] = None, host: str = "127.0.0.1", runtime: str = V2_RUNTIME,
               base_env: Optional[Dict[str, str]] = None, workers: int = 1,
               parallel_workers: int = 0) -> Tuple[List[str], Dict[str, str]]:
    """(argv, env) for the Open Inference Protocol server: `mlserver start` over a settings folder
    written here (server settings + the bike-demand model's). It listens on `host` (loopback by
    default; 0.0.0.0 in a container). More than one worker: that many complete servers sharing
    the ports, each with its own copy of the model (serving/v2_workers.py). `parallel_workers`:
    MLServer's own inference workers instead (what Seldon Core v2 runs by default)."""
    binary = mlserver_binary()
    model_dir = os.path.join(settings_dir, MODEL_NAME)
    os.makedirs(model_dir, exist_ok=True)
    server = {"host": host, "http_port": port, "grpc_port": grpc_port or free_port(), "metrics_port": metrics_port,
              "parallel_workers": parallel_workers, "debug": False, "load_models_at_startup": True}
    # The registry is the model's URI, as KServe and Seldon Core v2 hand a model its folder.
    model = {"name": MODEL_NAME, "implementation": runtime, "parameters": {"uri": registry}}
    for path, body in ((os.path.join(settings_dir, "settings.json"), server),
                       (os.path.join(model_dir, "model-settings.json"), model)):
        with open(path, "w") as fh:
            json.dump(body, fh, indent=2)
    env = _server_env(registry, version, log_dir, poll_seconds, drift_window, base_env)
    env.pop("CD4ML_REGISTRY")  # the runtime reads the registry from the model's URI
    env.pop(WORKERS_ENV, None)
    if workers > 1:  # that many complete servers on the one port (serving/v2_workers.py)
        env[WORKERS_ENV] = str(workers)
    # MLServer with the protocol's binary tensor extension and error format (serving/v2_server.py).
    return [os.path.join(os.path.dirname(binary), "python"), "-m", "serving.v2_server", "start", settings_dir], env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Microservice:
    """A server on free localhost ports, in its own process group (so stopping it also stops the
    worker processes it forks): the Seldon v1 wrapper, or with protocol="v2" MLServer."""

    def __init__(self, registry: str, log_dir: str, model_class: Optional[str] = None, protocol: str = "seldon",
                 work_dir: Optional[str] = None, **kwargs):
        """`model_class`: another Seldon model class, or with protocol="v2" another MLServer runtime.
        `log_dir` is where the core writes its logs (a folder or a gs:// prefix); the server's own
        files (its output, MLServer's settings) go to `work_dir`, by default the log folder."""
        self.protocol = protocol
        self.port, self.metrics_port = free_port(), free_port()
        self.grpc_port = free_port() if protocol == "v2" else None
        work_dir = work_dir or log_dir
        if "://" in work_dir:
            raise ValueError(f"a server with logs at {log_dir} needs a local work_dir for its own files")
        os.makedirs(work_dir, exist_ok=True)
        try:
            if protocol == "v2":
                extra = {"runtime": model_class} if model_class else {}
                argv, env = v2_command(registry, self.port, self.metrics_port, os.path.join(work_dir, "mlserver"),
                                       grpc_port=self.grpc_port, log_dir=log_dir, **kwargs, **extra)
            else:
                extra = {"model_class": model_class} if model_class else {}
                argv, env = command(registry, self.port, self.metrics_port, log_dir=log_dir, **kwargs, **extra)
        except ServingEnvMissing as err:
            raise RuntimeError(f"{err} (make test and make demo build it)") from err
        self.log_path = os.path.join(work_dir, "server.log")
        with open(self.log_path, "w") as out:
            self.process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        if protocol == "v2":
            base = f"{self.url}/v2/models/{MODEL_NAME}"
            self.predict_url, self.feedback_url, self.ready_url = f"{base}/infer", f"{base}/feedback", \
                f"{self.url}/v2/health/ready"
            self.explain_url = f"{base}/explain"
        else:
            self.predict_url = f"{self.url}/api/v1.0/predictions"
            self.feedback_url = f"{self.url}/api/v1.0/feedback"
            self.explain_url = f"{self.url}/api/v1.0/explain"
            self.ready_url = f"{self.url}/health/status"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"

    def pids(self) -> List[int]:
        """The server's processes: its process group (the workers it forked included)."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.getpgid(int(pid)) == self.process.pid:
                    found.append(int(pid))
            except OSError:  # exited meanwhile
                continue
        return found

    def resident_mb(self) -> float:
        """Resident memory of the server's process group (its workers included), in MB."""
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as fh:
                    total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
            except (OSError, StopIteration, ValueError):
                continue
        return round(total / 1024, 1)

    def cpu_seconds(self) -> float:
        """CPU time the server's process group has used so far, every thread's, to the nanosecond
        (Linux's schedstat): the difference over some requests is what they cost the server,
        the kernel's handling of its sockets included, whatever else the machine is doing."""
        total = 0
        for pid in self.pids():
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/schedstat") as fh:
                        total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):  # a thread or process that ended meanwhile
                continue
        return total / 1e9

    def log(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout: float = 300):
        """Until the readiness probe answers 200; raises with the server's log if it dies or times out."""
        import requests

        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError(f"the {self.protocol} server exited at start:\n{self.log()[-4000:]}")
            try:
                if requests.get(self.ready_url, timeout=2).status_code == 200:
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
