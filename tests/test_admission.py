"""Admission control: a node generates at most CHAT_MAX_CONCURRENT_ANSWERS answers at once, the rest wait in line
first come first served and are told their place; past CHAT_NODE_QUEUE_LIMIT a new question gets `busy`."""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Message
from conversations.streaming import admission
from conversations.streaming.admission import Admission
from tests.chat_support import connect


async def test_answers_past_the_slots_wait_in_line_in_order_and_hear_their_place():
    line = Admission(slots=2)
    told: dict[str, list[int]] = {name: [] for name in "abcde"}
    order: list[str] = []

    async def answer(name: str) -> None:
        async def tell(position: int, seconds: float) -> None:
            assert seconds > 0
            told[name].append(position)

        await line.enter(tell, requester=name)
        order.append(name)

    tasks = {}
    for name in "abcde":
        tasks[name] = asyncio.create_task(answer(name))
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    assert order == ["a", "b"] and line.running == 2
    assert (told["c"], told["d"], told["e"]) == ([1], [2], [3])

    tasks["d"].cancel()  # a customer who stopped waiting leaves the line
    await asyncio.gather(tasks["d"], return_exceptions=True)
    line.leave(2.0, "a")  # "a" finished: its slot goes to the first in line
    await asyncio.sleep(0.05)
    assert order == ["a", "b", "c"]
    await asyncio.sleep(admission.POSITION_EVERY_SECONDS + 0.1)  # re-told when it changes, at most this often
    assert told["e"] == [3, 1]
    line.leave(2.0, "b")
    line.leave(2.0, "c")
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert order == ["a", "b", "c", "e"] and line.running == 1 and not line.line  # "e" still answers


async def test_one_customer_holds_at_most_half_the_slots_so_another_customer_starts_at_once():
    line = Admission(slots=4)
    started: list[str] = []

    async def answer(requester: str, name: str) -> None:
        async def tell(position: int, seconds: float) -> None:
            pass

        await line.enter(tell, requester=requester)
        started.append(name)

    flood = [asyncio.create_task(answer("user:a", f"a{i}")) for i in range(1, 5)]  # four conversations at once
    await asyncio.sleep(0.05)
    assert started == ["a1", "a2"] and [entry[0] for entry in line.line] == ["user:a", "user:a"]
    await answer("user:b", "b1")  # two slots are free of customer a: b does not wait behind a's line
    assert started == ["a1", "a2", "b1"] and line.running == 3
    line.leave(1.0, "user:a")  # one of a's answers reached its first token: a's next one takes its place
    await asyncio.sleep(0.05)
    assert started == ["a1", "a2", "b1", "a3"] and line.held["user:a"] == 2
    line.leave(1.0, "user:b")  # b's slot frees: a is still at its share, so it stays free for someone else
    await asyncio.sleep(0.05)
    assert started[-1] == "a3" and line.running == 2
    for _ in range(3):
        line.leave(1.0, "user:a")
        await asyncio.sleep(0.05)
    await asyncio.gather(*flood)
    assert started[-1] == "a4" and not line.line


@pytest.fixture
def alice(transactional_db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def one_slot(settings, fast_answers):
    settings.CHAT_MAX_CONCURRENT_ANSWERS = 1
    admission._admissions.clear()  # a fresh line with this test's slot count
    yield
    admission._admissions.clear()


ANOTHER_CUSTOMER = "user:another"


async def taken_slot() -> Admission:
    """This node's line with its only slot taken, as by another customer's answer being prepared."""
    line = admission.admission()
    await line.enter(told=None, requester=ANOTHER_CUSTOMER)  # a free slot: taken at once, nothing to tell
    return line


async def test_an_answer_waiting_for_a_slot_tells_the_customer_and_goes_on_when_it_frees(demo_kb, alice, one_slot,
                                                                                           cleanup):  # fmt: skip
    line = await taken_slot()
    client = await connect(alice)
    ack = await client.ask("How long does a refund take?")
    queued = await client.recv_type_for(ack["message"])
    assert (queued["type"], queued["stage"], queued["seq"]) == ("status", "queued", 1)
    assert queued["text"].startswith("You are number 1 in line — about ")
    assert await client.quiet(0.5)  # nothing else while it waits
    line.leave(1.0, ANOTHER_CUSTOMER)  # the other answer reached its first token: the slot is free
    frames = [queued, *await client.until_final(ack["message"])]
    assert frames[-1]["state"] == "complete"
    assert [f["stage"] for f in frames if f["type"] == "status"][:2] == ["queued", "retrieving"]
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    await client.close()


async def test_a_new_question_is_refused_with_retry_after_when_the_line_is_full(demo_kb, alice, one_slot, settings,
                                                                                cleanup):  # fmt: skip
    settings.CHAT_NODE_QUEUE_LIMIT = 0  # no waiting at all: with the slot taken, new questions come back later
    line = await taken_slot()
    client = await connect(alice)
    await client.send({"type": "ask", "id": "full-line-1", "text": "How long does a refund take?"})
    refusal = await client.recv_type("error")
    assert (refusal["code"], refusal["id"]) == ("busy", "full-line-1") and refusal["retry_after"] >= 1
    assert not await Message.objects.filter(client_id="full-line-1").aexists()  # not saved: the page keeps it
    line.leave(1.0, ANOTHER_CUSTOMER)
    ack = await client.ask("How long does a refund take?", id="full-line-1")  # sent again: taken now
    assert (await client.until_final(ack["message"]))[-1]["state"] == "complete"
    await client.close()
