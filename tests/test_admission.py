"""Admission control: a node generates at most CHAT_MAX_CONCURRENT_ANSWERS answers at once, the rest wait in line
first come first served and are told their place; past CHAT_NODE_QUEUE_LIMIT a new question gets `busy`."""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Message
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

        await line.enter(tell)
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
    line.leave(2.0)  # "a" finished: its slot goes to the first in line
    await asyncio.sleep(0.05)
    assert order == ["a", "b", "c"]
    await asyncio.sleep(1.1)  # positions are re-told when they change (at most once a second)
    assert told["e"] == [3, 1]
    line.leave(2.0)
    line.leave(2.0)
    await asyncio.gather(*tasks.values(), return_exceptions=True)
    assert order == ["a", "b", "c", "e"] and line.running == 1 and not line.line  # "e" still answers


@pytest.fixture
def alice(transactional_db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def one_slot(settings, fast_answers):
    settings.CHAT_MAX_CONCURRENT_ANSWERS = 1
    settings.ANSWER_WORDS_PER_SECOND = 40
    from conversations.streaming import admission

    admission._admissions.clear()  # a fresh line with this test's slot count
    yield
    admission._admissions.clear()


async def test_a_second_customer_waits_for_the_slot_and_is_told_so(demo_kb, alice, one_slot, cleanup):
    first, second = await connect(alice), await connect(alice)
    ack_first = await first.ask("How do I return an item?")
    ack_second = await second.ask("How long does a refund take?")
    frames_second = await second.until_final(ack_second["message"])
    frames_first = await first.until_final(ack_first["message"])
    assert frames_first[-1]["state"] == frames_second[-1]["state"] == "complete"
    queued = [f for f in frames_second if f["type"] == "status" and f["stage"] == "queued"]
    assert queued and queued[0]["seq"] == 1
    assert queued[0]["text"].startswith("You are number 1 in line")
    assert not any(f["type"] == "status" and f["stage"] == "queued" for f in frames_first)
    await first.close()
    await second.close()


async def test_a_new_question_is_refused_with_retry_after_when_the_line_is_full(demo_kb, alice, one_slot, settings,
                                                                                cleanup):  # fmt: skip
    settings.CHAT_NODE_QUEUE_LIMIT = 0  # no waiting at all: one answer at a time, others come back later
    settings.ANSWER_WORDS_PER_SECOND = 5
    first, second = await connect(alice), await connect(alice)
    ack_first = await first.ask("How do I return an item?")
    while (await first.recv_type_for(ack_first["message"]))["type"] != "token":
        pass  # generating: the node's only slot is taken
    await second.send({"type": "ask", "id": "full-line-1", "text": "How long does a refund take?"})
    refusal = await second.recv_type("error")
    assert (refusal["code"], refusal["id"]) == ("busy", "full-line-1") and refusal["retry_after"] >= 1
    assert not await Message.objects.filter(client_id="full-line-1").aexists()  # not saved: the page keeps it
    await first.send({"type": "cancel", "message": ack_first["message"]})
    await first.until_final(ack_first["message"])
    await first.close()
    await second.close()
