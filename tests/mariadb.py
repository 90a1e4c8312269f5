"""A real MySQL-protocol server for the tests: Debian's MariaDB on a throw-away data directory,
listening on a free 127.0.0.1 port, stopped when the test session ends.

`make test` installs `mariadb-server` on a Debian/Ubuntu machine that lacks it (Makefile:
system-deps); elsewhere the fixture fails saying what to install.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from typing import Iterator

from serving.launch import free_port

SERVER_CANDIDATES = ("mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld")
INSTALL_CANDIDATES = ("mariadb-install-db", "mysql_install_db")
CLIENT_CANDIDATES = ("mariadb", "mysql")
USER, PASSWORD = "cd4ml", "cd4ml-test-password"


def _which(candidates) -> str:
    for name in candidates:
        found = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if found:
            return found
    raise RuntimeError(f"none of {', '.join(candidates)} is installed: `apt-get install mariadb-server` "
                       f"(make test does it on Debian/Ubuntu)")


class MariaDB:
    def __init__(self, root: str):
        self.root = root
        self.datadir = os.path.join(root, "data")
        self.socket = os.path.join(root, "mysqld.sock")
        self.port = free_port()
        self.process = None

    def start(self, timeout: float = 60) -> "MariaDB":
        subprocess.run([_which(INSTALL_CANDIDATES), f"--datadir={self.datadir}", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, text=True, timeout=120)
        self.log = os.path.join(self.root, "server.log")
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [_which(SERVER_CANDIDATES), "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                 f"--socket={self.socket}", "--bind-address=127.0.0.1", "--user=root",
                 f"--pid-file={os.path.join(self.root, 'mysqld.pid')}", "--skip-log-bin"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MariaDB did not start:\n{open(self.log).read()[-3000:]}")
            time.sleep(0.2)
        self.sql(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; "
                 f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1'; FLUSH PRIVILEGES;")
        return self

    def sql(self, statement: str) -> str:
        proc = subprocess.run([_which(CLIENT_CANDIDATES), "--no-defaults", f"--socket={self.socket}", "-uroot",
                               "-e", statement], check=True, capture_output=True, text=True, timeout=60)
        return proc.stdout

    def new_database(self, prefix: str = "cd4ml") -> str:
        """A fresh database; returns its mysql:// URL (what CD4ML_METADATA_PATH takes)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.sql(f"CREATE DATABASE {name}")
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{name}"

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running(root: str) -> Iterator[MariaDB]:
    server = MariaDB(root)
    try:
        yield server.start()
    finally:
        server.stop()
