#!/usr/bin/env python
"""Ask the support assistant one question over the WebSocket protocol, without our JavaScript.

    python bench/ws_client.py --url http://127.0.0.1:8000 --username demo --password secret \
        "how do I return an item"

Gets a bearer token from ``POST /api/token/``, connects to ``ws(s)://…/ws/chat/`` with
``Authorization: Bearer <token>``, sends one ``ask`` and prints every frame it receives as one JSON object per
line until the answer's ``final``. Deliberately standalone (only the ``websockets`` library, no Django): it is
the proof that docs/protocol.md is enough to build a client.

Exit status: 0 when the answer completed; 1 when the server sent an ``error`` frame or the answer did not
complete; 2 when the server could not be reached or refused the credentials; 3 on timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

#: Questions the demo knowledge base answers, for the benches that ask many.
DEMO_QUESTIONS = [
    "how do I return an item",
    "how much does express delivery cost?",
    "I forgot my password",
    "my dishwasher shows E42",
    "can I pay with Klarna?",
    "how long does a refund take?",
]


#: A node with too many handshakes waiting closes a new socket at once with this code: reconnect with backoff.
CLOSE_TRY_AGAIN_LATER = 4013


class ClientError(Exception):
    """A failure before the conversation starts (token, handshake); exit status 2."""


def backoff(attempt: int) -> float:
    """The chat page's reconnect delay (static/chat/socket.js BACKOFF): 0.5 s doubling to 10 s, ±30 %."""
    return min(10.0, 0.5 * 2**attempt) * random.uniform(0.7, 1.3)


async def open_admitted(
    url: str, *, headers: dict, origin: str, attempts: int = 30, on_refused=lambda: None, **options
):
    """A socket the node kept: connect, ``ping``, wait for the ``pong``; closed with 4013 (docs/protocol.md,
    "A burst of connections"), reconnect with the chat page's backoff. ``options`` go to ``connect``."""
    for attempt in range(attempts):
        ws = await connect(url, additional_headers=headers, origin=origin, **options)
        try:
            await ws.send(json.dumps({"type": "ping", "t": "admitted?"}))
            await asyncio.wait_for(ws.recv(), 30)
            return ws
        except ConnectionClosed as exc:
            if exc.rcvd is None or exc.rcvd.code != CLOSE_TRY_AGAIN_LATER:
                raise
            on_refused()
            await asyncio.sleep(backoff(attempt))
    raise ClientError(f"the node refused the connection {attempts} times (4013: too many connections at once)")


def get_token(base_url: str, username: str, password: str, timeout: float = 10.0) -> str:
    """Exchange a username and password for a bearer token (``POST /api/token/``)."""
    body = json.dumps({"username": username, "password": password}).encode()
    request = urllib.request.Request(
        base_url.rstrip("/") + "/api/token/", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.load(response)["access"]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise ClientError(f"POST /api/token/ failed with HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ClientError(f"cannot reach {base_url}: {exc}") from None


def websocket_url(base_url: str) -> str:
    """http://host:port -> ws://host:port/ws/chat/ (https -> wss)."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ClientError(f"--url must start with http:// or https://, got {base_url!r}")
    return urlunsplit((scheme, parts.netloc, "/ws/chat/", "", ""))


def origin_of(base_url: str) -> str:
    """The handshake must carry an Origin the server's ALLOWED_HOSTS accepts: the site's own."""
    parts = urlsplit(base_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def ask(
    base_url: str,
    token: str,
    question: str,
    *,
    conversation: str | None = None,
    kb: str | None = None,
    out=sys.stdout,
) -> int:
    """Open a socket, send one ``ask`` and print frames until its ``final``; returns the exit status."""
    try:
        async with await open_socket(base_url, token) as ws:
            return await ask_on(ws, question, conversation=conversation, kb=kb, out=out)
    except InvalidStatus as exc:
        raise ClientError(f"WebSocket handshake refused: HTTP {exc.response.status_code}") from None
    except ConnectionClosed as exc:
        print(f"connection closed before the answer finished: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        raise ClientError(f"cannot connect to {websocket_url(base_url)}: {exc}") from None


async def open_socket(base_url: str, token: str):
    """The chat socket of a signed-in customer, admitted by the node (``async with await open_socket(…)``)."""
    return await open_admitted(
        websocket_url(base_url), headers={"Authorization": f"Bearer {token}"}, origin=origin_of(base_url),
        open_timeout=10,
    )


async def ask_on(ws, question: str, *, conversation: str | None = None, kb: str | None = None, out=sys.stdout) -> int:
    """Send one ``ask`` on an open socket and print frames until its ``final``; returns the exit status."""
    frame: dict = {"type": "ask", "id": str(uuid.uuid4()), "text": question}
    if conversation:
        frame["conversation"] = conversation
    if kb:
        frame["kb"] = kb
    status = 0
    message_id = None
    await ws.send(json.dumps(frame))
    while True:
        raw = await ws.recv()
        received = json.loads(raw)
        print(json.dumps(received, ensure_ascii=False), file=out, flush=True)
        kind = received.get("type")
        if kind == "ack" and received.get("id") == frame["id"]:
            message_id = received.get("message")
            if message_id is None:  # a person handles this conversation: no bot answer to wait for
                return status
        elif kind == "error":
            status = 1
            if received.get("id") == frame["id"] or received.get("code") == "unauthenticated":
                return status  # the question was refused; nothing more will come for it
        elif kind == "final" and received.get("message") == message_id:
            return status if received.get("state") == "complete" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", help="the question to ask")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="site base URL (http:// or https://)")
    parser.add_argument("--username", default=os.environ.get("CHAT_USERNAME", ""))
    parser.add_argument(
        "--password", default=os.environ.get("CHAT_PASSWORD", ""), help="or set CHAT_PASSWORD (keeps it out of ps)"
    )
    parser.add_argument("--token", default="", help="a bearer token instead of username/password")
    parser.add_argument("--conversation", default=None, help="continue this conversation (UUID)")
    parser.add_argument("--kb", default=None, help="knowledge base name or slug for a new conversation")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the whole answer")
    args = parser.parse_args(argv)
    try:
        token = args.token
        if not token:
            if not args.username or not args.password:
                parser.error("give --username and --password (or CHAT_PASSWORD), or --token")
            token = get_token(args.url, args.username, args.password)
        return asyncio.run(
            asyncio.wait_for(
                ask(args.url, token, args.question, conversation=args.conversation, kb=args.kb), args.timeout
            )
        )
    except TimeoutError:
        print(f"error: timed out after {args.timeout:.0f} s waiting for the answer", file=sys.stderr)
        return 3
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
