"""Real Daphne processes for end-to-end tests (the `daphne_server` fixture in conftest.py).

Why a subprocess and not Channels' in-process live server: the browser and bench/ws_client.py must talk to the
same server a deployment runs (`daphne chatsite.asgi:application`), with its own event loop, and the
multi-node tests need several of them sharing PostgreSQL and Redis. The processes use the pytest-django test
database, so tests must be `django_db(transaction=True)` for the server to see the rows they create.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
DAPHNE = ROOT / ".venv" / "bin" / "daphne"
STARTUP_TIMEOUT_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_database_url() -> str:
    """A DATABASE_URL for the database this test process uses (the test DB, unix socket or TCP)."""
    db = connection.settings_dict
    user = quote(db.get("USER") or "", safe="")
    password = quote(db.get("PASSWORD") or "", safe="")
    auth = f"{user}:{password}@" if user else ""
    host = db.get("HOST") or ""
    port = f":{db['PORT']}" if db.get("PORT") else ""
    socket_dir = (db.get("OPTIONS") or {}).get("host", "")
    if host.startswith("/"):  # a unix socket directory given as HOST
        socket_dir, host = host, ""
    url = f"postgresql://{auth}{host}{port}/{quote(db['NAME'], safe='')}"
    return f"{url}?host={quote(socket_dir, safe='')}" if socket_dir else url


@dataclass
class DaphneNode:
    """One running `daphne` process; `url` is its base URL (http://127.0.0.1:PORT)."""

    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def kill(self) -> None:
        """Crash it (SIGKILL): no shutdown hooks run, like a node dying."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)


def start_daphne(log_dir: Path, env_overrides: dict[str, str] | None = None) -> DaphneNode:
    """Start Daphne on a free port against the test database and wait until /healthz answers 200."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "DATABASE_URL": subprocess_database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "ANSWER_WORDS_PER_SECOND": "20",
        "PYTHONUNBUFFERED": "1",
        # Served on plain http://127.0.0.1, also with DEBUG off: no redirect to https, cookies without Secure.
        "HTTPS_ONLY": "false",
    }
    env.pop("TEST_DATABASE_NAME", None)
    env.update(env_overrides or {})
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"daphne-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(DAPHNE), "-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024", "--ping-interval", "20",
             "--ping-timeout", "30", "--websocket_connect_timeout", "10", "--websocket_timeout", "3600",
             "chatsite.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    node = DaphneNode(url=f"http://127.0.0.1:{port}", port=port, process=process, log_path=log_path, env=env)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"daphne exited with status {process.returncode}:\n{node.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{node.url}/healthz", timeout=5) as response:
                if response.status == 200:
                    return node
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}: {exc.read()[:500]!r}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.2)
    node.kill()
    raise RuntimeError(
        f"daphne did not become healthy within {STARTUP_TIMEOUT_SECONDS:.0f} s ({last_error}):\n{node.log()[-4000:]}"
    )
