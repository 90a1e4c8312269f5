"""Several V2 server processes on one port: both cores, as gunicorn's pre-fork model gives them.

    CD4ML_V2_WORKERS=2 python -m serving.v2_server start SETTINGS     (`cd4ml serve --workers 2`)

MLServer's own `parallel_workers` keeps HTTP, JSON and the protocol in one process and hands each
request to a worker through a multiprocessing queue: measured here (wrk, 8 connections, one row)
that is half the throughput of a single process. This supervisor instead opens one HTTP socket per
worker on the same port (SO_REUSEPORT) and starts N complete servers (MLServer + our runtime,
each with its own model service), each accepting on its own: the kernel spreads connections over
them, and gRPC's listeners share their port the same way (SO_REUSEPORT is gRPC's default on
Linux). A worker takes connections only once its model has loaded (serving/v2_server.py), so a
worker that starts or restarts never answers "not found" (benchmarks/serving.py: 1.76x one
process with two, 8 connections, one row).

Metrics: every worker writes its values to files under $PROMETHEUS_MULTIPROC_DIR (a new
temporary folder by default; prometheus_client's multiprocess mode) and this process serves their
sum on the settings' metrics port and endpoint. A worker killed by a signal is started again;
one that exits by itself within `FAST_FAILURE_SECONDS` of its start (a registry that cannot load,
which will not load on the next try either) stops the whole server with its exit code, for the
orchestrator to report.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

log = logging.getLogger("cd4ml.serving")

WORKERS_ENV = "CD4ML_V2_WORKERS"     # how many servers to start (the supervisor reads it)
LISTEN_FD_ENV = "CD4ML_V2_LISTEN_FD"  # the shared HTTP socket a worker accepts on
FAST_FAILURE_SECONDS = 60.0


def _metrics_handler(directory: str, endpoint: str):
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path.split("?")[0] != endpoint:
                self.send_error(404)
                return
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes are not news
            pass

    return Handler


class Supervisor:
    def __init__(self, settings_dir: str, workers: int, argv: List[str]):
        with open(os.path.join(settings_dir, "settings.json")) as fh:
            self.settings = json.load(fh)
        self.settings_dir, self.workers, self.argv = settings_dir, workers, argv
        # Writable wherever the settings are not (an image's read-only settings folder).
        self.metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="cd4ml-metrics-")
        self.children: Dict[int, subprocess.Popen] = {}
        self.started: Dict[int, float] = {}
        self.stopping = threading.Event()

    def _spawn(self, slot: int, sock: socket.socket):
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self.metrics_dir, **{LISTEN_FD_ENV: str(sock.fileno())})
        env.pop(WORKERS_ENV, None)
        self.children[slot] = subprocess.Popen([sys.executable, "-m", "serving.v2_server", *self.argv],
                                               env=env, pass_fds=(sock.fileno(),))
        self.started[slot] = time.monotonic()
        print(f"cd4ml serve: worker {slot} started (pid {self.children[slot].pid}; metrics under "
              f"{self.metrics_dir})", flush=True)

    def run(self) -> int:
        from prometheus_client import multiprocess

        host, port = self.settings.get("host", "0.0.0.0"), int(self.settings.get("http_port", 8080))
        # One listening socket per worker, all on the port (SO_REUSEPORT): the kernel spreads new
        # connections evenly over them. On one shared socket the worker that woke first took them
        # all. A worker's socket stays open here while it restarts: its share of connections waits
        # in the backlog for the new worker instead of being refused.
        sockets = [socket.create_server((host, port), backlog=2048, reuse_port=True) for _ in range(self.workers)]
        for sock in sockets:
            sock.set_inheritable(True)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        os.makedirs(self.metrics_dir)
        metrics = http.server.ThreadingHTTPServer(
            (host, int(self.settings.get("metrics_port", 8082))),
            _metrics_handler(self.metrics_dir, self.settings.get("metrics_endpoint") or "/metrics"))
        threading.Thread(target=metrics.serve_forever, name="cd4ml-metrics", daemon=True).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        for slot in range(self.workers):
            self._spawn(slot, sockets[slot])
        code = 0
        while not self.stopping.wait(0.5):
            for slot, child in list(self.children.items()):
                if child.poll() is None:
                    continue
                multiprocess.mark_process_dead(child.pid, self.metrics_dir)
                # A worker killed by a signal (the OOM killer, a probe) is started again; one that
                # ended by itself right after its start would do the same again.
                if child.returncode >= 0 and time.monotonic() - self.started[slot] < FAST_FAILURE_SECONDS:
                    print(f"cd4ml serve: worker {slot} exited with {child.returncode} at start: stopping",
                          file=sys.stderr, flush=True)
                    code = child.returncode or 1
                    self.stopping.set()
                    break
                print(f"cd4ml serve: worker {slot} exited with {child.returncode}; starting it again",
                      file=sys.stderr, flush=True)
                self._spawn(slot, sockets[slot])
        for child in self.children.values():
            if child.poll() is None:
                child.terminate()
        for child in self.children.values():
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        metrics.shutdown()
        return code


def supervise(argv: List[str], workers: int) -> int:
    """`argv` is MLServer's command line (`start SETTINGS`)."""
    settings_dir = next((a for a in argv[1:] if not a.startswith("-")), None)
    if argv[:1] != ["start"] or settings_dir is None:
        print(f"cd4ml serve: {WORKERS_ENV} needs `start SETTINGS`", file=sys.stderr)
        return 2
    return Supervisor(settings_dir, workers, argv).run()
