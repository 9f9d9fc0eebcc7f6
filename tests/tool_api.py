"""A company's API for the tool tests: a real HTTP server on 127.0.0.1 that trusts only the signed identity.

Every route first checks the request's signature with ``knowledge.tools.signing.verify`` (401 without a valid
one), as the company's own API would, and answers for the identity it verified, never for an identifier the
request names. Routes, all under ``/api`` (so the tool's base URL has a path prefix to keep):

- ``GET /orders/<number>``: the order, if it belongs to the signed customer (orders are kept by user id), else 404;
- ``POST /refunds`` with ``{"order_number": ...}``: the refund of one of the customer's orders, else 404;
- faults: ``/slow`` (answers after ``slow_seconds``), ``/error`` (500), ``/malformed`` (HTML), ``/array`` (JSON that
  is not an object), ``/huge`` (``huge_bytes`` of JSON streamed without a length; ``?declared=1`` declares it),
  ``/redirect`` (302 to another host).

Every request that reached it is in ``requests`` (method, raw path, headers, body, verified identity), so a test
can say that none was made. Tests ask for the ``tool_api`` fixture (conftest.py hands it on); elsewhere:

    with ToolAPI() as api:
        spec = ToolSpec(..., base_url=api.base_url, secret=api.secret)
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from knowledge.tools.signing import Identity, verify
from tests.local_http import LocalHTTPServer

PREFIX = "/api"
SECRET = "tool-api-secret-7f3a91"
ALICE = Identity(user_id="1", email="alice@example.com", name="Alice", kind="user")
BOB = Identity(user_id="2", email="bob@example.com", name="Bob", kind="user")
#: user id -> order number -> order. Each order has fields a customer may see and fields they may not.
ORDERS: dict[str, dict[str, dict[str, Any]]] = {
    ALICE.user_id: {
        "10432": {
            "order_number": "10432",
            "status": "shipped",
            "delivery": {"eta": "2025-06-03", "carrier": "DHL", "depot": "Leipzig hub 4"},
            "internal_notes": "customer called twice",
            "refund": {"state": "paid", "amount": "19.90"},
        },
    },
    BOB.user_id: {
        "20871": {
            "order_number": "20871",
            "status": "processing",
            "delivery": {"eta": "2025-06-09", "carrier": "UPS", "depot": "Kassel"},
            "internal_notes": "VIP",
            "refund": {"state": "none"},
        },
    },
}


@dataclass(frozen=True)
class Received:
    """One request as the API saw it (header names in lower case)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    identity: Identity | None


class ToolAPI(LocalHTTPServer):
    def __init__(self, *, secret: str = SECRET, slow_seconds: float = 5.0, huge_bytes: int = 300_000) -> None:
        self.secret = secret
        self.slow_seconds = slow_seconds
        self.huge_bytes = huge_bytes
        self.requests: list[Received] = []
        #: user id -> order number -> order: ``ORDERS``, or a test's own users (``orders[str(user.pk)] = ...``).
        self.orders: dict[str, dict[str, dict[str, Any]]] = dict(ORDERS)
        self.stopping = threading.Event()
        super().__init__(_handler_for(self))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"

    def stop(self) -> None:
        self.stopping.set()  # a /slow answer still sleeping ends now
        super().stop()

    def answer(self, method: str, route: str, body: bytes, identity: Identity) -> tuple[int, Any]:
        """(status, JSON) of a signed request for ``identity`` to ``route`` (the path under ``/api``)."""
        orders = self.orders.get(identity.user_id, {})
        order = re.fullmatch(r"/orders/([^/]+)", route)
        if method == "GET" and order:
            found = orders.get(unquote(order[1]))
            return (200, found) if found else (404, {"error": "no such order"})
        if method == "POST" and route == "/refunds":
            try:
                number = str(json.loads(body)["order_number"])
            except (ValueError, KeyError, TypeError):
                return 400, {"error": "order_number is required"}
            found = orders.get(number)
            return (200, {"order_number": number, **found["refund"]}) if found else (404, {"error": "no such order"})
        return 404, {"error": "no such route"}


def _handler_for(api: ToolAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            identity = verify(api.secret, self.command, self.path, body, self.headers)
            headers = {name.lower(): value for name, value in self.headers.items()}
            api.requests.append(Received(self.command, self.path, headers, body, identity))
            target = urlsplit(self.path)
            route = target.path.removeprefix(PREFIX)
            try:
                if identity is None:
                    self._json(401, {"error": "the identity signature is missing, wrong or stale"})
                elif not target.path.startswith(PREFIX + "/"):
                    self._json(404, {"error": "no such route"})
                elif not self._fault(route, target.query):
                    self._json(*api.answer(self.command, route, body, identity))
            except ConnectionError:
                pass  # the caller stopped reading (a body over its cap): expected

        def _fault(self, route: str, query: str) -> bool:
            """Answer a fault route; False for any other route."""
            if route == "/slow":
                api.stopping.wait(api.slow_seconds)
                self._json(200, {"status": "late"})
            elif route == "/error":
                self._json(500, {"error": "internal"})
            elif route == "/malformed":
                self._send(200, b"<html><body>Service temporarily unavailable</body></html>", "text/html")
            elif route == "/array":
                self._json(200, [{"status": "shipped"}])
            elif route == "/huge":
                self._huge(declared="declared=1" in query)
            elif route == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://evil.example/api/orders/10432")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                return False
            return True

        def _huge(self, *, declared: bool) -> None:
            """A JSON object of ``huge_bytes``, streamed; without a length the body ends when the connection does
            (HTTP/1.0), so only counting what arrives can stop it."""
            padding = api.huge_bytes - len('{"padding":""}')
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if declared:
                self.send_header("Content-Length", str(api.huge_bytes))
            self.end_headers()
            self.wfile.write(b'{"padding":"')
            for start in range(0, padding, 16384):
                self.wfile.write(b"x" * min(16384, padding - start))
            self.wfile.write(b'"}')

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _send(self, status: int, data: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def tool_api() -> Iterator[ToolAPI]:
    """The company's API, running for one test."""
    with ToolAPI() as api:
        yield api
