"""A client that stops reading is closed once the node holds CHAT_SEND_BUFFER_LIMIT_BYTES for it, and the node
keeps serving everyone else (chatsite/slow_clients.py), on a real Daphne process."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.node_client import Client, get_token

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIMIT = 256 * 1024


def slow_clients_closed(node) -> float:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("chat_slow_clients_closed_total "):
                return float(line.split()[1])
    raise AssertionError("chat_slow_clients_closed_total is not in /metrics")


async def test_a_client_that_stops_reading_is_closed_and_the_node_serves_the_others(daphne_server):
    node = daphne_server(CHAT_SEND_BUFFER_LIMIT_BYTES=str(LIMIT))
    await database_sync_to_async(get_user_model().objects.create_user)("slow", password="pw-slow-123")
    token = await asyncio.to_thread(get_token, node, "slow", "pw-slow-123")
    assert await asyncio.to_thread(slow_clients_closed, node) == 0

    # max_queue=1: the client library stops reading from the socket once one frame waits unread.
    slow = await ws_connect(node.url.replace("http://", "ws://") + "/ws/chat/", origin=node.url, max_queue=1,
                            additional_headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    payload = "x" * 15_000  # each pong echoes it: ~15 KB the node must hold per unread pong
    try:
        for n in range(400):  # 6 MB of pongs, far over the limit
            await slow.send(json.dumps({"type": "ping", "t": f"{n}{payload}"}))
    except ConnectionClosed:
        pass  # closed while we were still sending: that is the point
    for _ in range(100):
        if await asyncio.to_thread(slow_clients_closed, node) >= 1:
            break
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(slow_clients_closed, node) == 1

    with pytest.raises(ConnectionClosed):  # reading again: what was queued, then the end of the connection
        while True:
            await asyncio.wait_for(slow.recv(), 15)
    assert "client stopped reading" in node.log()

    # Everyone else is served as before.
    other = await Client.open(node, token)
    await other.send({"type": "ping", "t": "still here"})
    assert (await other.recv_type("pong"))["t"] == "still here"
    await other.close()
