"""Access that ends at once, whichever process ends it (issue 17, point 9; conversations/revocation_listener.py,
``access.ensure_may_act``; docs/security.md "Revocation").

Real Daphne nodes on the test database. The change is made where an operator would make it: ``manage.py shell -c``
in a process of its own (with the in-memory channel layer it cannot reach any node through the channel layer, and on
the Redis nodes it runs without REDIS_URL — a sync job that does not know the channel layer, or a pub/sub message
lost). The nodes hear of it through PostgreSQL's NOTIFY only. And when no event comes at all (a bulk ``UPDATE``, a
session row deleted, a token generation bumped in SQL), every chat action re-checks its user and is refused with the
reason, and its socket closes exactly as the event would have closed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid

import psycopg
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from conversations import protocol
from conversations.models import Conversation, Feedback, Message, TokenGeneration
from tests.daphne_process import ROOT, subprocess_database_url
from tests.node_client import get_token
from tests.test_revocation import Browser, accepted, close_of

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REDIS = "redis://127.0.0.1:6379/0"
WITHIN = 2.0  # seconds from the commit of the change to the close of every socket it concerns
CHAT, CONSOLE = "/ws/chat/", "/ws/console/"
PASSWORD = "pw-sam-AccessEnds-1"


@pytest.fixture
def sam(transactional_db):
    """A staff member, who uses the chat as well as the console."""
    return get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True, first_name="Sam")


@pytest.fixture
def redis_available():
    import redis

    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"These tests need the machine's Redis at {REDIS} (start redis-server): {exc}")


# --- helpers -------------------------------------------------------------------------------------------------------
async def deactivate_in_another_process(username: str) -> tuple[asyncio.subprocess.Process, float]:
    """``manage.py shell -c`` deactivating the user with a save (the signals run there, as in any sync job), in a
    process of its own without REDIS_URL: its channel layer reaches no node. Returns once the change committed, with
    the process and the moment its save returned (``time.time()``)."""
    code = (
        "import time; from django.contrib.auth import get_user_model; "
        f"user = get_user_model().objects.get(username={username!r}); user.is_active = False; user.save(); "
        "print('committed', time.time(), flush=True)"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings", "DATABASE_URL": subprocess_database_url()}
    for name in ("TEST_DATABASE_NAME", "REDIS_URL", "CHANNEL_PREFIX"):
        env.pop(name, None)
    job = await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", "shell", "-c", code, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = []
    async with asyncio.timeout(120):
        while line := (await job.stdout.readline()).decode():
            output.append(line)
            if line.startswith("committed"):
                return job, float(line.split()[1])
    await job.wait()
    raise AssertionError(f"manage.py shell did not deactivate {username}:\n{''.join(output)}")


async def closed_with(ws) -> tuple[int | None, list[dict], float]:
    """The close code, the frames before it, and when it closed (``time.time()``)."""
    code, frames = await close_of(ws, WITHIN + 3)
    return code, frames, time.time()


def assert_revoked(code: int | None, frames: list[dict], reason: str) -> None:
    assert code == protocol.CLOSE_REVOKED, (code, frames)
    error = frames[-1]
    assert error["type"] == "error" and error["reason"] == reason, frames
    assert error["code"] == (protocol.FORBIDDEN if reason == protocol.REVOKED_STAFF_REMOVED else protocol.UNAUTHENTICATED)


def saved_questions(client_ids: list[str]) -> set[str]:
    return set(Message.objects.filter(role=Message.Role.USER, client_id__in=client_ids).values_list("client_id", flat=True))


def held_conversation(owner) -> Conversation:
    """A conversation a person holds: a question there is saved and answered by nobody, so asking is cheap."""
    return Conversation.objects.create(owner=owner, title="Talk to Sam", status=Conversation.Status.AGENT)


async def ask_until_closed(ws, conversation: Conversation) -> tuple[int | None, list[dict], float, list[tuple]]:
    """Ask one question after another (each waits for its ack) until the socket closes: the last ones leave between
    the change's commit and the close, the window the re-check must cover. Returns the close code, the frames, when
    it closed, and each ask's (id, when it left, whether it was acked)."""
    from websockets.exceptions import ConnectionClosed

    frames: list[dict] = []
    asks: list[tuple[str, float, bool]] = []
    try:
        async with asyncio.timeout(180):
            while True:
                ask_id = str(uuid.uuid4())
                sent_at = time.time()
                await ws.send(json.dumps({"type": "ask", "id": ask_id, "text": "Still there?",
                                          "conversation": str(conversation.pk)}))  # fmt: skip
                while (frame := json.loads(await ws.recv()))["type"] not in ("ack", "error"):
                    frames.append(frame)
                frames.append(frame)
                asks.append((ask_id, sent_at, frame["type"] == "ack"))
                assert frame["type"] == "ack" or frame.get("reason"), frame
    except ConnectionClosed:
        # An ask sent just as the server closed fails to send while the error frame before the close still waits
        # unread: read what arrived before the close.
        closed_at = time.time()
        with contextlib.suppress(ConnectionClosed):
            while True:
                frames.append(json.loads(await ws.recv()))
        return ws.close_code, frames, closed_at, asks


async def assert_nothing_asked_after(committed: float, asks: list[tuple[str, float, bool]]) -> int:
    """Every acked question was saved, and none sent after the change committed was acked or saved; returns how many
    were sent in that window (the last one may have met the re-check, or the close)."""
    late = [ask_id for ask_id, at, acked in asks if at > committed]
    assert not any(acked for _, at, acked in asks if at > committed)
    assert not await database_sync_to_async(saved_questions)(late), "a question of a deactivated user was saved"
    acked = [ask_id for ask_id, _, ok in asks if ok]
    assert acked and await database_sync_to_async(saved_questions)(acked) == set(acked)  # asking worked before
    return len(late)


# --- the change made by another process reaches the sockets ---------------------------------------------------------
async def test_a_user_deactivated_by_another_process_loses_every_socket_within_two_seconds_on_one_node(
    daphne_server, sam
):
    node = daphne_server(CHAT_RATE_LIMIT="0")  # the default single node: no REDIS_URL, the in-memory channel layer
    conversation = await database_sync_to_async(held_conversation)(sam)
    token = await asyncio.to_thread(get_token, node, "sam", PASSWORD)
    browser = await asyncio.to_thread(Browser, node, "sam", PASSWORD)
    asking = await accepted(node, CHAT, token=token)
    sockets = [asking, await accepted(node, CHAT, session=browser.session), await accepted(node, CONSOLE, token=token)]
    asker = asyncio.create_task(ask_until_closed(asking, conversation))
    closes = [asyncio.create_task(closed_with(ws)) for ws in sockets[1:]]

    job, committed = await deactivate_in_another_process("sam")
    *results, (code, frames, closed_at, asks) = await asyncio.gather(*closes, asker)
    results.append((code, frames, closed_at))
    await job.wait()

    for code, frames, _ in results:
        assert_revoked(code, frames, protocol.REVOKED_DEACTIVATED)
    slowest = max(at for _, _, at in results) - committed
    late = await assert_nothing_asked_after(committed, asks)
    print(f"\none node, in-memory layer: {len(sockets)} sockets closed {slowest * 1000:.0f} ms after the commit; "
          f"{late} question(s) sent meanwhile, none saved")  # fmt: skip
    assert slowest <= WITHIN, f"closed {slowest:.2f} s after the change"


@pytest.mark.multinode
async def test_a_user_deactivated_by_another_process_loses_their_sockets_on_both_redis_nodes(
    daphne_server, sam, redis_available
):
    env = {"REDIS_URL": REDIS, "CHANNEL_PREFIX": f"ae-{uuid.uuid4().hex[:10]}", "CHAT_RATE_LIMIT": "0"}
    node_a, node_b = daphne_server(**env), daphne_server(**env)
    conversation = await database_sync_to_async(held_conversation)(sam)
    token = await asyncio.to_thread(get_token, node_a, "sam", PASSWORD)
    browser = await asyncio.to_thread(Browser, node_b, "sam", PASSWORD)
    asking = await accepted(node_b, CHAT, token=token)
    sockets = [asking, await accepted(node_a, CHAT, token=token), await accepted(node_a, CHAT, session=browser.session),
               await accepted(node_b, CONSOLE, session=browser.session)]  # fmt: skip
    asker = asyncio.create_task(ask_until_closed(asking, conversation))
    closes = [asyncio.create_task(closed_with(ws)) for ws in sockets[1:]]

    job, committed = await deactivate_in_another_process("sam")  # no REDIS_URL there: only NOTIFY reaches the nodes
    *results, (code, frames, closed_at, asks) = await asyncio.gather(*closes, asker)
    results.append((code, frames, closed_at))
    await job.wait()

    for code, frames, _ in results:
        assert_revoked(code, frames, protocol.REVOKED_DEACTIVATED)
    slowest = max(at for _, _, at in results) - committed
    late = await assert_nothing_asked_after(committed, asks)
    print(f"\ntwo nodes, Redis: {len(sockets)} sockets closed {slowest * 1000:.0f} ms after the commit; "
          f"{late} question(s) sent meanwhile, none saved")  # fmt: skip
    assert slowest <= WITHIN, f"closed {slowest:.2f} s after the change"


def listener_backends() -> list[int]:
    """The backends of the nodes' revocation listeners on the test database."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            ["chatsite revocation listener"],
        ).fetchall()
    return [pid for (pid,) in rows]


async def test_the_listener_comes_back_after_losing_postgresql_and_the_next_revocation_still_closes(
    daphne_server, sam
):
    node = daphne_server()
    token = await asyncio.to_thread(get_token, node, "sam", PASSWORD)
    ws = await accepted(node, CHAT, token=token)
    [before] = await asyncio.to_thread(listener_backends)

    def terminate(pid: int) -> None:  # what a PostgreSQL restart does to the listener's connection
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", [pid])

    await asyncio.to_thread(terminate, before)

    def reconnected() -> list[int]:
        deadline = time.monotonic() + 15
        while (after := listener_backends()) in ([], [before]) and time.monotonic() < deadline:
            time.sleep(0.1)
        return after

    after = await asyncio.to_thread(reconnected)
    assert after != [before] and len(after) == 1, after
    assert (await close_of(ws, 0.2))[0] is None  # losing the listener closes nobody

    def deactivate() -> None:  # this test process: its in-memory channel layer reaches no node either
        user = get_user_model().objects.get(username="sam")
        user.is_active = False
        user.save()

    await database_sync_to_async(deactivate)()
    committed = time.time()
    code, frames, closed_at = await closed_with(ws)
    assert_revoked(code, frames, protocol.REVOKED_DEACTIVATED)
    assert closed_at - committed <= WITHIN
    log = node.log()
    assert log.count("revocation listener: lost PostgreSQL") == 1, log  # one line, not one per retry
    assert "revocation listener: listening to PostgreSQL again" in log and "Traceback" not in log, log


# --- no event at all: every action re-checks its user -----------------------------------------------------------
def _history(owner) -> tuple[Conversation, Message]:
    """A conversation with one finished answer: something to join, ask for a person in, rate, resume, cancel."""
    conversation = Conversation.objects.create(owner=owner, title="Where is my parcel?")
    question = Message.objects.create(conversation=conversation, role=Message.Role.USER, author=owner,
                                      text="Where is my parcel?", client_id="q-1", state=Message.State.COMPLETE)  # fmt: skip
    answer = Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, reply_to=question,
                                    text="It is on its way.", state=Message.State.COMPLETE)  # fmt: skip
    return conversation, answer


def _deactivate(user, session_key: str) -> None:
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)


def _end_session(user, session_key: str) -> None:
    Session.objects.filter(session_key=session_key).delete()


def _change_password(user, session_key: str) -> None:
    get_user_model().objects.filter(pk=user.pk).update(password=make_password("pw-sam-Changed-2"))


def _sign_out_everywhere(user, session_key: str) -> None:
    TokenGeneration.objects.update_or_create(user=user, defaults={"generation": 1, "revoked_at": timezone.now()})


@pytest.mark.parametrize(
    ("signed_in_with", "change", "reason"),
    [("token", _deactivate, protocol.REVOKED_DEACTIVATED),
     ("session", _end_session, protocol.REVOKED_LOGOUT),
     ("session", _change_password, protocol.REVOKED_PASSWORD_CHANGED),
     ("token", _change_password, protocol.REVOKED_PASSWORD_CHANGED),
     ("token", _sign_out_everywhere, protocol.REVOKED_SIGNED_OUT_EVERYWHERE)],
    ids=["deactivated", "session-ended", "password-changed-session", "password-changed-token", "signed-out-everywhere"],
)  # fmt: skip
async def test_with_the_event_lost_every_chat_action_of_a_revoked_user_is_refused_and_closes_the_socket(
    daphne_server, sam, signed_in_with, change, reason
):
    node = daphne_server()
    conversation, answer = await database_sync_to_async(_history)(sam)
    if signed_in_with == "token":
        auth = {"token": await asyncio.to_thread(get_token, node, "sam", PASSWORD)}
    else:
        auth = {"session": (await asyncio.to_thread(Browser, node, "sam", PASSWORD)).session}
    ask_id = str(uuid.uuid4())
    actions = {
        "ask": {"type": "ask", "id": ask_id, "text": "How do I return an item?"},
        "ask in the conversation": {"type": "ask", "id": ask_id, "text": "And a refund?",
                                    "conversation": str(conversation.pk)},  # fmt: skip
        "cancel": {"type": "cancel", "message": str(answer.pk)},
        "feedback": {"type": "feedback", "message": str(answer.pk), "rating": 1},
        "handoff": {"type": "handoff", "conversation": str(conversation.pk)},
        "join": {"type": "join", "conversation": str(conversation.pk)},
        "resume": {"type": "resume", "message": str(answer.pk), "after": 0},
    }
    sockets = {name: await accepted(node, CHAT, **auth) for name in actions}  # one per action: each closes

    await database_sync_to_async(change)(sam, auth.get("session", ""))  # no signal, no NOTIFY: no event at all

    for name, frame in actions.items():
        await sockets[name].send(json.dumps(frame))
        code, frames = await close_of(sockets[name], 10)
        assert not any(f["type"] in ("ack", "feedback", "conversation", "final") for f in frames), (name, frames)
        assert_revoked(code, frames, reason)

    def untouched() -> tuple:
        conversation.refresh_from_db()
        return (len(saved_questions([ask_id])), Conversation.objects.filter(owner=sam).count(), conversation.status,
                Feedback.objects.count(), Message.objects.filter(conversation=conversation).count())  # fmt: skip

    assert await database_sync_to_async(untouched)() == (0, 1, Conversation.Status.BOT, 0, 2)
