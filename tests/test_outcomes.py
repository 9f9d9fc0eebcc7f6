"""Outcomes and CSAT (issue 21, point 1; conversations/outcomes.py, conversations/csat.py, docs/analytics.md).

Every conversation gets an outcome — resolved by the assistant, handed to a person, resolved by a person,
abandoned, reopened — when it ends (the customer's "End chat", staff's "Resolve") or when it has been quiet for
the window; the customer coming back reopens it. CSAT is asked once a conversation ended, for the assistant's and
people's conversations alike. Against the real database, with the chat socket on the real ASGI stack; the answers
that find nothing are real answers of the real pipeline.
"""

from __future__ import annotations

import importlib
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from conversations import console, outcomes
from conversations.models import Conversation, ConversationRating, Feedback, KnowledgeGap, Message
from conversations.outcomes import Ending, classify
from knowledge import inference
from knowledge.models import KnowledgeBase
from tests.chat_support import connect

pytestmark = pytest.mark.django_db(transaction=True)

Outcome = Conversation.Outcome
NOW = timezone.now()
HOUR = timedelta(hours=1)


@pytest.fixture
def people(transactional_db):
    users = get_user_model().objects
    return (
        users.create_user("carol", password="pw-carol-Outcomes-1"),
        users.create_user("dave", password="pw-dave-Outcomes-1"),
        users.create_user("sam", password="pw-sam-Outcomes-1", first_name="Sam", is_staff=True),
    )


def conversation_of(owner, *, answered: bool = True, **fields) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title="Parcel", **fields)
    question = Message.objects.create(conversation=conversation, role="user", text="Where is my parcel?")
    if answered:
        Message.objects.create(conversation=conversation, role="assistant", reply_to=question, state="complete",
                               text="It ships in 2 days [1].")  # fmt: skip
    return conversation


def quiet_for(conversation: Conversation, age: timedelta) -> None:
    """Nobody wrote in it for ``age`` (updated_at is auto_now: set it with an UPDATE)."""
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now() - age)


# --- how an ending decides the outcome -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("handed_off", "replied", "ending", "answered", "expected"),
    [
        (False, False, Ending.CUSTOMER_ENDED, True, Outcome.BOT_RESOLVED),
        (False, False, Ending.QUIET, True, Outcome.BOT_RESOLVED),
        (False, False, Ending.STAFF_RESOLVED, True, Outcome.BOT_RESOLVED),
        (False, False, Ending.QUIET, False, Outcome.ABANDONED),  # asked, left before any answer finished
        (True, False, Ending.QUIET, True, Outcome.ABANDONED),  # asked for a person, left before one replied
        (True, False, Ending.CUSTOMER_ENDED, True, Outcome.ABANDONED),
        (True, False, Ending.STAFF_RESOLVED, True, Outcome.HANDED_OFF),  # staff closed it without a word
        (True, True, Ending.STAFF_RESOLVED, True, Outcome.AGENT_RESOLVED),
        (True, True, Ending.CUSTOMER_ENDED, True, Outcome.AGENT_RESOLVED),
        (True, True, Ending.QUIET, True, Outcome.HANDED_OFF),  # a person replied, nobody closed it
    ],
)
def test_an_ending_and_who_answered_decide_the_outcome(handed_off, replied, ending, answered, expected):
    conversation = Conversation(
        handed_off_at=NOW if handed_off else None, first_agent_reply_at=NOW if replied else None
    )
    assert classify(conversation, ending, answered=answered) == expected


# --- the customer ends it, and rates it ------------------------------------------------------------------------
async def test_the_customer_ends_the_chat_then_rates_it_and_other_tabs_see_it(people, cleanup):
    carol, dave, _sam = people
    conversation = await database_sync_to_async(conversation_of)(carol)
    first, second = await connect(carol), await connect(carol)
    for client in (first, second):
        await client.send({"type": "join", "conversation": str(conversation.pk)})
        joined = await client.recv_type("conversation")
        assert (joined["ended"], joined["rating"]) == (False, None)

    # Rating before the end is refused, with the frame's id.
    await first.send({"type": "rate", "id": "r-1", "conversation": str(conversation.pk), "score": 5})
    refused = await first.recv_type("error")
    assert (refused["code"], refused["id"]) == ("forbidden", "r-1")

    await first.send({"type": "end", "conversation": str(conversation.pk)})
    for client in (first, second):
        ended = await client.recv_type("conversation")
        assert (ended["status"], ended["ended"], ended["rating"]) == ("resolved", True, None)
    row = await Conversation.objects.aget(pk=conversation.pk)
    assert row.outcome == Outcome.BOT_RESOLVED and row.ended_at is not None and row.outcome_at is not None
    assert await Message.objects.filter(conversation=row, role="system", text__contains="ended").aexists()

    # Ending again changes nothing (the same frame comes back).
    await first.send({"type": "end", "conversation": str(conversation.pk)})
    again = await first.recv_type("conversation")
    assert again["ended"] and (await Conversation.objects.aget(pk=conversation.pk)).ended_at == row.ended_at

    await second.recv_type("conversation")  # the second end's frame reaches every socket too
    await first.send({"type": "rate", "conversation": str(conversation.pk), "score": 2, "comment": "Slow"})
    for client in (first, second):
        rated = await client.recv_type("conversation")
        assert rated["rating"] == {"score": 2, "comment": "Slow"}
    await first.send({"type": "rate", "conversation": str(conversation.pk), "score": 4})  # changed their mind
    assert (await first.recv_type("conversation"))["rating"] == {"score": 4, "comment": ""}
    rating = await ConversationRating.objects.aget(conversation_id=conversation.pk)
    assert (rating.score, rating.by_person) == (4, False)

    # Out of range, or someone else's conversation: refused, nothing saved.
    for bad in (0, 6, "5", True):
        await first.send({"type": "rate", "conversation": str(conversation.pk), "score": bad})
        assert (await first.recv_type("error"))["code"] == "invalid"
    other = await connect(dave)
    await other.send({"type": "end", "conversation": str(conversation.pk)})
    assert (await other.recv_type("error"))["code"] == "not_found"
    await other.send({"type": "rate", "conversation": str(conversation.pk), "score": 1})
    assert (await other.recv_type("error"))["code"] == "not_found"
    assert (await ConversationRating.objects.aget(conversation_id=conversation.pk)).score == 4
    for client in (first, second, other):
        await client.close()


async def test_a_person_who_replied_and_resolved_makes_it_resolved_by_a_person_rated_as_theirs(people, cleanup):
    carol, _dave, sam = people
    conversation = await database_sync_to_async(conversation_of)(carol)
    customer = await connect(carol)
    await customer.send({"type": "handoff", "conversation": str(conversation.pk)})
    await customer.recv_type("conversation")
    handed = await Conversation.objects.aget(pk=conversation.pk)
    assert handed.handed_off_at is not None and handed.outcome == ""

    await console.take_over(conversation.pk, sam)
    await console.send_agent_message(conversation.pk, sam, "a-1", "Your parcel left today.")
    await console.send_agent_message(conversation.pk, sam, "a-2", "Anything else?")
    replied = await Conversation.objects.aget(pk=conversation.pk)
    first_reply = await Message.objects.filter(conversation=replied, role="agent").order_by("created_at").afirst()
    assert replied.first_agent_reply_at == first_reply.created_at  # the first reply, not the latest
    assert replied.handed_off_at == handed.handed_off_at  # asked once, counted once

    await console.resolve(conversation.pk, sam)
    resolved = await customer.recv_type("conversation")
    while resolved["status"] != "resolved":
        resolved = await customer.recv_type("conversation")
    assert resolved["ended"] and resolved["rating"] is None  # the page asks for a rating now
    row = await Conversation.objects.aget(pk=conversation.pk)
    assert row.outcome == Outcome.AGENT_RESOLVED
    await customer.send({"type": "rate", "conversation": str(conversation.pk), "score": 5})
    await customer.recv_type("conversation")
    assert (await ConversationRating.objects.aget(conversation_id=conversation.pk)).by_person is True
    await customer.close()


async def test_a_question_after_the_end_reopens_it_within_the_window_and_starts_afresh_after(
    people, demo_kb, fast_answers, cleanup
):
    carol, _dave, _sam = people
    client = await connect(carol)
    ack = await client.ask("How do I return an item?")
    await client.until_final(ack["message"])
    await client.send({"type": "end", "conversation": ack["conversation"]})
    await client.recv_type("conversation")
    assert (await Conversation.objects.aget(pk=ack["conversation"])).outcome == Outcome.BOT_RESOLVED

    again = await client.ask("And how long does the refund take?", conversation=ack["conversation"])
    row = await Conversation.objects.aget(pk=ack["conversation"])
    assert (row.outcome, row.ended_at, row.status) == (Outcome.REOPENED, None, "bot")
    await client.until_final(again["message"])

    # Ended long ago (beyond the window): a new question starts a new stretch, its outcome open again.
    await Conversation.objects.filter(pk=row.pk).aupdate(
        ended_at=timezone.now() - timedelta(days=3), outcome=Outcome.BOT_RESOLVED, status="resolved"
    )
    late = await client.ask("Can I exchange an item?", conversation=ack["conversation"])
    row = await Conversation.objects.aget(pk=ack["conversation"])
    assert (row.outcome, row.ended_at) == ("", None)
    await client.until_final(late["message"])
    await client.close()


async def test_regenerating_an_answer_after_the_end_opens_the_conversation_again(
    people, demo_kb, fast_answers, cleanup
):
    carol, _dave, _sam = people
    client = await connect(carol)
    ack = await client.ask("How do I return an item?")
    await client.until_final(ack["message"])
    await client.send({"type": "end", "conversation": ack["conversation"]})
    assert (await client.recv_type("conversation"))["ended"] is True

    await client.send({"type": "regenerate", "message": ack["message"], "id": "again-1"})
    version = await client.recv_type("answer_version")
    opened = await client.recv_type("conversation")  # the rating panel goes, "End chat" comes back
    assert (opened["status"], opened["ended"]) == ("bot", False)
    row = await Conversation.objects.aget(pk=ack["conversation"])
    assert (row.outcome, row.ended_at) == (Outcome.REOPENED, None)
    await client.until_final(version["message"])
    await client.close()


# --- the sweep -------------------------------------------------------------------------------------------------
def test_the_sweep_settles_quiet_conversations_and_leaves_the_rest(people, settings):
    carol, _dave, sam = people
    settings.OUTCOME_WINDOW_SECONDS = 3600
    answered = conversation_of(carol)
    unanswered = conversation_of(carol, answered=False)
    abandoned = conversation_of(carol, handed_off_at=NOW - 3 * HOUR)
    handed = conversation_of(carol, handed_off_at=NOW - 3 * HOUR, first_agent_reply_at=NOW - 2 * HOUR)
    recent = conversation_of(carol)
    streaming = conversation_of(carol)
    Message.objects.create(conversation=streaming, role="assistant", state="streaming")
    ended = conversation_of(carol, ended_at=NOW - 5 * HOUR, outcome=Outcome.AGENT_RESOLVED)
    for conversation in (answered, unanswered, abandoned, handed, streaming, ended):
        quiet_for(conversation, 2 * HOUR)
    quiet_for(recent, timedelta(minutes=30))
    before = dict(Conversation.objects.values_list("pk", "updated_at"))

    assert outcomes.settle_quiet() == 4
    found = dict(Conversation.objects.values_list("pk", "outcome"))
    assert found[answered.pk] == Outcome.BOT_RESOLVED
    assert found[unanswered.pk] == Outcome.ABANDONED
    assert found[abandoned.pk] == Outcome.ABANDONED
    assert found[handed.pk] == Outcome.HANDED_OFF
    assert found[recent.pk] == found[streaming.pk] == ""
    assert found[ended.pk] == Outcome.AGENT_RESOLVED
    settled = Conversation.objects.get(pk=answered.pk)
    assert settled.ended_at == before[answered.pk]  # ended when it went quiet
    assert dict(Conversation.objects.values_list("pk", "updated_at")) == before  # last activity untouched
    assert outcomes.settle_quiet() == 0  # each once


# --- the customer back on the same topic in another conversation ------------------------------------------------
def cited_answer(conversation: Conversation, document: int, heading: str, *, helped: bool = False) -> Message:
    question = Message.objects.create(conversation=conversation, role="user", text="How do refunds work?")
    answer = Message.objects.create(
        conversation=conversation, role="assistant", reply_to=question, state="complete", text="Within 5 days [1].",
        sources=[{"n": 1, "document": document, "heading": heading}, {"n": 2, "document": 999, "heading": "Other"}],
        citations=[1],
    )
    if helped:  # 👍, as the chat page's feedback frame saves it
        Feedback.objects.create(message=answer, user_id=conversation.owner_id, rating=1)
    return answer


async def test_an_answer_on_an_earlier_conversations_passages_reopens_it(people):
    carol, dave, _sam = people

    def setup():
        earlier = Conversation.objects.create(owner=carol, outcome=Outcome.BOT_RESOLVED, ended_at=NOW - HOUR)
        cited_answer(earlier, 7, "Refunds")
        elsewhere = Conversation.objects.create(owner=carol)
        cited_answer(elsewhere, 8, "Delivery")
        daves = Conversation.objects.create(owner=dave, outcome=Outcome.BOT_RESOLVED)
        cited_answer(daves, 7, "Refunds")
        later = Conversation.objects.create(owner=carol)
        return earlier, elsewhere, daves, cited_answer(later, 7, "Refunds")

    earlier, elsewhere, daves, answer = await database_sync_to_async(setup)()
    assert await database_sync_to_async(outcomes.reopen_same_topic)(answer) == 1
    found = {pk: outcome async for pk, outcome in Conversation.objects.values_list("pk", "outcome")}
    assert found[earlier.pk] == Outcome.REOPENED
    assert found[elsewhere.pk] == ""  # another topic
    assert found[daves.pk] == Outcome.BOT_RESOLVED  # another customer
    assert found[answer.conversation_id] == ""


def test_a_customer_who_said_it_helped_has_not_come_back_on_that_topic(people):
    carol, _dave, _sam = people
    earlier = Conversation.objects.create(owner=carol, outcome=Outcome.BOT_RESOLVED, ended_at=NOW - HOUR)
    cited_answer(earlier, 7, "Refunds", helped=True)
    later = Conversation.objects.create(owner=carol)
    answer = cited_answer(later, 7, "Refunds")
    assert outcomes.reopen_same_topic(answer) == 0
    assert Conversation.objects.get(pk=earlier.pk).outcome == Outcome.BOT_RESOLVED


# --- knowledge gaps and the answers' figures ---------------------------------------------------------------------
async def test_an_answer_that_found_nothing_is_a_gap_with_its_embedding_and_its_figures_are_columns(
    people, fast_answers, cleanup, settings
):
    carol, _dave, _sam = people
    empty = await KnowledgeBase.objects.acreate(name=f"Empty {uuid.uuid4().hex[:6]}", slug=f"empty-{uuid.uuid4().hex[:6]}")
    settings.DEFAULT_KNOWLEDGE_BASE = empty.name
    client = await connect(carol)
    ack = await client.ask("Do you sell gift cards for the Zürich store?")
    final = (await client.until_final(ack["message"]))[-1]
    assert final["offer_handoff"] is True
    gap = await KnowledgeGap.objects.aget(answer_id=ack["message"])  # saved with the finished answer
    assert (gap.reason, gap.question, gap.knowledge_base_id) == (
        "nothing_found", "Do you sell gift cards for the Zürich store?", empty.pk
    )
    # Its embedding is the one retrieval just computed (the query cache), never model work in the transaction.
    assert gap.language == "en" and gap.embedding is not None and len(gap.embedding) == settings.EMBEDDING_DIMENSIONS
    assert list(gap.embedding) == pytest.approx(inference.remembered_query_vector(gap.question))
    answer = await Message.objects.aget(pk=ack["message"])
    assert answer.first_token_ms is not None and answer.first_token_ms > 0
    assert answer.first_token_ms == pytest.approx(answer.trace["timings"]["first_token_ms"])
    assert (answer.tool_calls, answer.tool_failures) == (0, 0)

    # 👎 on it: a second gap row of its own reason; 👎 again keeps one.
    for _ in range(2):
        await client.send({"type": "feedback", "message": ack["message"], "rating": -1})
        await client.recv_type("feedback")
    gaps = KnowledgeGap.objects.filter(answer_id=ack["message"]).values_list("reason", flat=True)
    reasons = sorted([reason async for reason in gaps])
    assert reasons == ["nothing_found", "thumbs_down"]
    await client.close()


async def test_the_sweep_embeds_the_gaps_saved_without_a_vector(people):
    carol, _dave, _sam = people

    def setup() -> None:
        conversation = conversation_of(carol)
        answer = Message.objects.get(conversation=conversation, role="assistant")
        outcomes.save_gap(answer, conversation, "Do you ship to Iceland?", KnowledgeGap.Reason.NOTHING_FOUND, None)

    await database_sync_to_async(setup)()
    assert (await KnowledgeGap.objects.aget()).embedding is None
    assert await outcomes.sweep() == 0  # nothing quiet to settle; the gap is embedded
    gap = await KnowledgeGap.objects.aget()
    expected = await inference.aquery_vector("Do you ship to Iceland?")
    assert list(gap.embedding) == pytest.approx(expected, abs=1e-6)
    assert await outcomes.fill_gap_embeddings() == 0


def test_the_tool_calls_of_a_trace_become_the_answers_columns():
    trace = {"timings": {"first_token_ms": 812.5}, "tools": [{"ok": True}, {"ok": False}, {"ok": False}]}
    assert outcomes.answer_columns(trace) == {"first_token_ms": 812.5, "tool_calls": 3, "tool_failures": 2}
    assert outcomes.answer_columns({}) == {"first_token_ms": None, "tool_calls": 0, "tool_failures": 0}
    assert outcomes.answer_columns({"timings": {"first_token_ms": 0}, "tools": "junk"})["first_token_ms"] is None


def test_the_migration_fills_the_insights_columns_of_earlier_rows(people):
    carol, _dave, sam = people
    conversation = Conversation.objects.create(owner=carol, status="agent", taken_over_at=NOW - HOUR)
    answer = Message.objects.create(
        conversation=conversation, role="assistant", state="complete",
        trace={"timings": {"first_token_ms": 420.0}, "tools": [{"ok": True}, {"ok": False}]},
    )  # fmt: skip
    Message.objects.create(conversation=conversation, role="agent", author=sam, text="Hello")
    Message.objects.create(conversation=conversation, role="agent", author=sam, text="Again")
    migration = importlib.import_module("conversations.migrations.0009_outcomes_ratings_gaps")
    with connection.cursor() as cursor:
        cursor.execute(migration.BACKFILL)
    answer.refresh_from_db()
    conversation.refresh_from_db()
    assert (answer.first_token_ms, answer.tool_calls, answer.tool_failures) == (420.0, 2, 1)
    first = Message.objects.filter(conversation=conversation, role="agent").order_by("created_at").first()
    assert conversation.first_agent_reply_at == first.created_at
    assert conversation.handed_off_at == conversation.taken_over_at
