"""A real chat WebSocket to a Daphne node (the `websockets` library), for the multi-node and fault tests.

Authenticated with a bearer token from POST /api/token/ and an Origin the node allows; frames as dicts.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from typing import Any

from websockets.asyncio.client import connect as ws_connect

WAIT = 60.0  # generous: each node loads the embedding model on its first answer


class Client:
    """A real chat socket to one node."""

    def __init__(self, ws, node=None, token: str = "") -> None:
        self.ws = ws
        self.node = node  # where it is connected, with what: to open a second socket like it
        self.token = token

    @classmethod
    async def open(cls, node, token: str, path: str = "/ws/chat/") -> Client:
        ws = await ws_connect(
            node.url.replace("http://", "ws://") + path,
            additional_headers={"Authorization": f"Bearer {token}"},
            origin=node.url,
        )
        return cls(ws, node, token)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, wait: float = WAIT) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.recv(), wait))

    async def recv_type(self, kind: str, wait: float = WAIT) -> dict[str, Any]:
        while (frame := await self.recv(wait))["type"] != kind:
            pass
        return frame

    async def ask(self, text: str, **fields: Any) -> dict[str, Any]:
        await self.send({"type": "ask", "id": str(uuid.uuid4()), "text": text, **fields})
        return await self.recv_type("ack")

    async def stream_of(self, message: str, wait: float = WAIT) -> dict[str, Any]:
        while True:
            frame = await self.recv(wait)
            if frame.get("message") == message and "seq" in frame:
                return frame

    async def until_final(self, message: str, wait: float = WAIT) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] != "final":
            frames.append(await self.stream_of(message, wait))
        return frames

    async def tokens(self, message: str, count: int) -> list[dict[str, Any]]:
        """Stream frames of ``message`` until ``count`` tokens have arrived."""
        frames: list[dict[str, Any]] = []
        while sum(f["type"] == "token" for f in frames) < count:
            frames.append(await self.stream_of(message))
        return frames

    async def join(self, conversation: str) -> None:
        await self.send({"type": "join", "conversation": conversation})
        await self.recv_type("conversation")

    async def close(self) -> None:
        await self.ws.close()


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "token")


def assert_contiguous(frames: list[dict[str, Any]], start: int = 1) -> None:
    assert [f["seq"] for f in frames] == list(range(start, start + len(frames)))


def get_token(node, username: str, password: str) -> str:
    request = urllib.request.Request(
        node.url + "/api/token/",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access"]
