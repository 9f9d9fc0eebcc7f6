"""Regenerate: another version of an answer, kept beside the earlier ones, instead of asking the question again.

The versions of an answer are the assistant messages with the same ``reply_to`` (the question), numbered by
``Message.version`` 1, 2, 3… A new version is an ordinary answer in every other way: it is saved ``streaming``
before any work starts, claimed by the conversation's worker in turn and streamed with the same frames, limits,
admission and per-customer stream count as an answer to a new question (conversations/streaming/), so ``resume``
and ``cancel`` work on it unchanged. What differs: no question row is added (the question is the same), and an
``answer_version`` frame tells every socket showing the conversation (and the console) where the new stream
belongs. docs/protocol.md, "Regenerate".

Which version counts: the highest is the one shown by default (the page's arrows show the others) and the only
one a later answer reads as the conversation's history (conversations/streaming/generation.py ``history``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone

from conversations import chat, inbox, outcomes, protocol, streaming, visitors
from conversations.access import Requester, ensure_may_act
from conversations.models import Conversation, Message
from conversations.streaming import admission

#: While a person is asked for or answering, the bot writes nothing: no new version either.
WITH_A_PERSON = (Conversation.Status.WAITING_FOR_AGENT, Conversation.Status.AGENT)


@dataclass(frozen=True)
class Regenerated:
    """The new version (or, for an id seen before, the version that id made) and how many the question has."""

    conversation: Conversation
    question: Message
    answer: Message
    versions: int
    created: bool  # False: the same regenerate id was seen before (idempotent re-send)
    client_id: str = ""
    console_row: dict | None = None  # the console list's row, built in the regenerate's transaction
    reopened: bool = False  # it opened a resolved or ended conversation again: its state changed

    def frame(self) -> dict:
        return protocol.answer_version_frame(
            self.conversation.pk, self.question.pk, self.answer.pk, self.answer.version, self.versions, self.client_id
        )


async def regenerate(requester: Requester, frame: protocol.Regenerate) -> Regenerated:
    """Save a new version of a finished answer, to be generated like an answer (``start`` queues it).

    Refused (nothing saved) like a question would be: the node's line full, too many in a minute, the
    conversation's queue full; and while a person handles the conversation, or a version of that answer is still
    being written. Someone else's answer, or a message that is not an answer, looks missing or is ``forbidden``.
    """
    line = admission.admission()
    node_line = (len(line.line), line.retry_after()) if line.full() else None  # read here, on the node's loop
    if requester.visitor is not None:
        await visitors.admit_question(requester.visitor, frame.id)  # per address, across the widget's visitors
    return await database_sync_to_async(_regenerate)(requester, frame, node_line)


def _regenerate(requester: Requester, frame: protocol.Regenerate, node_line: tuple[int, float] | None) -> Regenerated:
    with transaction.atomic():
        ensure_may_act(requester)  # AccessRevoked: nothing saved, the socket closes (4001)
        conversation_id = requester.messages().filter(pk=frame.message).values_list("conversation_id", flat=True).first()
        if conversation_id is None:
            raise protocol.ProtocolError(protocol.NOT_FOUND, f"No message {frame.message}.", id=frame.id or None)
        # The conversation's row lock first, as asks and claims take it: versions are numbered one at a time.
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        answer = Message.objects.select_related("reply_to").get(pk=frame.message)
        if answer.role != Message.Role.ASSISTANT or answer.reply_to is None:
            raise protocol.ProtocolError(
                protocol.FORBIDDEN,
                f"Only an assistant's answer to a question can be regenerated; message {frame.message} is a "
                f"{answer.role} message.",
                id=frame.id or None,
            )
        question = answer.reply_to
        versions = Message.objects.filter(reply_to=question, role=Message.Role.ASSISTANT)
        if frame.id and (earlier := versions.filter(client_id=frame.id).first()) is not None:
            return Regenerated(conversation, question, earlier, versions.count(), False, frame.id)
        _check_allowed(conversation, versions, frame)
        _check_rate(requester, frame)
        _check_busy(conversation, frame, node_line)
        latest = versions.aggregate(latest=Max("version"))["latest"] or 0
        hint = requester.language or (answer.trace or {}).get("language_hint")
        new = Message.objects.create(
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            reply_to=question,
            version=latest + 1,
            client_id=frame.id,
            state=Message.State.STREAMING,
            trace={"language_hint": hint} if hint else {},
        )
        ended = outcomes.question_asked(conversation)  # after the end: open again ("reopened" within the window)
        reopened = bool(ended) or conversation.status == Conversation.Status.RESOLVED
        if conversation.status == Conversation.Status.RESOLVED:
            conversation.status = Conversation.Status.BOT  # asking for another answer reopens it, as a question does
        conversation.save(update_fields=["status", "updated_at", *ended])
        row = inbox.list_item(conversation.pk)
        return Regenerated(conversation, question, new, versions.count(), True, frame.id, row, reopened)


def _check_allowed(conversation: Conversation, versions, frame: protocol.Regenerate) -> None:
    if conversation.status in WITH_A_PERSON:
        raise protocol.ProtocolError(
            protocol.FORBIDDEN,
            "A person from the support team is asked for or answering this conversation, so the assistant does not "
            "write new answers now. Nothing was saved.",
            id=frame.id or None,
        )
    if versions.filter(state=Message.State.STREAMING).exists():
        raise protocol.ProtocolError(
            protocol.FORBIDDEN,
            "A version of this answer is still being written; wait for it to finish (or stop it), then regenerate. "
            "Nothing was saved.",
            id=frame.id or None,
        )


def _check_rate(requester: Requester, frame: protocol.Regenerate) -> None:
    """New versions count with questions against CHAT_RATE_LIMIT per minute: each one costs an answer."""
    limit = settings.CHAT_RATE_LIMIT
    if limit <= 0:
        return
    now = timezone.now()
    recent = requester.messages().filter(created_at__gte=now - timedelta(minutes=1)).order_by("-created_at")
    questions = recent.filter(role=Message.Role.USER)
    regenerated = recent.filter(role=Message.Role.ASSISTANT, version__gt=1)
    times = sorted(
        [*questions.values_list("created_at", flat=True)[:limit], *regenerated.values_list("created_at", flat=True)[:limit]],
        reverse=True,
    )[:limit]
    if len(times) >= limit:
        wait = math.ceil((times[-1] + timedelta(minutes=1) - now).total_seconds())
        raise protocol.ProtocolError(
            protocol.RATE_LIMITED,
            f"More than {limit} questions and new versions in a minute. Nothing was saved; regenerate again in "
            f"{wait} s.",
            id=frame.id or None,
            retry_after=max(1, wait),
        )


def _check_busy(conversation: Conversation, frame: protocol.Regenerate, node_line: tuple[int, float] | None) -> None:
    """``busy`` like a new question: the node's line full (``node_line``: how many wait there, and when to try
    again, read on the node's loop), or the conversation's own line (CHAT_QUEUE_LIMIT, the one being written
    included)."""
    limit = settings.CHAT_QUEUE_LIMIT
    pending = conversation.messages.filter(role=Message.Role.ASSISTANT, state=Message.State.STREAMING).count()
    if node_line is not None:
        why, retry_after = f"The assistant is answering many questions right now ({node_line[0]} waiting)", node_line[1]
    elif pending >= limit:
        why = f"{pending} answers are still being written in this conversation (limit {limit})"
        retry_after = settings.CHAT_BUSY_RETRY_AFTER_SECONDS
    else:
        return
    raise protocol.ProtocolError(
        protocol.BUSY, f"{why}. Nothing was saved; regenerate again after retry_after seconds.", id=frame.id or None,
        retry_after=retry_after,
    )


async def start(result: Regenerated) -> None:
    """Queue the new version's generation (after the socket joined the group, so it misses nothing). A conversation
    it opened again is no longer resolved nor ``ended``: every socket showing it gets its new state."""
    if result.created:
        if result.reopened:
            await streaming.publish(result.conversation.pk, await chat.conversation_frame(result.conversation))
        streaming.start(result.answer)


# --- Showing versions -----------------------------------------------------------------------------------------
def arrange(history: list[Message]) -> list[Message]:
    """A conversation's messages as the pages show them: each answer's versions together where its first version
    was (a later version is created after later questions), in version order. Every version gets ``versions`` (how
    many its question has), ``position`` (its n in ‹ n/m ›) and ``superseded`` (not the latest: hidden until the reader switches to it)."""
    by_question: dict = {}
    for message in history:
        if message.role == Message.Role.ASSISTANT and message.reply_to_id is not None:
            by_question.setdefault(message.reply_to_id, []).append(message)
    for versions in by_question.values():
        versions.sort(key=lambda m: (m.version, m.created_at))
        for position, message in enumerate(versions, start=1):
            message.position, message.versions = position, len(versions)
            message.superseded = message is not versions[-1]
    arranged: list[Message] = []
    placed: set = set()
    for message in history:
        question = message.reply_to_id if message.role == Message.Role.ASSISTANT else None
        if question is None or question not in by_question:
            arranged.append(message)
        elif question not in placed:
            placed.add(question)
            arranged.extend(by_question[question])
    return arranged


def counts(question_ids: Iterable) -> dict:
    """How many versions each of these questions' answers has (the console's "version n of m")."""
    rows = (
        Message.objects.filter(reply_to_id__in=list(question_ids), role=Message.Role.ASSISTANT)
        .values("reply_to_id")
        .annotate(n=Count("pk"))
    )
    return {row["reply_to_id"]: row["n"] for row in rows}
