"""One customer, few streams (issue 19, point 9): a customer has at most CHAT_MAX_STREAMS_PER_USER answers generating
at once across all their conversations and every node; the others wait with `status(queued)`, holding none of the
node's slots, and start as one of theirs ends. Real Redis (the cross-node count), real Daphne nodes for two nodes
and for a node killed while it holds a customer's slots.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis
from django.contrib.auth import get_user_model
from django.utils import translation

from conversations.streaming import admission, customer_streams
from conversations.streaming.admission import Slot
from conversations.streaming.stream import PUBSUB_LAYER
from tests.chat_support import connect
from tests.node_client import Client, get_token

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = "redis://127.0.0.1:6379/0"
LEASE_SECONDS = 3.0
REAPER_SECONDS = 1.0


def redis_keys(prefix: str, requester: str) -> dict[str, list[bytes]]:
    """The customer's held slots and waiting answers, as Redis has them."""
    client = redis.Redis.from_url(REDIS)
    try:
        return {
            name: client.zrange(f"{prefix}:streams:{requester}:{name}", 0, -1) for name in ("held", "line", "alive")
        }
    finally:
        client.close()


async def assert_all_left(prefix: str, requester: str) -> None:
    """Every answer of the customer has left Redis (an answer leaves just after its final frame went out)."""
    deadline = time.monotonic() + 2
    while (found := redis_keys(prefix, requester)) != {"held": [], "line": [], "alive": []}:
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.05)


@pytest.fixture(params=["redis", "memory"])
def limit_of_two(request, settings):
    """Two streams per customer, counted in the machine's Redis under a prefix of this test's own (or, without
    REDIS_URL, in this process); a fresh node line of four slots. Yields the Redis prefix (None: in memory)."""
    settings.CHAT_MAX_STREAMS_PER_USER = 2
    settings.CHAT_MAX_CONCURRENT_ANSWERS = 4
    settings.CHANNEL_PREFIX = f"t-streams-{uuid.uuid4().hex[:8]}"
    settings.REDIS_URL = REDIS if request.param == "redis" else ""
    admission._admissions.clear()
    yield settings.CHANNEL_PREFIX if settings.REDIS_URL else None
    admission._admissions.clear()


class Answer:
    """One answer's ``Slot`` (its customer's stream and a node slot) held in a task of its own until ``end()``."""

    def __init__(self, requester: str) -> None:
        self.requester = requester
        self.entered = asyncio.Event()
        self.done = asyncio.Event()
        self.told_own: list[str] = []
        self.told_place: list[int] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async def told(position: int, seconds: float) -> None:
            self.told_place.append(position)

        async def told_own() -> None:
            self.told_own.append(customer_streams.waiting_text())

        async with Slot(told, self.requester, told_own=told_own):
            self.entered.set()
            await self.done.wait()

    async def end(self) -> None:
        self.done.set()
        await self.task


async def settled() -> None:
    await asyncio.sleep(0.2)


async def test_a_customers_third_answer_waits_holding_no_node_slot_and_starts_when_one_of_theirs_ends(limit_of_two):
    answers = [Answer("user:a") for _ in range(3)]  # three conversations at once
    await settled()
    started = [answer for answer in answers if answer.entered.is_set()]
    (waiting,) = [answer for answer in answers if not answer.entered.is_set()]
    assert len(started) == 2
    assert waiting.told_own == [customer_streams.waiting_text()] and waiting.told_place == []
    line = admission.admission()
    assert (line.running, len(line.line)) == (2, 0)  # it waits for its customer, not in (or with) the node's slots

    other = Answer("user:b")  # another customer starts at once, in the slot a's third answer does not take
    await asyncio.wait_for(other.entered.wait(), 1)
    await settled()
    assert not waiting.entered.is_set() and line.running == 3

    ended = time.monotonic()
    await started[1].end()  # one of a's answers ends: a's waiting one starts
    await asyncio.wait_for(waiting.entered.wait(), 2)
    assert time.monotonic() - ended < customer_streams.POLL_SECONDS  # woken at once on the same node
    for answer in (started[0], waiting, other):
        await answer.end()
    assert line.running == 0
    if limit_of_two:
        await assert_all_left(limit_of_two, "user:a")


async def test_a_waiting_answer_stopped_leaves_the_line_and_the_next_one_gets_the_slot(limit_of_two):
    holders = [Answer("user:a") for _ in range(2)]
    await settled()
    stopped = Answer("user:a")
    await settled()
    next_one = Answer("user:a")  # behind the stopped one in a's line
    await settled()
    assert not stopped.entered.is_set() and not next_one.entered.is_set()

    stopped.task.cancel()  # Stop on a waiting answer
    with pytest.raises(asyncio.CancelledError):
        await stopped.task
    await holders[0].end()
    await asyncio.wait_for(next_one.entered.wait(), 2)
    for answer in (holders[1], next_one):
        await answer.end()
    if limit_of_two:
        await assert_all_left(limit_of_two, "user:a")


@pytest.mark.parametrize(
    ("language", "starts"),
    [("de", "Ihre anderen Antworten"), ("fr", "Vos autres réponses"), ("es", "Sus otras respuestas"),
     ("zh-hans", "您的其他回答"), ("en", "Your other answers")],
)  # fmt: skip
def test_the_waiting_text_tells_the_customer_in_their_language_that_their_other_answers_come_first(language, starts):
    with translation.override(language):
        assert customer_streams.waiting_text().startswith(starts)


# --- Through the chat socket (in-process ASGI, real Redis) -------------------------------------------------------


@pytest.fixture
def paced_on_redis(settings, demo_kb):
    """Answers paced to take a few seconds; frame log, channel layer and the count in the machine's Redis."""
    prefix = f"t-streams-{uuid.uuid4().hex[:8]}"
    settings.ANSWER_WORDS_PER_SECOND = 60
    settings.CHAT_MAX_STREAMS_PER_USER = 2
    settings.REDIS_URL = REDIS
    settings.CHANNEL_PREFIX = prefix
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": PUBSUB_LAYER, "CONFIG": {"hosts": [REDIS], "prefix": prefix}}}
    admission._admissions.clear()
    yield prefix
    admission._admissions.clear()


@pytest.fixture
def customers(transactional_db):
    model = get_user_model()
    return model.objects.create_user("alice", password="pw-alice-123"), model.objects.create_user("bob", password="x")


async def frames_until_finals(client, messages: set[str], wait: float = 30) -> list[dict]:
    """Every stream frame of ``messages``, in the order they arrived, until each has its final."""
    frames, finals = [], set()
    while finals != messages:
        frame = await client.recv(wait)
        if frame.get("message") in messages and "seq" in frame:
            frames.append(frame)
            if frame["type"] == "final":
                finals.add(frame["message"])
    return frames


async def test_three_questions_in_three_conversations_run_two_at_a_time_and_another_customer_goes_first(
    paced_on_redis, customers, cleanup
):
    alice, bob = customers
    asking, other = await connect(alice), await connect(bob)
    acks = [await asking.ask(q) for q in ("How do I return an item?", "How do I track my order?",
                                          "How long does a refund take?")]  # fmt: skip
    messages = [ack["message"] for ack in acks]
    assert len({ack["conversation"] for ack in acks}) == 3
    bobs = await other.ask("Can I exchange an item?")
    bob_first = await other.recv_type_for(bobs["message"])

    frames = await frames_until_finals(asking, set(messages))
    firsts = {m: next(f for f in frames if f["message"] == m) for m in messages}
    queued = [m for m in messages if firsts[m]["stage"] == "queued"]
    assert len(queued) == 1, firsts  # two answers generate, one waits
    waiting = queued[0]
    assert firsts[waiting]["seq"] == 1 and firsts[waiting]["text"] == customer_streams.waiting_text()
    order = [(f["message"], f["type"]) for f in frames]
    first_final = min(order.index((m, "final")) for m in messages if m != waiting)
    assert order.index((waiting, "token")) > first_final  # it started after one of the others ended
    assert all(f["state"] == "complete" for f in frames if f["type"] == "final")
    # Bob was not held up behind Alice's line: his answer started at once.
    assert bob_first["stage"] != "queued"
    assert (await other.until_final(bobs["message"]))[-1]["state"] == "complete"
    await assert_all_left(paced_on_redis, f"user:{alice.pk}")
    await asking.close()
    await other.close()


async def test_stop_on_a_waiting_answer_cancels_it_and_the_others_finish(paced_on_redis, customers, settings, cleanup):
    settings.CHAT_MAX_STREAMS_PER_USER = 1
    alice, _ = customers
    client = await connect(alice)
    running = await client.ask("How do I return an item?")
    await client.recv_type_for(running["message"])
    waiting = await client.ask("How do I track my order?")
    queued = await client.recv_type_for(waiting["message"])
    assert (queued["type"], queued["stage"]) == ("status", "queued")

    await client.send({"type": "cancel", "message": waiting["message"]})
    frames = await client.until_final(waiting["message"], wait=5)
    assert frames[-1]["state"] == "cancelled" and not any(f["type"] == "token" for f in frames)
    assert (await client.until_final(running["message"]))[-1]["state"] == "complete"
    await assert_all_left(paced_on_redis, f"user:{alice.pk}")
    await client.close()


# --- Two real Daphne nodes ---------------------------------------------------------------------------------------


@pytest.fixture
def two_nodes(demo_kb, daphne_server):
    """Nodes A and B on the machine's Redis (a channel prefix of this test's own), a short lease, answers paced far
    longer than the test (only the kill ends A's), and carol's bearer token."""
    env = {
        "REDIS_URL": REDIS,
        "CHANNEL_PREFIX": f"mn-streams-{uuid.uuid4().hex[:8]}",
        "ANSWER_WORDS_PER_SECOND": "4",
        "CHAT_LEASE_SECONDS": str(LEASE_SECONDS),
        "CHAT_REAPER_INTERVAL_SECONDS": str(REAPER_SECONDS),
        "CHAT_MAX_STREAMS_PER_USER": "2",
    }
    node_a, node_b = daphne_server(**env), daphne_server(**env)
    get_user_model().objects.create_user("carol", password="pw-carol-123")
    return node_a, node_b, get_token(node_a, "carol", "pw-carol-123")


@pytest.mark.multinode
async def test_two_nodes_share_the_limit_and_a_killed_node_frees_its_slots_after_their_lease(two_nodes):
    node_a, node_b, token = two_nodes
    on_a, on_b = await Client.open(node_a, token), await Client.open(node_b, token)
    held = [await on_a.ask(q) for q in ("How do I return an item?", "How do I track my order?")]
    for ack in held:
        await on_a.tokens(ack["message"], 1)  # both generate on A: carol's two streams

    third = await on_b.ask("How long does a refund take?")
    first = await on_b.stream_of(third["message"])
    assert (first["type"], first["stage"]) == ("status", "queued")
    with pytest.raises(TimeoutError):  # B does not start it while A holds carol's two streams
        await on_b.stream_of(third["message"], wait=2 * REAPER_SECONDS)

    node_a.kill()  # SIGKILL: A's slots free only when their lease lapses
    killed_at = time.monotonic()
    started = await on_b.stream_of(third["message"], wait=LEASE_SECONDS + 10)
    started_after = time.monotonic() - killed_at
    assert (started["type"], started["stage"]) == ("status", "retrieving")
    # A renewed at most one reaper interval before it died: the slots lapse a lease after that, plus B's next look.
    assert LEASE_SECONDS - REAPER_SECONDS - 0.5 <= started_after <= LEASE_SECONDS + customer_streams.POLL_SECONDS + 2
    await on_b.close()
