"""Generating one answer: run the answer pipeline (knowledge.answering) and turn its events into frames."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.db.models.functions import Coalesce
from django.utils import translation
from django.utils.translation import gettext

from chatsite import metrics, outages
from conversations import protocol
from conversations.models import Message
from conversations.streaming import admission, customer_streams
from conversations.streaming.stream import LeaseLost, MessageStream
from conversations.tool_askers import ConversationAsker
from knowledge import answering

log = logging.getLogger(__name__)

HISTORY_LIMIT = 20  # earlier messages handed to the pipeline, which keeps the recent turns it needs


def history(message: Message) -> list[dict]:
    """The conversation before the question, oldest first, as the pipeline expects it (synchronous: read in
    the claim's transaction, ``workers.claim_next``).

    One answer per earlier question: of its versions (regenerate, conversations/answer_versions.py) only the
    latest, the one the pages show, placed right after its question even when it was written later."""
    question_created = message.reply_to.created_at if message.reply_to else message.created_at
    newer = Message.objects.filter(
        reply_to=OuterRef("reply_to"), role=Message.Role.ASSISTANT, version__gt=OuterRef("version")
    )
    rows = (
        Message.objects.filter(
            conversation_id=message.conversation_id,
            role__in=[Message.Role.USER, Message.Role.ASSISTANT, Message.Role.AGENT],
        )
        .exclude(text="")
        .annotate(asked_at=Coalesce("reply_to__created_at", "created_at"), superseded=Exists(newer))
        .filter(asked_at__lt=question_created, superseded=False)
        .order_by("-asked_at", "-created_at")[:HISTORY_LIMIT]
    )
    turns = [{"role": m.role, "text": m.text} for m in rows]
    return list(reversed(turns))


async def generate(stream: MessageStream, history: list[dict]) -> None:
    """Wait for one of the node's answer slots (telling the customer their place in line), then run the answer
    pipeline for one assistant message (``history``: the conversation before its question) and turn its events
    into frames."""

    async def told(position: int, seconds: float) -> None:
        language = (stream.message.trace or {}).get("language_hint") or settings.LANGUAGE_CODE
        with translation.override(language):
            text = gettext("You are number %(position)d in line — about %(seconds)d s.") % {
                "position": position, "seconds": max(1, round(seconds))
            }
        await stream.emit(protocol.status_frame, protocol.QUEUED, text)

    async def told_own() -> None:
        """The customer's other answers are generating (``CHAT_MAX_STREAMS_PER_USER``): this one waits for them."""
        language = (stream.message.trace or {}).get("language_hint") or settings.LANGUAGE_CODE
        with translation.override(language):
            text = customer_streams.waiting_text()
        await stream.emit(protocol.status_frame, protocol.QUEUED, text)

    async with admission.Slot(told, stream.message.conversation.requester, told_own=told_own) as slot:
        metrics.ANSWERS_STREAMING.inc()
        try:
            await _run_pipeline(stream, history, on_first_token=slot.release)
        finally:
            metrics.ANSWERS_STREAMING.dec()


class TokenFrames:
    """Token texts become frames, coalesced: text arriving within ``CHAT_TOKEN_COALESCE_MS`` of the last token
    frame waits and goes out with what follows in one frame (a server-bound answer is 2–3 frames instead of one
    per word; a paced one keeps one frame per word once words are further apart than the window).

    ``final.text`` is the concatenation of the token frames sent: text still waiting when the answer is stopped
    was never shown, and is not part of it.
    """

    def __init__(self, stream: MessageStream, started: float, on_first: Callable[[], None] = lambda: None) -> None:
        self.stream = stream
        self.started = started
        self.on_first = on_first  # the node's answer slot is released at the first token (admission.py)
        self.window = max(0.0, settings.CHAT_TOKEN_COALESCE_MS / 1000)
        self.pending = ""
        self.sent_at: float | None = None

    def due_in(self) -> float | None:
        """Seconds until the waiting text must go out (None: nothing waits)."""
        if not self.pending:
            return None
        return 0.0 if self.sent_at is None else max(0.0, self.sent_at + self.window - time.monotonic())

    async def add(self, text: str) -> None:
        self.pending += text
        if self.due_in() == 0.0:
            await self.flush()

    async def flush(self) -> None:
        if not self.pending:
            return
        now = time.monotonic()
        if self.sent_at is None:
            metrics.FIRST_TOKEN.observe(now - self.started)
            self.on_first()
        else:
            metrics.TOKEN_GAP.observe(now - self.sent_at)
        text, self.pending, self.sent_at = self.pending, "", now
        await self.stream.emit(protocol.token_frame, text)


async def coalesced(events: AsyncIterator[Any], tokens: TokenFrames) -> AsyncIterator[Any]:
    """``events`` without their tokens, which go to ``tokens``: all the token text available at a moment is
    merged, and sent when its window ends (also while the generator is quiet); waiting text is sent before any
    other event (statuses, the final) so frames keep their order.

    The generator runs ahead in a task of its own: while a frame is being sent, the next words gather instead
    of waiting, so a busy node sends fewer, larger frames rather than falling behind one word at a time.
    """
    arrived: collections.deque = collections.deque()
    ready = asyncio.Event()
    ended: list[BaseException | None] = []  # [None] when the generator finished, [exc] when it failed

    async def pump() -> None:
        try:
            async for event in events:
                arrived.append(event)
                ready.set()
            ended.append(None)
        except Exception as exc:  # handed to the consumer, which raises it in its own task
            ended.append(exc)
        ready.set()

    producer = asyncio.ensure_future(pump())
    try:
        while True:
            if not arrived:
                if ended:
                    await tokens.flush()
                    if ended[0] is not None:
                        raise ended[0]
                    return
                ready.clear()
                due = tokens.due_in()
                try:
                    await asyncio.wait_for(ready.wait(), timeout=due)
                except TimeoutError:
                    await tokens.flush()
                continue
            event = arrived.popleft()
            if isinstance(event, answering.TokenEvent):
                text = event.text
                while arrived and isinstance(arrived[0], answering.TokenEvent):
                    text += arrived.popleft().text
                await tokens.add(text)
                continue
            await tokens.flush()
            yield event
    finally:
        if not producer.done():
            producer.cancel()
            await asyncio.gather(producer, return_exceptions=True)


async def _run_pipeline(
    stream: MessageStream, history: list[dict], on_first_token: Callable[[], None] = lambda: None
) -> None:
    msg = stream.message
    final_event: answering.FinalEvent | None = None
    started = time.monotonic()
    try:
        question = msg.reply_to.text if msg.reply_to else ""
        kb = msg.conversation.knowledge_base
        hint = (msg.trace or {}).get("language_hint") or None  # the socket's Accept-Language, from the ask
        tokens = TokenFrames(stream, started, on_first_token)
        # Searched with the owner's eyes, as they are now (knowledge/visibility.py; None: an anonymous visitor).
        reader = msg.conversation.owner_id
        answers = answering.answer(question, kb=kb, history=history, language=hint, reader=reader,
                                   requester=msg.conversation.requester,
                                   asker=ConversationAsker.of(msg.conversation))
        async for event in coalesced(answers, tokens):
            if isinstance(event, answering.StatusEvent):
                await stream.emit(protocol.status_frame, event.stage, event.text)
            elif isinstance(event, answering.SourcesEvent):
                await stream.emit(protocol.sources_frame, list(event.items))
            elif isinstance(event, answering.ToolResultEvent):
                await stream.emit(protocol.tool_result_frame, dict(event.tool))
            elif isinstance(event, answering.FinalEvent):
                final_event = event
                break
    except asyncio.CancelledError:
        if stream.lost:
            return  # another node closed the message; nothing of ours to save
        if stream.cancel_requested:
            await stream.finish(protocol.CANCELLED)
            return
        await stream.finish(protocol.INTERRUPTED)
        raise
    except LeaseLost:
        log.warning("answer %s was closed by another node (lease lapsed); stopping", msg.pk)
        return
    except outages.OutageTooLong as exc:  # Redis or PostgreSQL gone for longer than CHAT_OUTAGE_SECONDS
        log.error("answer %s gives up: %s", msg.pk, exc)
        await stream.finish(protocol.INTERRUPTED, error=str(exc))
        return
    except answering.AnswerBackendError as exc:
        await stream.error(protocol.BACKEND_ERROR, str(exc) or "The answer generator failed.")
        await stream.finish(protocol.FAILED, error=str(exc))
        return
    except Exception as exc:
        log.exception("answer pipeline failed for message %s", msg.pk)
        await stream.error(protocol.BACKEND_ERROR, "The assistant failed unexpectedly; please ask again.")
        await stream.finish(protocol.FAILED, error=repr(exc))
        return
    if final_event is None:
        await stream.error(protocol.BACKEND_ERROR, "The answer stopped before it was finished.")
        await stream.finish(protocol.FAILED, error="no final event")
        return
    # The grounding guard may replace an uncited answer after its tokens went out: then the final carries it.
    replaced = bool(getattr(final_event, "replaced", False))
    if final_event.text != stream.text and not replaced:
        log.warning("final text of %s differs from its tokens; the tokens win", msg.pk)
    trace = dict(final_event.trace or {})
    trace.setdefault("timings", final_event.timings)
    # Nothing relevant in the knowledge base: the answer offers a person. Kept in the trace, so a reload, a
    # replay from the database and the console's trace show it too (Message.offers_handoff).
    trace["offer_handoff"] = bool(getattr(final_event, "offer_handoff", False))
    await stream.finish(
        protocol.COMPLETE,
        html=final_event.html if replaced or final_event.text == stream.text else "",
        citations=list(final_event.citations),
        trace=trace,
        replacement=final_event.text if replaced else None,
    )


