"""Handshakes under a burst: a bounded line of handshakes per node, the rest told to come back (close 4013)."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from django.contrib.auth import get_user_model
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from chatsite.handshakes import REFUSE_AT, HandshakeAdmission
from conversations import protocol
from tests.node_client import get_token


async def test_at_the_limit_handshakes_wait_and_past_four_times_it_one_is_closed_with_4013_before_any_work(settings):
    settings.CHAT_MAX_PENDING_HANDSHAKES = 1
    release = asyncio.Event()
    reached_inner = []

    async def slow_sign_in(scope, receive, send):  # the rest of the stack, stuck in its lookup
        reached_inner.append(scope["path"])
        await receive()
        await release.wait()
        await send({"type": "websocket.accept"})

    admission = HandshakeAdmission(slow_sign_in)
    waiting = []
    admitted = [f"/{n}" for n in range(REFUSE_AT)]
    for path in admitted:  # at the limit the node stops accepting; what got in still waits
        sent: list[dict] = []
        waiting.append((sent, asyncio.ensure_future(admission({"path": path}, _connect(), _appender(sent)))))
        await asyncio.sleep(0.05)
    assert admission.pending == REFUSE_AT

    refused: list[dict] = []
    await admission({"path": "/refused"}, _connect(), _appender(refused))
    assert reached_inner == admitted  # the refused one did no work
    assert refused[0] == {"type": "websocket.accept"}
    assert refused[1]["type"] == "websocket.close" and refused[1]["code"] == protocol.CLOSE_TRY_AGAIN_LATER
    assert "reconnect" in refused[1]["reason"]

    release.set()
    for sent, task in waiting:
        await task
        assert sent == [{"type": "websocket.accept"}]
    assert admission.pending == 0
    await admission({"path": "/later"}, _connect(), _appender([]))  # room again once they answered
    assert reached_inner == [*admitted, "/later"]


def _connect():
    inbox: asyncio.Queue = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    return inbox.get


def _appender(into: list[dict]):
    async def send(message: dict) -> None:
        into.append(message)

    return send


@pytest.mark.django_db(transaction=True)
def test_a_burst_past_the_limit_waits_for_the_node_and_every_client_gets_in(daphne_server):
    # 60 handshakes at once on a node that looks up 3 at a time: it stops accepting while 3 wait (the rest queue
    # in the kernel); the few a batch of accepts lets in past four times the limit are told to come back (4013).
    node = daphne_server(CHAT_MAX_PENDING_HANDSHAKES="3", CHAT_MAX_SOCKETS_PER_USER="100")  # 60 sockets of one user
    get_user_model().objects.create_user("erin", password="pw-erin-123")
    token = get_token(node, "erin", "pw-erin-123")
    url = node.url.replace("http", "ws") + "/ws/chat/"
    refused: list[int] = []

    async def customer() -> object:
        for _ in range(20):
            ws = await ws_connect(url, additional_headers={"Authorization": f"Bearer {token}"}, origin=node.url)
            try:
                await ws.send('{"type": "ping", "t": 1}')
                assert (await asyncio.wait_for(ws.recv(), 30)) == '{"type":"pong","t":1}'
                return ws
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == protocol.CLOSE_TRY_AGAIN_LATER, exc
                refused.append(exc.rcvd.code)
                await asyncio.sleep(0.2)
        raise AssertionError("never got in")

    async def burst() -> None:
        sockets = await asyncio.gather(*(customer() for _ in range(60)))
        await asyncio.gather(*(ws.close() for ws in sockets))

    asyncio.run(burst())
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    pauses = next(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("chat_accept_pauses_total"))
    assert pauses >= 1, "60 handshakes at once never found 3 waiting"
    assert f"chat_handshakes_refused_total {float(len(refused))}" in metrics


@pytest.mark.django_db(transaction=True)
async def test_a_handshake_whose_lookup_would_start_past_the_deadline_is_closed_with_4013_without_it(settings):
    from channels.db import database_sync_to_async

    from conversations.auth import TokenOrSessionAuthMiddleware, issue_token

    user = await database_sync_to_async(get_user_model().objects.create_user)("fay", password="pw-fay-123")
    token, _ = await database_sync_to_async(issue_token)(user)  # reads the user's token generation
    seen = []

    async def consumer(scope, receive, send):
        seen.append(scope["user"].pk)
        await receive()
        await send({"type": "websocket.accept"})

    middleware = TokenOrSessionAuthMiddleware(consumer)
    scope = {"type": "websocket", "path": "/ws/chat/", "headers": [(b"authorization", f"Bearer {token}".encode())]}

    settings.CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS = 30
    await middleware(scope, _connect(), _appender([]))
    assert seen == [user.pk]

    settings.CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS = -1  # every turn comes too late
    sent: list[dict] = []
    await middleware(scope, _connect(), _appender(sent))
    assert seen == [user.pk]  # no lookup, no consumer
    assert sent[-1]["type"] == "websocket.close" and sent[-1]["code"] == protocol.CLOSE_TRY_AGAIN_LATER


@pytest.mark.django_db(transaction=True)  # the lane's thread keeps the connection an earlier test opened
async def test_a_handshake_is_refused_at_its_deadline_while_the_lookup_lane_is_stuck(settings):
    """The line for the sign-in lookups is kept on the event loop: a handshake behind a lookup that does not
    finish is refused when its deadline passes, not when the lane frees up, and its lookup never runs."""
    import threading

    from conversations.auth import LOOKUPS, HandshakeTooLate

    settings.CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS = 0.3
    stuck, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def hold_the_lane() -> str:
        stuck.set()
        release.wait(30)
        return "held"

    def lookup() -> str:
        ran.append("lookup")
        return "looked up"

    lanes = LOOKUPS.pool.size()
    holders = [asyncio.create_task(LOOKUPS.run(time.monotonic() + 60, hold_the_lane)) for _ in range(lanes)]
    await asyncio.to_thread(stuck.wait, 10)
    try:
        with pytest.raises(HandshakeTooLate):
            await LOOKUPS.run(time.monotonic(), lookup)
        assert not release.is_set() and ran == []  # refused while the lane was still held
    finally:
        release.set()
        assert await asyncio.gather(*holders) == ["held"] * lanes
    assert await LOOKUPS.run(time.monotonic(), lookup) == "looked up"  # the lane serves again once free
