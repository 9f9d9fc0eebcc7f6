"""Unread counts in the staff console only for what a person has not seen and needs to (issue 21, point 4).

The rule (conversations/inbox.py): a row counts the customer messages since staff last read the conversation only
while it waits for a person or a person holds it; a conversation the assistant answers, or a resolved one, counts
none. Over the real ASGI stack (chat and console sockets, the real answering pipeline on the demo knowledge base)
and PostgreSQL; the list stays a fixed number of queries however many rows it has.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import inbox
from conversations.models import Conversation, Message
from tests import test_console
from tests.chat_support import ChatClient, connect
from tests.test_console import staff_console, watch

pytestmark = pytest.mark.django_db(transaction=True)

customer, sam, bob = test_console.customer, test_console.sam, test_console.bob  # its fixtures: Carol, staff Sam and Bob


async def row_when(client: ChatClient, conversation: str, done: Callable[[dict], bool]) -> tuple[dict, list[dict]]:
    """Rows of ``conversation`` as they arrive live, up to the first one ``done`` accepts: (that row, all seen)."""
    seen = []
    while True:
        item = (await client.recv_type("conversation_update"))["item"]
        if item["conversation"] != conversation:
            continue
        seen.append(item)
        if done(item):
            return item, seen


def answered(item: dict) -> bool:
    """The row shows the assistant's finished answer as its last message."""
    last = item["last_message"] or {}
    return last.get("role") == "assistant" and last.get("text") != "Answering…"


async def ask_and_wait(chat: ChatClient, text: str, conversation: str | None = None) -> str:
    fields = {"conversation": conversation} if conversation else {}
    ack = await chat.ask(text, **fields)
    if ack["message"] is not None:
        await chat.until_final(ack["message"])
    return ack["conversation"]


async def test_answered_questions_are_not_unread_until_the_customer_waits_for_a_person(
    demo_kb, customer, sam, bob, fast_answers, cleanup
):
    staff, _ = await staff_console(sam)
    chat = await connect(customer)

    # Two questions the assistant answers: no count on any row the consoles get live, nor in a new snapshot.
    conversation = await ask_and_wait(chat, "How do I return an item?")
    _, first = await row_when(staff, conversation, answered)
    await ask_and_wait(chat, "How long does delivery take?", conversation)
    _, second = await row_when(staff, conversation, answered)
    rows = first + second
    assert {r["status"] for r in rows} == {"bot"} and [r["unread"] for r in rows] == [0] * len(rows)
    other, snapshot = await staff_console(bob)
    assert [(i["conversation"], i["unread"]) for i in snapshot["items"]] == [(conversation, 0)]

    # The customer asks for a person: what no person has seen counts now, the answered questions too.
    await chat.send({"type": "handoff", "conversation": conversation})
    waiting, _ = await row_when(staff, conversation, lambda i: i["status"] == "waiting_for_agent")
    assert waiting["unread"] == 2
    await ask_and_wait(chat, "It is the blue lamp, order 1234.", conversation)  # still waiting
    more, _ = await row_when(other, conversation, lambda i: i["last_message"]["role"] == "user")
    assert more["status"] == "waiting_for_agent" and more["unread"] == 3

    # A staff member opens it: read, for every console.
    await watch(other, conversation)
    read, _ = await row_when(staff, conversation, lambda i: i["unread"] == 0)
    assert read["status"] == "waiting_for_agent"
    await other.close()

    # Held by a person (taken over from the list, not watched): the customer's next message is unread until the
    # person replies.
    await staff.send({"type": "take_over", "conversation": conversation})
    held, _ = await row_when(staff, conversation, lambda i: i["status"] == "agent")
    assert held["unread"] == 0
    await chat.ask("Are you there?", conversation=conversation)
    asked, _ = await row_when(staff, conversation, lambda i: i["last_message"]["role"] == "user")
    assert asked["unread"] == 1
    reply = {"type": "agent_message", "conversation": conversation, "id": str(uuid.uuid4()), "text": "Yes, Carol."}
    await staff.send(reply)
    replied, _ = await row_when(staff, conversation, lambda i: i["last_message"]["role"] == "agent")
    assert replied["unread"] == 0

    # Handed back: the assistant answers again and nothing counts; asking for a person again counts what came
    # since the person's last read (their reply), the question the assistant answered meanwhile.
    await staff.send({"type": "hand_back", "conversation": conversation})
    await row_when(staff, conversation, lambda i: i["status"] == "bot")
    # Replying made Sam's console follow the conversation, and a console showing it reads each new question as it
    # comes (conversations/console_consumer.py): Sam closes it, so that what follows is seen by nobody.
    await staff.close()
    staff, _ = await staff_console(sam)
    await ask_and_wait(chat, "Can I change my delivery address?", conversation)
    _, rows = await row_when(staff, conversation, answered)
    assert [r["unread"] for r in rows] == [0] * len(rows)
    await chat.send({"type": "handoff", "conversation": conversation})
    again, _ = await row_when(staff, conversation, lambda i: i["status"] == "waiting_for_agent")
    assert again["unread"] == 1

    # Resolved: nothing to read.
    await staff.send({"type": "take_over", "conversation": conversation})
    await row_when(staff, conversation, lambda i: i["status"] == "agent")
    await chat.ask("Thanks, that is all.", conversation=conversation)
    await row_when(staff, conversation, lambda i: i["unread"] == 1)
    await staff.send({"type": "resolve", "conversation": conversation})
    resolved, _ = await row_when(staff, conversation, lambda i: i["status"] == "resolved")
    assert resolved["unread"] == 0
    await chat.close()
    await staff.close()


def _conversation(owner, status: str, questions: int, read_after: int | None = None) -> Conversation:
    """A conversation in ``status`` with ``questions`` customer messages (each answered), a minute apart; with
    ``read_after``, staff read it after that many."""
    conversation = Conversation.objects.create(owner=owner, title=f"{status} {questions}", status=status)
    start = timezone.now() - timedelta(hours=1)
    for n in range(questions):
        at = start + timedelta(minutes=n)
        question = Message.objects.create(conversation=conversation, role="user", text=f"Question {n}")
        answer = Message.objects.create(conversation=conversation, role="assistant", text="An answer.",
                                        reply_to=question, state="complete")  # fmt: skip
        Message.objects.filter(pk=question.pk).update(created_at=at)
        Message.objects.filter(pk=answer.pk).update(created_at=at + timedelta(seconds=5))
        if read_after is not None and n + 1 == read_after:
            conversation.agent_read_at = at + timedelta(seconds=30)
    if status == "waiting_for_agent":
        conversation.waiting_since = start
    conversation.save()
    return conversation


def test_the_list_counts_only_where_a_person_is_needed_in_a_fixed_number_of_queries(client, customer, sam):
    def snapshot() -> tuple[dict[str, int], int]:
        with CaptureQueriesContext(connection) as queries:
            items = inbox.list_items()
        return {i["title"]: i["unread"] for i in items}, len(queries)

    _conversation(customer, "bot", 2)
    _conversation(customer, "waiting_for_agent", 3)
    _conversation(customer, "resolved", 1)
    few, few_queries = snapshot()
    assert few == {"bot 2": 0, "waiting_for_agent 3": 3, "resolved 1": 0}

    for questions in range(1, 6):
        _conversation(customer, "bot", questions + 2)
        _conversation(customer, "waiting_for_agent", questions + 3, read_after=questions)
        _conversation(customer, "resolved", questions + 1)
    many, many_queries = snapshot()
    assert many_queries == few_queries <= 5  # the same few queries however many rows (rows, last messages, …)
    for questions in range(1, 6):
        assert many[f"bot {questions + 2}"] == 0 and many[f"resolved {questions + 1}"] == 0
        assert many[f"waiting_for_agent {questions + 3}"] == 3  # only what came after the read

    # The console's page: a badge only on the waiting rows (the row template's empty copy has none either).
    client.force_login(sam)
    page = client.get("/console/").content.decode()
    badges = re.findall(r'<span class="unread" data-unread( hidden)?[^>]*>(\d*)</span>', page)
    assert sorted(n for hidden, n in badges if not hidden) == ["3"] * 6
    assert len([1 for hidden, _ in badges if hidden]) == 6 + 6 + 1
