"""Redis and PostgreSQL blips lose nothing: an answer in flight finishes with everything it streamed, and a
question sent during the outage is refused with its id and ``retry_after`` (then answered when sent again).

Real services, broken for real: a Daphne node on a Redis of the test's own (tests/fault_services.py), killed and
restarted empty or frozen with SIGSTOP; and, in the DATABASE_URL run only (`make test-database-url`, marker
``postgres_faults``), the TCP PostgreSQL stopped with ``pg_ctl -m fast`` and started again on the same port.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid

import pytest
import redis
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection

from chatsite.outages import OneLineForOutages
from conversations.models import Message
from tests import fault_services
from tests.node_client import Client, assert_contiguous, get_token, text_of

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

QUESTION = "How do I return an item?"
PACE = "6"  # words per second: the answer lasts well beyond the outage


@pytest.fixture
def own_redis(tmp_path):
    server = fault_services.start_redis(tmp_path / "redis")
    yield server
    server.stop()


def node_env(redis_url: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "CHANNEL_PREFIX": f"fault-{uuid.uuid4().hex[:10]}",
        "ANSWER_WORDS_PER_SECOND": PACE,
        "CHAT_LEASE_SECONDS": "4",
        "CHAT_REAPER_INTERVAL_SECONDS": "1",
    }


@pytest.fixture
def node(demo_kb, daphne_server, own_redis):
    return daphne_server(**node_env(own_redis.url))


@pytest.fixture
def token(node):
    get_user_model().objects.create_user("fran", password="pw-fran-123")
    return get_token(node, "fran", "pw-fran-123")


async def message_row(pk: str) -> Message:
    return await database_sync_to_async(Message.objects.get)(pk=pk)


async def questions_with_id(client_id: str) -> int:
    return await database_sync_to_async(Message.objects.filter(role=Message.Role.USER, client_id=client_id).count)()


async def assert_finishes_whole(customer: Client, ack: dict, seen: list[dict]) -> dict:
    """The rest of the answer arrives; the final's text is every token the client got; the row equals it."""
    rest = await customer.until_final(ack["message"], wait=90)
    frames = seen + rest
    assert_contiguous(frames)
    final = frames[-1]
    assert final["state"] == "complete", final
    assert final["text"] == text_of(frames) and len(final["text"].split()) > 10
    row = await message_row(ack["message"])
    assert (row.state, row.text, row.seq_last) == ("complete", final["text"], final["seq"])
    # A second socket replays the whole answer, same frames, from the log the node restored.
    again = await Client.open(customer.node, customer.token)
    await again.send({"type": "resume", "message": ack["message"], "after": 0})
    assert await again.until_final(ack["message"]) == frames
    await again.close()
    return final


async def refused_then_answered(customer: Client, restore) -> None:
    """An ask during the outage gets ``unavailable`` with its id and retry_after; sent again (same id) after
    ``restore()`` it is answered, and saved once."""
    ask_id = str(uuid.uuid4())
    await customer.send({"type": "ask", "id": ask_id, "text": "Can I exchange an item?"})
    reply = await customer.recv(30)
    if reply["type"] == "error":
        assert (reply["code"], reply["id"]) == ("unavailable", ask_id), reply
        assert reply["retry_after"] >= 1
    else:  # saved before the outage bit: then it must be answered
        assert reply["type"] == "ack" and reply["id"] == ask_id, reply
    await restore()
    deadline = asyncio.get_running_loop().time() + 60
    while True:  # what the chat page does: send it again after retry_after until it is taken
        await customer.send({"type": "ask", "id": ask_id, "text": "Can I exchange an item?"})
        reply = await customer.recv(30)
        while reply["type"] not in ("ack", "error"):
            reply = await customer.recv(30)
        if reply["type"] == "ack":
            break
        assert reply["code"] == "unavailable" and asyncio.get_running_loop().time() < deadline, reply
        await asyncio.sleep(reply["retry_after"])
    frames = await customer.until_final(reply["message"], wait=90)
    assert frames[-1]["state"] == "complete"
    assert await questions_with_id(ask_id) == 1


async def test_answer_survives_redis_killed_and_restarted_empty(node, own_redis, token):
    customer = await Client.open(node, token)
    ack = await customer.ask(QUESTION)
    seen = await customer.tokens(ack["message"], 3)
    own_redis.kill()  # everything in Redis is gone: frame logs, subscriptions, heartbeats
    await asyncio.sleep(3)
    own_redis.start()
    await assert_finishes_whole(customer, ack, seen)
    assert "Traceback" not in node.log()
    # New conversations work at once, on the same socket and on a new one.
    fresh = await Client.open(node, token)
    frames = await fresh.until_final((await fresh.ask("How do I track my order?"))["message"])
    assert frames[-1]["state"] == "complete"
    await customer.close()
    await fresh.close()


async def test_answer_survives_redis_frozen_for_ten_seconds(node, own_redis, token):
    customer = await Client.open(node, token)
    ack = await customer.ask(QUESTION)
    seen = await customer.tokens(ack["message"], 3)
    own_redis.freeze()
    await asyncio.sleep(10)
    own_redis.thaw()
    await assert_finishes_whole(customer, ack, seen)
    await customer.close()


async def test_question_sent_while_redis_is_down_is_refused_with_its_id_then_answered(node, own_redis, token):
    customer = await Client.open(node, token)
    first = await customer.ask(QUESTION)
    await customer.until_final(first["message"])
    own_redis.kill()

    async def restore() -> None:
        own_redis.start()

    await refused_then_answered(customer, restore)
    await customer.close()


# --- PostgreSQL (the DATABASE_URL run only) -----------------------------------------------------------------
@pytest.fixture
def tcp_postgres():
    """Stop/start the TCP PostgreSQL this run's database lives on; always started again at the end."""
    port = int(connection.settings_dict["PORT"])
    data = fault_services.tcp_postgres_data_dir()
    yield port
    if not (data / "postmaster.pid").exists():
        fault_services.start_postgres(port)
    connection.close()  # this thread's connection died with the server


@pytest.mark.postgres_faults
async def test_answer_survives_postgres_stopped_fifteen_seconds(node, token, tcp_postgres):
    customer = await Client.open(node, token)
    ack = await customer.ask(QUESTION)
    seen = await customer.tokens(ack["message"], 3)
    await asyncio.to_thread(fault_services.stop_postgres)
    await asyncio.sleep(15)
    await asyncio.to_thread(fault_services.start_postgres, tcp_postgres)
    await assert_finishes_whole(customer, ack, seen)
    reaped = [line for line in node.log().splitlines() if "reaped answer" in line]
    assert not reaped, reaped
    await customer.close()


@pytest.mark.postgres_faults
async def test_question_sent_while_postgres_is_down_is_refused_with_its_id_then_answered(node, token, tcp_postgres):
    customer = await Client.open(node, token)
    first = await customer.ask(QUESTION)
    await customer.until_final(first["message"])
    await asyncio.to_thread(fault_services.stop_postgres)

    async def restore() -> None:
        await asyncio.sleep(5)
        await asyncio.to_thread(fault_services.start_postgres, tcp_postgres)

    await refused_then_answered(customer, restore)
    await customer.close()


# --- what the log shows of it (chatsite.outages.OneLineForOutages, the console handler's filter) ----------------
def _logged(name: str, exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        record = logging.getLogger(name).makeRecord(name, logging.ERROR, __file__, 1, "%s went wrong", ("it",),
                                                    sys.exc_info())  # fmt: skip
    OneLineForOutages().filter(record)
    return record


@pytest.mark.parametrize(
    ("logger", "exc", "one_line"),
    [
        ("channels_redis.core", redis.exceptions.ConnectionError("Connection refused"), True),  # Redis down
        ("channels_redis.pubsub", asyncio.CancelledError(), True),  # cleanup of a socket closed mid-handshake
        ("channels_redis.pubsub", ValueError("a bug"), False),
        ("conversations.consumers", asyncio.CancelledError(), False),  # ours: keeps its traceback
    ],
)
def test_outages_and_cancelled_cleanups_are_logged_as_one_line_and_bugs_keep_their_traceback(logger, exc, one_line):
    record = _logged(logger, exc)
    assert (record.exc_info is None) is one_line
    if one_line:
        assert record.getMessage() == f"it went wrong ({type(exc).__name__}: {exc})"
