"""One assistant message's frames: ``MessageStream`` numbers them (seq 1, 2, 3…), appends each to the frame log,
publishes it to the conversation's group on every node, and finishes the message once; ``replay`` gives a socket
what it missed, from the log or, once the log expired, rebuilt from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatsite import metrics, outages
from conversations import groups, inbox, outcomes, protocol
from conversations.models import Conversation, Message
from conversations.streaming.framelog import Append, Publication, frame_log

log = logging.getLogger(__name__)


PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"


async def publish(conversation_id: uuid.UUID | str, frame: dict[str, Any]) -> None:
    """Send a frame to every socket in the conversation, on any node (through the channel layer)."""
    await get_channel_layer().group_send(groups.conversation(conversation_id), {"type": groups.FRAME, "frame": frame})


def publication(conversation_id: uuid.UUID | str, frame: dict[str, Any]) -> Publication | None:
    """``publish``'s Redis message, for the frame log's append to send itself — when the channel layer is
    channels-redis's pub/sub layer on the frame log's Redis: then a frame costs one Redis call instead of two,
    and does not wait for the layer's one-publish-at-a-time lock. None: publish through the layer."""
    layer_settings = settings.CHANNEL_LAYERS["default"]
    same_redis = (
        layer_settings["BACKEND"] == PUBSUB_LAYER
        and layer_settings.get("CONFIG", {}).get("hosts") == [settings.REDIS_URL]
        and frame_log().publishes
    )
    if not same_redis:
        return None
    layer = get_channel_layer()
    # Group channel and encoding exactly as the layer's own group_send (channels-redis 4.3, pinned).
    channel = layer._get_group_channel_name(groups.conversation(conversation_id))
    return Publication(channel, layer.serialize({"type": groups.FRAME, "frame": frame}))


class LeaseLost(Exception):
    """Another node closed this message (its lease lapsed and was reaped): stop writing it, silently."""



async def replay(message: Message, after: int) -> list[dict]:
    """Every frame of ``message`` with seq > ``after``: from the log, or rebuilt from the DB once finished."""
    frames = await frame_log().read(str(message.pk), after)
    if frames and frames[0].get("seq") == after + 1:
        return frames
    await message.arefresh_from_db()
    if message.is_finished:
        return [f for f in frames_from_db(message) if f["seq"] > after]
    return frames  # still streaming: what the log has (possibly nothing yet); the rest arrives live


def frames_from_db(message: Message) -> list[dict]:
    """Rebuild a finished message's frames, same seqs, from its compact copy (``Message.frames``)."""
    frames: list[dict] = []
    offset = 0
    for seq, item in enumerate(message.frames, start=1):
        if isinstance(item, int):
            frames.append(protocol.token_frame(message.pk, seq, message.text[offset : offset + item]))
            offset += item
        else:
            frames.append({**item, "message": str(message.pk), "seq": seq})
    frames.append(_final_from_message(message, len(frames) + 1))
    return frames


def _final_from_message(message: Message, seq: int) -> dict:
    return protocol.final_frame(
        message.pk,
        seq,
        text=message.text,
        html=message.html,
        citations=list(message.citations or []),
        state=message.state,
        timings=(message.trace or {}).get("timings", {}),
        offer_handoff=message.offers_handoff,
        replaced=bool(((message.trace or {}).get("grounding") or {}).get("replaced")),
        version=message.version,
    )


# --- One message's stream -----------------------------------------------------------------------------------
class MessageStream:
    """The single writer of one assistant message's frames: numbers them, logs them, publishes them.

    ``owner`` is the ``lease_owner`` the message row must still have for this stream to write it ("" for a
    queued message nobody claimed); if the row moved on (reaped by another node), the stream is ``lost``.
    """

    def __init__(self, message: Message, owner: str = "") -> None:
        self.message = message
        self.owner = owner
        self.seq = 0
        self.parts: list[str] = []
        self.compact: list[Any] = []  # what Message.frames will hold
        self.sources: list[dict] = []
        self.sent: list[dict] = []  # every frame of the log, kept to restore a log Redis lost
        self.cancel_requested = False
        self.finished = False
        self.lost = False
        self.more_queued = True  # after finish(): whether the conversation has another question waiting

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _record(self, frame: dict) -> None:
        self.seq = frame["seq"]
        self.sent.append(frame)
        if frame["type"] == protocol.TOKEN:
            self.parts.append(frame["text"])
            self.compact.append(len(frame["text"]))
        elif frame["type"] == protocol.SOURCES:
            self.sources = list(frame.get("items") or [])
            self.compact.append({k: v for k, v in frame.items() if k not in ("message", "seq")})
        elif frame["type"] != protocol.FINAL:
            self.compact.append({k: v for k, v in frame.items() if k not in ("message", "seq")})

    def absorb(self, frames: list[dict]) -> None:
        """Take over the frames another writer logged (the reaper closing a dead node's message)."""
        for frame in frames:
            if frame["type"] != protocol.FINAL:
                self._record(frame)

    async def emit(self, build, *args: Any, **kwargs: Any) -> dict:
        """Number, log and publish the next frame. Through a Redis outage the answer waits (up to
        ``CHAT_OUTAGE_SECONDS``) and goes on at the same seq; a log Redis lost is restored from ``sent``."""
        frame = build(self.message.pk, self.seq + 1, *args, **kwargs)
        sent_with_it = publication(self.message.conversation_id, frame)  # None: published separately
        await outages.retry(lambda: self._append(frame, sent_with_it), f"frame log of answer {self.message.pk}")
        self._record(frame)
        if sent_with_it is None:
            await outages.retry(
                lambda: publish(self.message.conversation_id, frame), f"publishing answer {self.message.pk}"
            )
        await asyncio.sleep(0)  # let the sockets drain their channels between frames
        return frame

    async def _append(self, frame: dict, sent_with_it: Publication | None) -> None:
        log_, key = frame_log(), str(self.message.pk)
        result = await log_.append(key, frame, expected=self.seq, publication=sent_with_it)
        if result is Append.SHORT:
            log.warning("the frame log of %s lost its frames (Redis restarted?); restoring %d", key, len(self.sent))
            await log_.restore(key, self.sent)
            result = await log_.append(key, frame, expected=self.seq, publication=sent_with_it)
        if result is Append.TAKEN:
            self.lost = self.finished = True
            raise LeaseLost(f"seq {frame['seq']} of {self.message.pk} was written by another node")
        if result is not Append.APPENDED:
            raise RuntimeError(f"the frame log of {key} stays shorter than its writer's {self.seq} frames")

    async def error(self, code: str, detail: str) -> None:
        await self.emit(lambda m, s: protocol.error_frame(code, detail, message=m, seq=s))

    def _final_fields(
        self, state: str, html: str, citations: list[int] | None, trace: dict, error: str,
        replacement: str | None = None,
    ) -> dict:
        text = self.text if replacement is None else replacement
        frames = self.compact
        if replacement is not None:  # the message's text is no longer its tokens: keep their own text for replay
            parts = iter(self.parts)
            frames = [{"type": protocol.TOKEN, "text": next(parts)} if isinstance(f, int) else f for f in frames]
        return {
            "text": text,
            "html": html or _plain_html(text),
            "state": state,
            "citations": citations or [],
            "sources": self.sources,
            "trace": trace,
            "frames": frames,
            "error": error,
            **outcomes.answer_columns(trace),  # the insights' columns (first token, tool calls)
            "seq_last": self.seq + 1,
            "lease_expires_at": None,
            "completed_at": timezone.now(),
            "updated_at": timezone.now(),
        }

    async def finish(
        self,
        state: str,
        *,
        html: str = "",
        citations: list[int] | None = None,
        trace: dict | None = None,
        error: str = "",
        replacement: str | None = None,
    ) -> bool:
        """Save the message as finished, then send its final frame. Idempotent; False if another writer did.

        ``replacement``: the grounding guard's answer that replaces the streamed tokens (``final.replaced``).
        """
        if self.finished:
            return False
        self.finished = True
        metrics.ANSWERS_FINISHED.labels(state).inc()
        trace = dict(trace or {})
        fields = self._final_fields(state, html, citations, trace, error, replacement)
        row = None
        try:  # through a PostgreSQL outage: wait for it (the lease is kept alive meanwhile; node.py)
            saved, self.more_queued, row = await outages.retry(
                lambda: database_sync_to_async(self._save_finished)(fields), f"saving answer {self.message.pk}"
            )
        except Exception:  # the final frame still goes out; the reaper reconciles the row from the frame log
            log.exception("could not save message %s", self.message.pk)
            saved = 1
        if not saved:
            self.lost = True  # reaped, cancelled or claimed elsewhere meanwhile: that writer sends the final
            return False
        for name, value in fields.items():
            setattr(self.message, name, value)
        try:
            await self.emit(
                protocol.final_frame,
                text=fields["text"],
                html=fields["html"],
                citations=fields["citations"],
                state=state,
                timings=trace.get("timings", {}),
                offer_handoff=bool(trace.get("offer_handoff")),
                replaced=replacement is not None,
                version=self.message.version,
            )
        except LeaseLost:
            log.warning("final of %s: its seq slot was taken", self.message.pk)
        except outages.OutageTooLong:  # the row is saved: a resume after Redis is back replays it from there
            log.exception("could not send the final of %s", self.message.pk)
        try:  # a finished answer changes the console list's "last message" for that conversation
            await inbox.publish_row(row)
        except Exception:  # the list is a convenience view: never let it break an answer
            log.exception("could not refresh the console row of %s", self.message.conversation_id)
        return True

    def _save_finished(self, fields: dict) -> tuple[int, bool, dict | None]:
        """One transaction: the finished row (if still ours), whether another question of the conversation
        waits (so the worker need not look again), and the console's row for the conversation.

        The conversation's row lock (taken first, as asks and claims do) makes "nothing waits" reliable: an
        ask that commits later finds this answer finished, so its own node claims the new question.
        """
        with transaction.atomic():
            conversation = Conversation.objects.select_for_update().filter(pk=self.message.conversation_id).first()
            saved = self._save(fields)
            if saved:  # a knowledge gap, or the customer back on an earlier topic (docs/analytics.md), in this transaction
                outcomes.answer_saved(self.message, fields, conversation)
            queued = Message.objects.filter(
                conversation_id=self.message.conversation_id, role=Message.Role.ASSISTANT,
                state=Message.State.STREAMING, lease_owner="",
            ).exists()
            return saved, queued, inbox.list_item(self.message.conversation_id) if saved else None

    def _save(self, fields: dict) -> int:
        """The finished row, written once, if this stream still owns it (synchronous)."""
        return Message.objects.filter(
            pk=self.message.pk, state=Message.State.STREAMING, lease_owner=self.owner
        ).update(**fields)

    def finish_at_exit(self) -> None:
        """Process exit without a running loop: mark the message interrupted, synchronously."""
        if self.finished:
            return
        self.finished = True
        fields = self._final_fields(protocol.INTERRUPTED, "", [], {}, "The server stopped while answering.")
        if self._save(fields):
            frame_log().append_sync(str(self.message.pk), final_frame_of(self, protocol.INTERRUPTED), expected=self.seq)


def final_frame_of(stream: MessageStream, state: str) -> dict:
    return protocol.final_frame(
        stream.message.pk, stream.seq + 1, text=stream.text, html=_plain_html(stream.text), citations=[],
        state=state, timings={}, offer_handoff=False, version=stream.message.version,
    )


def _plain_html(text: str) -> str:
    from django.utils.html import escape, linebreaks

    return linebreaks(escape(text)) if text else ""


