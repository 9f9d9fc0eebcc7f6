"""What a customer can do in a chat: ask, cancel, resume, rate, ask for a person, open a conversation.

Plain domain actions, independent of the transport: the WebSocket consumer parses frames and calls these;
each takes the ``Requester`` and returns outgoing frames or raises ``ProtocolError``. Ownership is always
checked through ``conversations.access`` so someone else's conversation looks exactly like a missing one. Each
action first re-checks that the requester may still act (``access.ensure_may_act``, in the ask's transaction or
with the access lookup): a revoked user's socket whose close was lost raises ``AccessRevoked`` and changes nothing.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from conversations import attachments, inbox, leave_message, outcomes, protocol, streaming, visitors
from conversations.access import Requester, aget_conversation, aget_message, ensure_may_act
from conversations.models import Conversation, ConversationRating, Feedback, KnowledgeGap, Message
from conversations.streaming import admission
from knowledge.models import KnowledgeBase
from knowledge.visibility import visible_knowledge_bases


@dataclass(frozen=True)
class AskResult:
    """The saved question and (unless a person handles the chat) the assistant message that will answer it."""

    conversation: Conversation
    question: Message
    answer: Message | None
    created: bool  # False: the same ask id was seen before (idempotent re-send)
    console_row: dict | None = None  # the console list's row after a new question, built in its transaction
    attachments: list[dict] = field(default_factory=list)  # the images sent with a new question (``described``)
    reopened: bool = False  # the question opened a resolved or ended conversation again: its state changed

    def ack(self) -> dict:
        return protocol.ack_frame(
            self.question.client_id, self.conversation.pk, self.question.pk, self.answer.pk if self.answer else None
        )

    def question_frame(self) -> dict:
        return protocol.question_frame(
            self.conversation.pk,
            self.question.pk,
            self.answer.pk if self.answer else None,
            self.question.client_id,
            self.question.text,
            self.attachments,
        )


async def ask(requester: Requester, frame: protocol.Ask) -> AskResult:
    """Save the question (and the assistant message that will answer it) before any work starts.

    Refused questions (busy, rate limited, unknown conversation/kb) are not saved; the client keeps them.
    Call ``start_answer`` once the socket has joined the conversation's group.
    """
    line = admission.admission()
    refusal = _node_busy(line, frame) if line.full() else None  # read here, on the node's loop
    if requester.visitor is not None:
        await visitors.admit_question(requester.visitor, frame.id)  # per address, across the widget's visitors
    try:
        return await database_sync_to_async(_ask)(requester, frame, refusal)
    except IntegrityError:
        # The same ask id raced in from another socket: the first one won, return its ack.
        existing = await database_sync_to_async(_existing_ask)(requester, frame)
        if existing is None:
            raise
        return existing


def _ask(requester: Requester, frame: protocol.Ask, refusal: protocol.ProtocolError | None = None) -> AskResult:
    with transaction.atomic():
        ensure_may_act(requester)  # AccessRevoked: nothing saved, the socket closes (4001)
        conversation = None
        if frame.conversation is not None:
            conversation = requester.conversations().select_for_update().filter(pk=frame.conversation).first()
            if conversation is None:
                raise protocol.ProtocolError(
                    protocol.NOT_FOUND, f"No conversation {frame.conversation}.", id=frame.id
                )
        existing = _existing_ask(requester, frame, conversation)
        if existing is not None:
            return existing
        _check_rate(requester, frame)
        if refusal is not None:  # a new question, and this node's line of waiting answers is full
            raise refusal
        if conversation is None:
            conversation = Conversation.objects.create(
                knowledge_base=_knowledge_base(requester, frame),
                title=_title(frame.text),
                **requester.conversation_fields(),
            )
        else:
            _check_queue(conversation, frame)
            if not conversation.title:  # created empty from the page's "New conversation"
                conversation.title = _title(frame.text)
            if requester.visitor is not None and requester.visitor.page_url:
                conversation.page_url = requester.visitor.page_url  # where the customer asks from now
        ended = outcomes.question_asked(conversation)  # an ended conversation is open again (maybe "reopened")
        question = Message.objects.create(
            conversation=conversation,
            role=Message.Role.USER,
            author_id=requester.user_id,
            text=frame.text,
            client_id=frame.id,
            state=Message.State.COMPLETE,
            completed_at=timezone.now(),
        )
        sent = attachments.send_with(requester, frame, question)  # not_found: nothing of this ask is saved
        answer = None
        reopened = bool(ended) or conversation.status == Conversation.Status.RESOLVED
        if conversation.status == Conversation.Status.RESOLVED:
            conversation.status = Conversation.Status.BOT  # a new question reopens it
        if conversation.status != Conversation.Status.AGENT:
            answer = Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                reply_to=question,
                state=Message.State.STREAMING,
                trace={"language_hint": requester.language} if requester.language else {},
            )
        leave_message.customer_writes(conversation)  # back in the chat: "customer offline" may end
        conversation.save(update_fields=["status", "title", "page_url", "left_message_at", "updated_at", *ended])
        row = inbox.list_item(conversation.pk)
        return AskResult(conversation, question, answer, created=True, console_row=row, attachments=sent,
                         reopened=reopened)  # fmt: skip


def _existing_ask(
    requester: Requester, frame: protocol.Ask, conversation: Conversation | None = None
) -> AskResult | None:
    """The question already saved under this ask id (idempotency), with its answer."""
    questions = requester.messages().filter(role=Message.Role.USER, client_id=frame.id)
    if conversation is not None:
        questions = questions.filter(conversation=conversation)
    question = questions.select_related("conversation").order_by("-created_at").first()
    if question is None:
        return None
    answer = question.replies.filter(role=Message.Role.ASSISTANT).order_by("created_at").first()
    return AskResult(question.conversation, question, answer, created=False)


def _check_rate(requester: Requester, frame: protocol.Ask) -> None:
    """At most CHAT_RATE_LIMIT questions per minute per user/session, counted from the saved questions."""
    limit = settings.CHAT_RATE_LIMIT
    if limit <= 0:
        return
    now = timezone.now()
    recent = requester.messages().filter(role=Message.Role.USER, created_at__gte=now - timedelta(minutes=1))
    times = list(recent.order_by("-created_at").values_list("created_at", flat=True)[:limit])
    if len(times) >= limit:
        # The question may be sent again once the oldest of the last `limit` questions is a minute old.
        wait = math.ceil((times[-1] + timedelta(minutes=1) - now).total_seconds())
        raise protocol.ProtocolError(
            protocol.RATE_LIMITED,
            f"More than {limit} questions in a minute. The question was NOT saved; send it again (same id) "
            f"in {wait} s.",
            id=frame.id,
            retry_after=max(1, wait),
        )


def _check_queue(conversation: Conversation, frame: protocol.Ask) -> None:
    """A conversation answers one question at a time; at most CHAT_QUEUE_LIMIT may wait, the current included."""
    limit = settings.CHAT_QUEUE_LIMIT
    pending = Message.objects.filter(
        conversation=conversation, role=Message.Role.ASSISTANT, state=Message.State.STREAMING
    ).count()
    if pending >= limit:
        raise protocol.ProtocolError(
            protocol.BUSY,
            f"{pending} questions are still being answered in this conversation (limit {limit}). The question was "
            "NOT saved; keep it and send it again (same id) when an answer finishes.",
            id=frame.id,
            retry_after=settings.CHAT_BUSY_RETRY_AFTER_SECONDS,
        )


def _node_busy(line: admission.Admission, frame: protocol.Ask) -> protocol.ProtocolError:
    """The refusal of a new question while the node's line is full (CHAT_NODE_QUEUE_LIMIT)."""
    return protocol.ProtocolError(
        protocol.BUSY,
        f"The assistant is answering many questions right now ({len(line.line)} waiting). The question was NOT "
        "saved; send it again (same id) after retry_after seconds.",
        id=frame.id,
        retry_after=line.retry_after(),
    )


def _knowledge_base(requester: Requester, frame: protocol.Ask) -> KnowledgeBase:
    """The knowledge base a new conversation asks: ``kb`` among those the requester may see, else the default.

    One the requester may not see is refused exactly like one that does not exist (knowledge/visibility.py).
    The default is not checked here: when it is not public, retrieval finds nothing in it for a customer (the
    answer offers a person) and the name the customer never sent is not confirmed or denied.
    """
    if requester.visitor is not None:  # the widget: one of its site's knowledge bases, the first by default
        kbs = KnowledgeBase.objects.filter(sites=requester.visitor.site_id).order_by("pk")
        kb = kbs.filter(Q(slug=frame.kb) | Q(name=frame.kb)).first() if frame.kb is not None else kbs.first()
        if kb is None:
            raise protocol.ProtocolError(protocol.NOT_FOUND, f"No knowledge base {frame.kb!r} on this site.", id=frame.id)
        return kb
    if frame.kb is None:
        kb, _ = KnowledgeBase.objects.get_or_create(name=settings.DEFAULT_KNOWLEDGE_BASE)
        return kb
    kb = visible_knowledge_bases(requester.user_id).filter(Q(slug=frame.kb) | Q(name=frame.kb)).first()
    if kb is None:
        raise protocol.ProtocolError(protocol.NOT_FOUND, f"No knowledge base {frame.kb!r}.", id=frame.id)
    return kb


def _title(text: str) -> str:
    limit = settings.CHAT_TITLE_CHARS
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


async def announce_reopened(result: AskResult) -> None:
    """A question opened a resolved or ended conversation again: every socket showing it gets its new state (no
    longer resolved nor ``ended``: the rating panel goes, "End chat" comes back)."""
    if result.reopened and result.created:
        await streaming.publish(result.conversation.pk, await conversation_frame(result.conversation))


async def start_answer(result: AskResult) -> None:
    """Queue the answer's generation (after the asking socket joined the group, so it misses nothing)."""
    if result.answer is None or not result.created:
        return
    streaming.start(result.answer)  # only kicks the worker, which claims the row (with its joins) itself


async def _own_assistant_message(requester: Requester, message_id: uuid.UUID, action: str) -> Message:
    message = await aget_message(requester, message_id)
    if message is None:
        raise protocol.ProtocolError(protocol.NOT_FOUND, f"No message {message_id}.")
    if message.role != Message.Role.ASSISTANT:
        raise protocol.ProtocolError(
            protocol.FORBIDDEN, f"Only an assistant answer can be {action}; message {message_id} is a {message.role} "
            "message."
        )
    return message


async def cancel(requester: Requester, message_id: uuid.UUID) -> None:
    """Stop an answer; its final frame (state cancelled, partial text kept) reaches every socket."""
    message = await _own_assistant_message(requester, message_id, "cancelled")
    if message.is_finished:
        return  # already over: nothing to stop, no frame
    await streaming.cancel_message(message.pk)  # wherever it is generated or queued, on any node


async def resume(requester: Requester, message_id: uuid.UUID, after: int) -> tuple[Message, list[dict]]:
    """Every frame of the message after ``after`` (the caller then delivers live frames, deduplicated)."""
    message = await _own_assistant_message(requester, message_id, "resumed")
    return message, await streaming.replay(message, after)


async def feedback(requester: Requester, frame: protocol.Feedback) -> dict:
    """Save (or replace) this requester's rating of an answer."""
    message = await aget_message(requester, frame.message)
    if message is None:
        raise protocol.ProtocolError(protocol.NOT_FOUND, f"No message {frame.message}.")
    if message.role not in (Message.Role.ASSISTANT, Message.Role.AGENT):
        raise protocol.ProtocolError(
            protocol.FORBIDDEN, f"Only answers can be rated; message {frame.message} is a {message.role} message."
        )
    who = {"user_id": requester.user_id} if requester.user_id else {"user": None, "anonymous_session_key": requester.session_key}
    await Feedback.objects.aupdate_or_create(
        message=message, **who, defaults={"rating": frame.rating, "comment": frame.comment}
    )
    if frame.rating < 0 and message.role == Message.Role.ASSISTANT and message.reply_to_id:
        question = await Message.objects.filter(pk=message.reply_to_id).values_list("text", flat=True).afirst()
        if question:  # a knowledge gap for the insights (docs/analytics.md)
            await outcomes.record_gap(message, question, KnowledgeGap.Reason.THUMBS_DOWN)
    return protocol.feedback_frame(message.pk, frame.rating, frame.comment)


async def join(requester: Requester, conversation_id: uuid.UUID) -> tuple[Conversation, dict]:
    """Open a conversation on a socket: its current state (the caller joins its group)."""
    conversation = await aget_conversation(requester, conversation_id)
    if conversation is None:
        raise protocol.ProtocolError(protocol.NOT_FOUND, f"No conversation {conversation_id}.")
    return conversation, await conversation_frame(conversation)


async def request_handoff(requester: Requester, conversation_id: uuid.UUID) -> None:
    """The customer asks for a person: the conversation waits for an agent; every socket showing it is told.

    The ``conversation`` frame is published to the group (the asking socket has joined it), also when nothing
    changed, so a repeated request still gets an answer.
    """
    conversation = await aget_conversation(requester, conversation_id)
    if conversation is None:
        raise protocol.ProtocolError(protocol.NOT_FOUND, f"No conversation {conversation_id}.")
    if conversation.status in (Conversation.Status.BOT, Conversation.Status.RESOLVED):
        conversation.status = Conversation.Status.WAITING_FOR_AGENT
        conversation.waiting_since = timezone.now()  # the console's "waiting for N min" and queue order
        handed = outcomes.person_joins(conversation, conversation.waiting_since)
        await conversation.asave(update_fields=["status", "waiting_since", "updated_at", *handed])
        await Message.objects.acreate(
            conversation=conversation, role=Message.Role.SYSTEM, text="The customer asked to talk to a person."
        )
    await streaming.publish(conversation.pk, await conversation_frame(conversation))
    await inbox.publish_item(conversation.pk)  # the staff console shows it in the waiting queue at once


async def leave_address(requester: Requester, frame: protocol.LeaveMessage) -> None:
    """Nobody could answer: the customer leaves an e-mail address and is marked offline (conversations/leave_message.py);
    every socket showing the conversation and every console's list are told."""
    conversation, row = await database_sync_to_async(leave_message.leave)(requester, frame)
    await streaming.publish(conversation.pk, await conversation_frame(conversation))
    await inbox.publish_row(row)


async def conversation_frame(conversation: Conversation) -> dict:
    streaming_ids = [
        pk
        async for pk in Message.objects.filter(
            conversation=conversation, role=Message.Role.ASSISTANT, state=Message.State.STREAMING
        )
        .order_by("created_at")
        .values_list("pk", flat=True)
    ]
    away = None
    if conversation.status == Conversation.Status.WAITING_FOR_AGENT:
        away = await leave_message.away_reason(conversation)  # nobody can answer now: the page asks for an address
    rating = None
    if conversation.ended_at is not None:  # CSAT (conversations/csat.py): asked once it ended, shown once given
        rating = await ConversationRating.objects.filter(conversation=conversation).values("score", "comment").afirst()
    return protocol.conversation_frame(
        conversation.pk, conversation.status, conversation.title, streaming_ids, away=away,
        left_message=protocol.left_message(conversation.contact_email, conversation.left_message_at),
        ended=conversation.ended_at is not None, rating=rating,
    )
