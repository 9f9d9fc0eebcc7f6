"""Outcomes: how each conversation went, for the insights (docs/analytics.md, "Outcomes", defines each).

A conversation's outcome is blank while it is open and is set when it ends:

* staff resolve it in the console, or the customer ends it ("End chat"): settled at once (``end``);
* it has been quiet for ``OUTCOME_WINDOW_SECONDS``: the sweep settles it (``settle_quiet``, every node, every
  ``OUTCOME_SWEEP_SECONDS``).

The customer coming back makes a settled (or still open) conversation ``reopened``: a new question in an ended
conversation within the window (``question_asked``), or, in another of their conversations within the window, an
answer citing a passage an answer of this one cited (``answer_saved``: the same topic, told by the knowledge
base's own passages rather than a similarity threshold). A customer who said the assistant helped (👍 on an answer,
or a CSAT of 4 or 5) is not taken to have come back on the same topic.

The actions here change the conversation's row in the caller's transaction; they publish nothing (the callers in
chat.py, console.py and csat.py do).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from conversations.models import Conversation, ConversationRating, Feedback, KnowledgeGap, Message
from conversations.node_loops import NodeLoop
from knowledge import inference
from knowledge.language import detect

log = logging.getLogger(__name__)

Outcome = Conversation.Outcome
SWEEP_BATCH = 500


class Ending(Enum):
    """How a conversation came to end, which with who answered decides its outcome (``classify``)."""

    STAFF_RESOLVED = "staff_resolved"  # "Resolve" in the console
    CUSTOMER_ENDED = "customer_ended"  # "End chat" in the chat page or the widget
    QUIET = "quiet"  # nobody wrote for OUTCOME_WINDOW_SECONDS


def window() -> timedelta:
    return timedelta(seconds=settings.OUTCOME_WINDOW_SECONDS)


def classify(conversation: Conversation, ending: Ending, *, answered: bool) -> str:
    """The outcome of a conversation that ends now. ``answered``: the assistant completed at least one answer.

    A person replied: resolved by a person when staff resolved it or the customer ended it, handed off when it just
    went quiet. The customer asked for a person (or staff took it over) and nobody replied: abandoned, unless staff
    closed it (handed off). Otherwise the assistant's: resolved when it answered, abandoned when it never did."""
    if conversation.first_agent_reply_at is not None:
        return Outcome.HANDED_OFF if ending is Ending.QUIET else Outcome.AGENT_RESOLVED
    if conversation.handed_off_at is not None:
        return Outcome.HANDED_OFF if ending is Ending.STAFF_RESOLVED else Outcome.ABANDONED
    return Outcome.BOT_RESOLVED if answered else Outcome.ABANDONED


def _answered(conversation_id: Any) -> bool:
    return Message.objects.filter(
        conversation_id=conversation_id, role=Message.Role.ASSISTANT, state=Message.State.COMPLETE
    ).exists()


def end(conversation: Conversation, ending: Ending, now: datetime | None = None) -> list[str]:
    """Mark the (locked) conversation ended now and set its outcome; returns the fields to save. Ending it again
    changes nothing (a conversation that ended keeps its first ending)."""
    if conversation.ended_at is not None:
        return []
    now = now or timezone.now()
    conversation.ended_at = now
    if conversation.outcome != Outcome.REOPENED:  # reopened stays: the customer had to come back
        conversation.outcome = classify(conversation, ending, answered=_answered(conversation.pk))
        conversation.outcome_at = now
    return ["ended_at", "outcome", "outcome_at"]


def question_asked(conversation: Conversation, now: datetime | None = None) -> list[str]:
    """A new question in an existing conversation: one that had ended is open again — ``reopened`` within the
    window, a fresh start (outcome blank) after it. Returns the fields to save."""
    if conversation.ended_at is None:
        return []
    now = now or timezone.now()
    if now - conversation.ended_at <= window() and not _said_it_helped(conversation.pk):
        conversation.outcome, conversation.outcome_at = Outcome.REOPENED, now
    elif conversation.outcome != Outcome.REOPENED:
        conversation.outcome, conversation.outcome_at = "", None
    conversation.ended_at = None
    return ["ended_at", "outcome", "outcome_at"]


def person_joins(conversation: Conversation, now: datetime | None = None) -> list[str]:
    """The customer asked for a person, or staff took the conversation over: it counts as handed off (once)."""
    if conversation.handed_off_at is not None:
        return []
    conversation.handed_off_at = now or timezone.now()
    return ["handed_off_at"]


def person_replies(conversation: Conversation, now: datetime | None = None) -> list[str]:
    """A staff reply reached the customer: the first one starts nothing new but is what "time to the first human
    reply" measures."""
    if conversation.first_agent_reply_at is not None:
        return []
    conversation.first_agent_reply_at = now or timezone.now()
    return ["first_agent_reply_at"]


def _said_it_helped(conversation_id: Any) -> bool:
    """👍 on an answer of the conversation, or a CSAT of 4 or 5."""
    return (
        Feedback.objects.filter(message__conversation_id=conversation_id, rating=1).exists()
        or ConversationRating.objects.filter(conversation_id=conversation_id, score__gte=4).exists()
    )


# --- when an answer finishes --------------------------------------------------------------------------------
def answer_columns(trace: dict) -> dict[str, Any]:
    """The trace's figures the insights aggregate, as the answer's own columns (saved with the final state)."""
    timings = trace.get("timings") or {}
    tools = trace.get("tools") if isinstance(trace.get("tools"), list) else []
    first_token = timings.get("first_token_ms")
    return {
        "first_token_ms": float(first_token) if isinstance(first_token, int | float) and first_token > 0 else None,
        "tool_calls": min(len(tools), 32767),
        "tool_failures": min(sum(1 for t in tools if isinstance(t, dict) and not t.get("ok")), 32767),
    }


def answer_saved(answer: Message, fields: dict[str, Any], conversation: Conversation | None) -> None:
    """In the transaction that saves a finished answer (conversations/streaming/stream.py), so an answer costs no
    transaction more: an answer that offered a person (nothing relevant, or the passages did not answer) is a
    knowledge gap; one citing what an earlier conversation of the customer's cited reopens that one.

    Nothing here waits for the embedding model: the gap takes the question's vector if retrieval just computed it
    (the query cache), and the sweep fills the others (``fill_gap_embeddings``)."""
    if fields.get("state") != Message.State.COMPLETE or conversation is None:
        return
    try:
        with transaction.atomic():  # a savepoint: a failure here must never cost the customer their answer
            _record(answer, fields, conversation)
    except Exception:
        log.exception("recording the outcome figures of answer %s failed", answer.pk)


def _record(answer: Message, fields: dict[str, Any], conversation: Conversation) -> None:
    if (fields.get("trace") or {}).get("offer_handoff") and answer.reply_to_id:
        question = Message.objects.filter(pk=answer.reply_to_id).values_list("text", flat=True).first()
        if question:
            save_gap(answer, conversation, question, KnowledgeGap.Reason.NOTHING_FOUND,
                     inference.remembered_query_vector(question))  # fmt: skip
    topics = _topics([(fields.get("sources"), fields.get("citations"))])
    if topics:
        _reopen_same_topic(conversation, topics)


def save_gap(answer: Message, conversation: Conversation, question: str, reason: str, vector: list | None) -> None:
    """Keep the question (once per answer and reason) with its embedding, or without for the sweep to fill."""
    KnowledgeGap.objects.get_or_create(
        answer=answer,
        reason=reason,
        defaults={"knowledge_base_id": conversation.knowledge_base_id, "site_id": conversation.site_id,
                  "question": question, "language": detect(question) or "", "embedding": vector},
    )  # fmt: skip


async def record_gap(answer: Message, question: str, reason: str) -> None:
    """A gap from outside an answer's transaction (a 👎): the question's embedding is computed now if need be."""
    vector = None
    try:
        vector = await inference.aquery_vector(question)
    except Exception:  # the embedding thread is busy or down: the sweep fills it later
        log.warning("no embedding for the gap of answer %s yet", answer.pk)
    conversation = await Conversation.objects.only("knowledge_base_id", "site_id").aget(pk=answer.conversation_id)
    try:
        await database_sync_to_async(save_gap)(answer, conversation, question, reason, vector)
    except IntegrityError:  # the same 👎 twice at once: the first one is kept
        pass


def _gaps_without_vectors(limit: int) -> list[KnowledgeGap]:
    since = timezone.now() - window()
    return list(KnowledgeGap.objects.filter(embedding__isnull=True, created_at__gte=since).order_by("created_at")[:limit])


async def fill_gap_embeddings(limit: int = 100) -> int:
    """Embed the recent gaps saved without a vector (their question was not in the query cache). Returns how many.

    The loop awaits the embedding thread (``aquery_vector``): the thread the node's database calls share never
    waits for the model, only reads and writes the rows."""
    missing = await database_sync_to_async(_gaps_without_vectors)(limit)
    for gap in missing:
        gap.embedding = await inference.aquery_vector(gap.question)
    await database_sync_to_async(KnowledgeGap.objects.bulk_update)(missing, ["embedding"])
    return len(missing)


def _topics(messages: list[tuple[list, list]]) -> set[tuple[Any, str]]:
    """The passages cited: (document, heading) of every cited source of these answers' (sources, citations)."""
    found = set()
    for sources, citations in messages:
        cited = set(citations or [])
        for source in sources or []:
            if isinstance(source, dict) and source.get("n") in cited and source.get("document") is not None:
                found.add((source["document"], source.get("heading") or ""))
    return found


def _reopen_same_topic(conversation: Conversation, topics: set[tuple[Any, str]]) -> int:
    mine = Q(owner_id=conversation.owner_id) if conversation.owner_id else Q(
        owner__isnull=True, anonymous_session_key=conversation.anonymous_session_key
    )
    since = timezone.now() - window()
    earlier = (
        Conversation.objects.filter(mine, updated_at__gte=since, created_at__lt=conversation.created_at)
        .exclude(pk=conversation.pk)
        .filter(Q(outcome="") | Q(outcome__in=[Outcome.BOT_RESOLVED, Outcome.AGENT_RESOLVED]))
        .order_by("-updated_at")
        .values_list("pk", flat=True)[:5]
    )
    reopened = 0
    for pk in earlier:
        cited = Message.objects.filter(conversation_id=pk, role=Message.Role.ASSISTANT).exclude(citations=[])
        if not topics & _topics(list(cited.values_list("sources", "citations")[:50])) or _said_it_helped(pk):
            continue
        reopened += Conversation.objects.filter(pk=pk).exclude(outcome=Outcome.REOPENED).update(
            outcome=Outcome.REOPENED, outcome_at=timezone.now()
        )
    return reopened


def reopen_same_topic(answer: Message) -> int:
    """Reopen the customer's earlier conversations on the topic ``answer`` cites (as ``answer_saved`` does);
    returns how many."""
    answer = Message.objects.select_related("conversation").get(pk=answer.pk)
    topics = _topics([(answer.sources, answer.citations)])
    return _reopen_same_topic(answer.conversation, topics) if topics else 0


# --- the sweep ---------------------------------------------------------------------------------------------
def settle_quiet(now: datetime | None = None) -> int:
    """Settle the open conversations nobody wrote in for the window (ended when they went quiet). Returns how many.

    Claimed row by row with ``SKIP LOCKED``, so several nodes sweep at once without doing a row twice; a
    conversation with an answer still streaming waits for the next sweep."""
    now = now or timezone.now()
    streaming = Message.objects.filter(conversation=OuterRef("pk"), state=Message.State.STREAMING)
    answered = Message.objects.filter(
        conversation=OuterRef("pk"), role=Message.Role.ASSISTANT, state=Message.State.COMPLETE
    )
    settled = 0
    with transaction.atomic():
        quiet = (
            Conversation.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(outcome="", ended_at__isnull=True, updated_at__lt=now - window())
            .filter(~Exists(streaming))
            .annotate(answered=Exists(answered))
            .order_by("updated_at")[:SWEEP_BATCH]
        )
        rows = list(quiet)
        for conversation in rows:
            conversation.ended_at = conversation.updated_at
            conversation.outcome = classify(conversation, Ending.QUIET, answered=conversation.answered)
            conversation.outcome_at = now
        # bulk_update leaves updated_at alone: the conversation's last activity stays what it was.
        settled = Conversation.objects.bulk_update(rows, ["ended_at", "outcome", "outcome_at"])
    return settled



async def sweep() -> int:
    """One sweep: settle the quiet conversations, then embed the gaps saved without a vector."""
    settled = await database_sync_to_async(settle_quiet)()
    await fill_gap_embeddings()
    return settled


#: The sweep on every node (conversations/node_loops.py), started with the node's first chat or console socket.
LOOP = NodeLoop("outcome-sweep", sweep, lambda: settings.OUTCOME_SWEEP_SECONDS)
