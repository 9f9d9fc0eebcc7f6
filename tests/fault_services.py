"""Services the fault tests break on purpose: a Redis of their own on its own port (never the machine's), and
the TCP PostgreSQL of the DATABASE_URL run (`make test-database-url`), stopped and started again.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.daphne_process import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class RedisServer:
    """``redis-server`` without persistence: a restart comes back empty, as a crashed cache would."""

    port: int
    workdir: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("The fault tests need redis-server on PATH: apt-get install redis-server")
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        import redis

        while time.monotonic() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start: {(self.workdir / 'redis.log').read_text()}")

    def kill(self) -> None:
        """Crash it (SIGKILL): everything it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()


def start_redis(workdir: Path) -> RedisServer:
    server = RedisServer(port=free_port(), workdir=workdir)
    server.start()
    return server


def tcp_postgres_data_dir() -> Path:
    """The data directory of the TCP PostgreSQL this run uses (`make test-database-url` exports it)."""
    value = os.environ.get("FAULT_POSTGRES_DATA", "")
    if not value:
        raise RuntimeError(
            "The PostgreSQL fault tests stop and restart the TCP server of the DATABASE_URL run; run them with "
            "`make test-database-url` (it sets FAULT_POSTGRES_DATA), never against the embedded database."
        )
    return (ROOT / value).resolve() if not os.path.isabs(value) else Path(value)


def stop_postgres() -> None:
    """Stop the TCP PostgreSQL at once (``-m fast``: connections are cut, as in a crash or failover)."""
    from chatsite import embedded_postgres

    embedded_postgres.stop(tcp_postgres_data_dir(), mode="fast")


def start_postgres(port: int) -> None:
    """Start it again on the same port."""
    from chatsite import embedded_postgres

    embedded_postgres.serve_tcp(tcp_postgres_data_dir(), port)
