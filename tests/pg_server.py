"""A throwaway PostgreSQL server for tests: ``initdb`` into a temp dir, ``postgres`` listening
only on 127.0.0.1 (and a Unix socket in that dir) on a free port, stopped by its pid.

PostgreSQL refuses to run as root: when the tests run as root, the server runs as the
``postgres`` user (``runuser``), which owns the data dir.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresServer", "find_bin_dir"]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def find_bin_dir() -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` with ``initdb`` (``scripts/system-deps``
    installs Debian's postgresql where there is none)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries: run scripts/system-deps "
                           "(installs Debian's postgresql)")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """``with PostgresServer() as pg: pg.url`` -> ``postgresql://postgres@127.0.0.1:PORT/herd``."""

    def __init__(self, database: str = "herd") -> None:
        self.bin_dir = find_bin_dir()
        self.database = database
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="herd-pg-"))
        self.data = self.dir / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(self._as_owner([str(self.bin_dir / "initdb"), "-D", str(self.data),
                                       "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                       "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self._as_owner([str(self.bin_dir / "postgres"), "-D", str(self.data),
                                "-k", str(self.dir), "-p", str(self.port),
                                "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
                                "-c", "shared_buffers=64MB"]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        subprocess.run(self._as_owner([str(self.bin_dir / "createdb"), "-h", "127.0.0.1",
                                       "-p", str(self.port), "-U", "postgres", self.database]),
                       check=True, capture_output=True, timeout=60)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text()[-2000:]}")
            ready = subprocess.run([str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1",
                                    "-p", str(self.port)], capture_output=True, timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready in {START_TIMEOUT_S} s: "
                           f"{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM (smart shutdown is too polite for tests: SIGINT is the fast one) by pid."""
        if self.process is not None and self.process.poll() is None:
            # runuser execs postgres only after a fork; its child is the server, in our session
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT_S)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
