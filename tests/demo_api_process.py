"""The demo order API (knowledge/tools/demo_api.py) as the real process `make run` starts, for tests."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowledge.tools import demo_api, signing
from knowledge.tools.signing import Identity
from tests.daphne_process import free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "demo-api-test-secret-41c7"


@dataclass
class RunningAPI:
    """The running demo API: its base URL (with /api), port and log file."""

    url: str
    port: int
    log: Path

    def get(self, path: str, identity: Identity | None, *, secret: str = SECRET, **sign: Any) -> tuple[int, dict]:
        """GET ``/api<path>``, signed for ``identity`` (unsigned when None); ``sign`` overrides what is signed."""
        wire_path = demo_api.PREFIX + path
        headers = {}
        if identity is not None:
            signed = {"method": "GET", "path_with_query": wire_path, "body": b"", "identity": identity, **sign}
            headers = signing.signed_headers(secret, **signed)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", wire_path, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


@contextmanager
def running_demo_api(directory: Path, secret: str = SECRET) -> Iterator[RunningAPI]:
    """``python -m knowledge.tools.demo_api`` on a free port, as `make run` starts it, logging into ``directory``;
    killed on leaving."""
    port = free_port()
    log = directory / "demo-api.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "knowledge.tools.demo_api", "--port", str(port), "--secret", secret],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    running = RunningAPI(f"http://127.0.0.1:{port}{demo_api.PREFIX}", port, log)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, f"the demo API exited: {log.read_text()}"
            try:
                running.get("/orders/10432", None)
                break
            except OSError:
                assert time.monotonic() < deadline, f"the demo API did not answer in 10 s: {log.read_text()}"
                time.sleep(0.05)
        yield running
    finally:
        process.kill()
        process.wait(5)
