"""Helpers for the chat WebSocket tests: a connected client on the real ASGI stack, and frame collectors.

The sockets go through the real routing (origin check, session + bearer-token middleware, URL router) with
Channels' WebsocketCommunicator; the database is the real test database.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import close_old_connections

from chatsite.routing import websocket_application
from conversations import streaming
from conversations.auth import issue_token

ORIGIN = b"http://localhost"
HOST = b"localhost"  # the handshake's own Host: ORIGIN is its own origin (chatsite/origins.py)
TIMEOUT = 30  # generous: the first answer in a process loads the embedding model


class ChatClient:
    """One chat socket with frame-level helpers."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.comm = communicator

    async def send(self, frame: dict[str, Any]) -> None:
        await self.comm.send_to(text_data=json.dumps(frame))

    async def send_raw(self, text: str) -> None:
        await self.comm.send_to(text_data=text)

    async def recv(self, wait: float = TIMEOUT) -> dict[str, Any]:
        return json.loads(await self.comm.receive_from(timeout=wait))

    async def recv_type(self, kind: str, wait: float = TIMEOUT) -> dict[str, Any]:
        """The next frame of type ``kind``, skipping others (e.g. ``question`` broadcasts)."""
        while True:
            frame = await self.recv(wait)
            if frame["type"] == kind:
                return frame

    async def recv_type_for(self, message: str, wait: float = TIMEOUT) -> dict[str, Any]:
        """The next stream frame of ``message``."""
        while True:
            frame = await self.recv(wait)
            if frame.get("message") == message and "seq" in frame:
                return frame

    async def ask(self, text: str, **fields: Any) -> dict[str, Any]:
        """Send an ask and return its ack (a fresh id unless one is given)."""
        frame = {"type": "ask", "id": fields.pop("id", None) or str(uuid.uuid4()), "text": text, **fields}
        await self.send(frame)
        return await self.recv_type("ack")

    async def until_final(self, message: str, wait: float = TIMEOUT) -> list[dict[str, Any]]:
        """Stream frames of ``message`` up to and including its final (other frames are skipped)."""
        frames = []
        while not frames or frames[-1]["type"] != "final":
            frames.append(await self.recv_type_for(message, wait))
        return frames

    async def quiet(self, wait: float = 0.3) -> bool:
        """True if nothing arrives for ``wait`` seconds."""
        return await self.comm.receive_nothing(timeout=wait)

    async def ping_roundtrip(self) -> None:
        """Prove the socket still works: ping -> pong."""
        await self.send({"type": "ping", "t": "alive"})
        assert await self.recv_type("pong") == {"type": "pong", "t": "alive"}

    async def close(self) -> None:
        await self.comm.disconnect()


async def connect(user=None, *, headers: list[tuple[bytes, bytes]] | None = None) -> ChatClient:
    """A connected chat socket; with ``user`` it authenticates with a real bearer token from issue_token()."""
    all_headers = [(b"origin", ORIGIN), (b"host", HOST)]
    if user is not None:
        token, _ = await database_sync_to_async(issue_token)(user)
        all_headers.append((b"authorization", f"Bearer {token}".encode()))
    all_headers.extend(headers or [])
    comm = WebsocketCommunicator(websocket_application, "/ws/chat/", headers=all_headers)
    connected, _ = await comm.connect()
    assert connected
    return ChatClient(comm)


def stream_text(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "token")


def assert_contiguous(frames: list[dict[str, Any]], start: int = 1) -> None:
    seqs = [f["seq"] for f in frames]
    assert seqs == list(range(start, start + len(frames))), seqs


async def stop_generation() -> None:
    """Test teardown: no generation task outlives its test's event loop; close the threads' DB connections."""
    await streaming.shutdown()
    await database_sync_to_async(close_old_connections)()
    await asyncio.sleep(0)


PROTOCOL_JS = Path(__file__).resolve().parent.parent / "static" / "chat" / "protocol.js"


def protocol_js_names(name: str) -> dict[str, str]:
    """The entries of ``export const <name> = Object.freeze({...})`` in static/chat/protocol.js (the pages' copy
    of the protocol's names), values as written without quotes: for the tests that hold it to the server's."""
    source = PROTOCOL_JS.read_text()
    block = source[source.index(f"export const {name} ") :]
    block = block[: block.index("});")]
    return dict(re.findall(r'^\s+([A-Z_]+): "?(\w+)"?,', block, re.M))
