"""Generating one answer: run the answer pipeline (knowledge.answering) and turn its events into frames."""

from __future__ import annotations

import asyncio
import logging
import time

from chatsite import metrics, outages
from conversations import protocol
from conversations.models import Message
from conversations.streaming.stream import LeaseLost, MessageStream
from knowledge import answering

log = logging.getLogger(__name__)

HISTORY_LIMIT = 20  # earlier messages handed to the pipeline, which keeps the recent turns it needs


async def _history(message: Message) -> list[dict]:
    """The conversation before the question, oldest first, as the pipeline expects it."""
    question_created = message.reply_to.created_at if message.reply_to else message.created_at
    rows = (
        Message.objects.filter(
            conversation_id=message.conversation_id,
            created_at__lt=question_created,
            role__in=[Message.Role.USER, Message.Role.ASSISTANT, Message.Role.AGENT],
        )
        .exclude(text="")
        .order_by("-created_at")[:HISTORY_LIMIT]
    )
    turns = [{"role": m.role, "text": m.text} async for m in rows]
    return list(reversed(turns))


async def generate(stream: MessageStream) -> None:
    """Run the answer pipeline for one assistant message and turn its events into frames."""
    metrics.ANSWERS_STREAMING.inc()
    try:
        await _run_pipeline(stream)
    finally:
        metrics.ANSWERS_STREAMING.dec()


async def _run_pipeline(stream: MessageStream) -> None:
    msg = stream.message
    final_event: answering.FinalEvent | None = None
    started = last_token = time.monotonic()
    try:
        question = msg.reply_to.text if msg.reply_to else ""
        kb = msg.conversation.knowledge_base
        history = await _history(msg)
        hint = (msg.trace or {}).get("language_hint") or None  # the socket's Accept-Language, from the ask
        async for event in answering.answer(question, kb=kb, history=history, language=hint):
            if isinstance(event, answering.StatusEvent):
                await stream.emit(protocol.status_frame, event.stage, event.text)
            elif isinstance(event, answering.SourcesEvent):
                await stream.emit(protocol.sources_frame, list(event.items))
            elif isinstance(event, answering.TokenEvent):
                if event.text:
                    now = time.monotonic()
                    if stream.text:
                        metrics.TOKEN_GAP.observe(now - last_token)
                    else:
                        metrics.FIRST_TOKEN.observe(now - started)
                    last_token = now
                    await stream.emit(protocol.token_frame, event.text)
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


