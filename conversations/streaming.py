"""Generating answers independently of any socket: numbering, the frame log for ``resume``, fan-out, and leases.

An answer is produced by a task owned by a process (a *node*), not by the WebSocket that asked, so a dropped
connection never stops it. For each assistant message a single ``MessageStream`` numbers its frames (seq 1, 2,
3…), appends each to the message's frame log (Redis list with a TTL when ``REDIS_URL`` is set, readable by every
node; an in-process dict otherwise — one process only) and then publishes it to the conversation's channel-layer
group ``conv.<hex>``, which every socket showing the conversation, on any node, has joined. The append is a
compare-and-append on the expected ``seq``, so two writers can never both own a ``seq``. ``replay()`` reads the
log, or rebuilds the frames from PostgreSQL once the log has expired.

Several nodes (docs/architecture.md, "Several nodes"):

* **The queue is the database.** An assistant message in state ``streaming`` that nobody has claimed is a queued
  answer. A per-conversation ``ConversationWorker`` on some node *claims* the oldest one under a row lock on the
  conversation, and only when no other answer of that conversation holds a live lease: generation is single-flight
  per conversation across all nodes, in the order the questions were asked.
* **Leases.** A claimed message has ``lease_owner`` (the node's control channel) and ``lease_expires_at``, renewed
  by the node every ``CHAT_REAPER_INTERVAL_SECONDS``. The same periodic ``Node`` task, on every node, reaps
  messages whose lease lapsed (their node died, e.g. SIGKILL): it closes them ``interrupted`` with the partial
  text rebuilt from the frame log, publishes their ``final`` and restarts the conversation's queue. Detection
  time: at most ``CHAT_LEASE_SECONDS + CHAT_REAPER_INTERVAL_SECONDS`` after the node's last renewal.
* **Cancel from anywhere.** ``cancel_message`` / ``cancel_conversation`` end a queued answer directly in the
  database; for a claimed one they set ``Message.cancel_requested`` (durable) and send ``stream.cancel`` to the
  owner's control channel (fast). The owner also re-reads the flag at every renewal.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import time
import uuid
import weakref
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Now
from django.utils import timezone

from chatsite import metrics
from conversations import groups, inbox, protocol
from conversations.models import Conversation, Message
from knowledge import answering

log = logging.getLogger(__name__)

HISTORY_LIMIT = 20  # earlier messages handed to the pipeline, which keeps the recent turns it needs
REAP_BATCH = 50  # expired leases closed per reaper pass (the rest on the next pass)
CAS_ATTEMPTS = 5  # a reaper racing a still-writing owner re-reads the log this many times at most


async def publish(conversation_id: uuid.UUID | str, frame: dict[str, Any]) -> None:
    """Send a frame to every socket in the conversation, on any node (through the channel layer)."""
    await get_channel_layer().group_send(groups.conversation(conversation_id), {"type": groups.FRAME, "frame": frame})


class LeaseLost(Exception):
    """Another node closed this message (its lease lapsed and was reaped): stop writing it, silently."""


# --- Frame log ----------------------------------------------------------------------------------------------
class MemoryFrameLog:
    """Frames per message in this process's memory: correct for one process only (no REDIS_URL)."""

    def __init__(self) -> None:
        self._frames: dict[str, tuple[float, list[dict]]] = {}

    def append_sync(self, message_id: str, frame: dict, expected: int | None = None) -> bool:
        _, frames = self._frames.get(message_id, (0.0, []))
        if expected is not None and len(frames) != expected:
            return False
        frames.append(frame)
        self._frames[message_id] = (time.monotonic() + settings.CHAT_FRAME_LOG_TTL_SECONDS, frames)
        return True

    async def append(self, message_id: str, frame: dict, expected: int | None = None) -> bool:
        """Append ``frame``; with ``expected``, only if the log holds exactly that many frames (else False)."""
        return self.append_sync(message_id, frame, expected)

    def read_sync(self, message_id: str, after: int) -> list[dict]:
        self._expire()
        _, frames = self._frames.get(message_id, (0.0, []))
        return list(frames[after:])

    async def read(self, message_id: str, after: int) -> list[dict]:
        return self.read_sync(message_id, after)

    def clear(self) -> None:
        self._frames.clear()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (deadline, _) in self._frames.items() if deadline < now]:
            del self._frames[key]


# Append only if the list has exactly ARGV[2] items: the seq slot is still free. Returns 1 if appended.
_CAS_APPEND = """
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


class RedisFrameLog:
    """Frames per message in a Redis list (index = seq - 1) with a TTL, so every node can replay them."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # one client per event loop

    def key(self, message_id: str) -> str:
        return f"{self.prefix}:frames:{message_id}"

    def _client(self):
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = aioredis.from_url(self.url)
        return client

    async def append(self, message_id: str, frame: dict, expected: int | None = None) -> bool:
        """Append ``frame``; with ``expected``, only if the log holds exactly that many frames (else False)."""
        key, ttl = self.key(message_id), settings.CHAT_FRAME_LOG_TTL_SECONDS
        if expected is not None:
            return bool(await self._client().eval(_CAS_APPEND, 1, key, protocol.encode(frame), expected, ttl))
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.rpush(key, protocol.encode(frame))
            pipe.expire(key, ttl)
            await pipe.execute()
        return True

    async def read(self, message_id: str, after: int) -> list[dict]:
        raw = await self._client().lrange(self.key(message_id), after, -1)
        return [json.loads(item) for item in raw]

    def _sync_client(self):
        import redis

        return redis.Redis.from_url(self.url)

    def append_sync(self, message_id: str, frame: dict, expected: int | None = None) -> bool:
        """For threads and process exit, where no event loop runs."""
        client = self._sync_client()
        try:
            key, ttl = self.key(message_id), settings.CHAT_FRAME_LOG_TTL_SECONDS
            if expected is not None:
                return bool(client.eval(_CAS_APPEND, 1, key, protocol.encode(frame), expected, ttl))
            client.rpush(key, protocol.encode(frame))
            client.expire(key, ttl)
            return True
        finally:
            client.close()

    def read_sync(self, message_id: str, after: int) -> list[dict]:
        client = self._sync_client()
        try:
            return [json.loads(item) for item in client.lrange(self.key(message_id), after, -1)]
        finally:
            client.close()
_memory_log = MemoryFrameLog()
_redis_logs: dict[tuple[str, str], RedisFrameLog] = {}


def frame_log() -> MemoryFrameLog | RedisFrameLog:
    """The frame log for the current settings: Redis when REDIS_URL is set, else this process's memory."""
    if not settings.REDIS_URL:
        return _memory_log
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "chatsite")
    key = (settings.REDIS_URL, prefix)
    if key not in _redis_logs:
        _redis_logs[key] = RedisFrameLog(settings.REDIS_URL, prefix)
    return _redis_logs[key]


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
        self.cancel_requested = False
        self.finished = False
        self.lost = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def _record(self, frame: dict) -> None:
        self.seq = frame["seq"]
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
        frame = build(self.message.pk, self.seq + 1, *args, **kwargs)
        if not await frame_log().append(str(self.message.pk), frame, expected=self.seq):
            self.lost = self.finished = True
            raise LeaseLost(f"seq {frame['seq']} of {self.message.pk} was written by another node")
        self._record(frame)
        await publish(self.message.conversation_id, frame)
        await asyncio.sleep(0)  # let the sockets drain their channels between frames
        return frame

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
        try:
            saved = await Message.objects.filter(
                pk=self.message.pk, state=Message.State.STREAMING, lease_owner=self.owner
            ).aupdate(**fields)
        except Exception:  # the final frame still goes out; the lease will reconcile the row
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
            )
        except LeaseLost:
            log.warning("final of %s: its seq slot was taken", self.message.pk)
        await _refresh_console_row(self.message.conversation_id)
        return True

    def finish_at_exit(self) -> None:
        """Process exit without a running loop: mark the message interrupted, synchronously."""
        if self.finished:
            return
        self.finished = True
        fields = self._final_fields(protocol.INTERRUPTED, "", [], {}, "The server stopped while answering.")
        if Message.objects.filter(
            pk=self.message.pk, state=Message.State.STREAMING, lease_owner=self.owner
        ).update(**fields):
            frame_log().append_sync(str(self.message.pk), _final_frame(self, protocol.INTERRUPTED), expected=self.seq)


async def _refresh_console_row(conversation_id: uuid.UUID) -> None:
    """A finished answer changes the console list's "last message" for that conversation."""
    try:
        await inbox.publish_item(conversation_id)
    except Exception:  # the list is a convenience view: never let it break an answer
        log.exception("could not refresh the console row of %s", conversation_id)


def _final_frame(stream: MessageStream, state: str) -> dict:
    return protocol.final_frame(
        stream.message.pk, stream.seq + 1, text=stream.text, html=_plain_html(stream.text), citations=[],
        state=state, timings={}, offer_handoff=False,
    )


def _plain_html(text: str) -> str:
    from django.utils.html import escape, linebreaks

    return linebreaks(escape(text)) if text else ""


# --- Generation -----------------------------------------------------------------------------------------------
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


# --- The queue: claiming the next answer of a conversation, single-flight across nodes ---------------------
def _live_lease(conversation_ref) -> Any:
    """Answers of a conversation some node is generating right now (claimed, lease not lapsed)."""
    return Message.objects.filter(
        conversation=conversation_ref, role=Message.Role.ASSISTANT, state=Message.State.STREAMING,
        lease_expires_at__gt=Now(),
    ).exclude(lease_owner="")


def claim_next(conversation_id: uuid.UUID, owner: str) -> Message | None:
    """Claim the conversation's oldest queued answer for ``owner``, unless one is already being generated.

    The row lock on the conversation serialises claims (and asks, which take the same lock), so across all
    nodes at most one answer per conversation is generated at a time, in the order the questions were saved.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        if conversation is None or _live_lease(conversation).exists():
            return None
        message = (
            Message.objects.select_related("conversation__knowledge_base", "reply_to")
            .filter(conversation=conversation, role=Message.Role.ASSISTANT, state=Message.State.STREAMING,
                    lease_owner="")
            .order_by("created_at")
            .first()
        )
        if message is None:
            return None
        lease = Now() + timedelta(seconds=settings.CHAT_LEASE_SECONDS)
        Message.objects.filter(pk=message.pk).update(lease_owner=owner, lease_expires_at=lease)
        message.lease_owner = owner
        message.conversation.status = conversation.status
        return message


class ConversationWorker:
    """Answers one conversation's questions one at a time, in order, while this node holds the conversation."""

    def __init__(self, conversation_id: uuid.UUID) -> None:
        self.conversation_id = conversation_id
        self.loop = asyncio.get_running_loop()
        self.current: MessageStream | None = None
        self.current_task: asyncio.Task | None = None
        self.task: asyncio.Task | None = None
        self.kicked = False

    def kick(self) -> None:
        """Look for a queued answer now (a new question, or the answer before it ended)."""
        self.kicked = True
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name=f"chat-worker-{self.conversation_id}")

    async def _run(self) -> None:
        try:
            node = await ensure_node()
            while True:
                self.kicked = False
                message = await database_sync_to_async(claim_next)(self.conversation_id, node.channel)
                if message is None:
                    if self.kicked:
                        continue  # a question arrived while we looked
                    return  # nothing queued, or another node is answering (it takes the next one after)
                stream = MessageStream(message, owner=node.channel)
                _active[message.pk] = stream
                if message.cancel_requested or message.conversation.status == Conversation.Status.AGENT:
                    stream.cancel_requested = True  # cancelled, or a person took over, before it started
                    await stream.finish(protocol.CANCELLED)
                    _active.pop(message.pk, None)
                    continue
                await self._generate(stream)
        finally:
            if _workers.get(self.conversation_id) is self:
                del _workers[self.conversation_id]

    async def _generate(self, stream: MessageStream) -> None:
        self.current = stream
        self.current_task = self.loop.create_task(generate(stream), name=f"chat-answer-{stream.message.pk}")
        try:
            await self.current_task
        except asyncio.CancelledError:
            stopping = asyncio.current_task().cancelling() > 0  # the worker itself is being stopped
            # Reached only if the answer task was cancelled before it could record why; finish() is
            # idempotent, so a message generate() already finished is left alone.
            if not stream.lost:
                await stream.finish(
                    protocol.CANCELLED if stream.cancel_requested and not stopping else protocol.INTERRUPTED
                )
            if stopping:
                raise
        finally:
            _active.pop(stream.message.pk, None)
            self.current = self.current_task = None

    def stop_current(self, message_id: uuid.UUID, *, lost: bool = False) -> bool:
        """Cancel the answer being generated if it is ``message_id`` (``lost``: drop it without writing)."""
        if self.current is None or self.current.message.pk != message_id or self.current_task is None:
            return False
        if lost:
            self.current.lost = self.current.finished = True
        else:
            self.current.cancel_requested = True
        self.current_task.cancel()
        return True


_workers: dict[uuid.UUID, ConversationWorker] = {}
_active: dict[uuid.UUID, MessageStream] = {}  # the answers this process is generating (claimed by its node)


def kick(conversation_id: uuid.UUID) -> None:
    """Make sure this node looks at the conversation's queue (claiming is single-flight, so any node may)."""
    loop = asyncio.get_running_loop()
    worker = _workers.get(conversation_id)
    if worker is None or worker.loop is not loop:
        worker = _workers[conversation_id] = ConversationWorker(conversation_id)
    worker.kick()


def start(message: Message) -> None:
    """Queue generation of an assistant message (state streaming, unclaimed) behind its conversation's earlier
    questions. The answer may end up generated by another node if that node is answering this conversation."""
    kick(message.conversation_id)


# --- Cancel, from any node ---------------------------------------------------------------------------------
async def cancel_message(message_id: uuid.UUID | str) -> bool:
    """Stop one assistant answer from any node; its ``final`` says ``cancelled`` with the partial text kept.

    Here: stop the task at once. Queued (unclaimed): end it in the database and publish its final. Generated by
    another node: set ``cancel_requested`` (durable) and send ``stream.cancel`` to the owner's channel (fast);
    the owner also re-reads the flag at each lease renewal. False if there was nothing left to stop.
    """
    message_id = uuid.UUID(str(message_id))
    if _stop_local(message_id):
        return True
    message = await Message.objects.filter(pk=message_id, role=Message.Role.ASSISTANT).afirst()
    if message is None or message.is_finished:
        return False
    if not message.lease_owner:
        stream = MessageStream(message, owner="")
        stream.cancel_requested = True
        if await stream.finish(protocol.CANCELLED):
            return True
        message = await Message.objects.aget(pk=message_id)  # claimed meanwhile
        if message.is_finished:
            return False
    await Message.objects.filter(pk=message_id, state=Message.State.STREAMING).aupdate(cancel_requested=True)
    if _stop_local(message_id):
        return True
    try:
        await get_channel_layer().send(message.lease_owner, {"type": groups.STREAM_CANCEL, "message": str(message_id)})
    except Exception:  # the flag is in the database: the owner sees it at its next renewal
        log.exception("could not signal cancel of %s to %s", message_id, message.lease_owner)
    return True


async def cancel_conversation(conversation_id: uuid.UUID | str) -> int:
    """Stop every unfinished assistant answer of a conversation, on any node (a staff take-over).

    Save the conversation's ``agent`` status first: a worker never starts an answer in such a conversation.
    Returns how many answers were stopped.
    """
    ids = [
        pk
        async for pk in Message.objects.filter(
            conversation_id=conversation_id, role=Message.Role.ASSISTANT, state=Message.State.STREAMING
        )
        .order_by("-created_at")  # queued ones first, so none starts while the current one stops
        .values_list("pk", flat=True)
    ]
    return sum([await cancel_message(pk) for pk in ids])


def _stop_local(message_id: uuid.UUID, *, lost: bool = False) -> bool:
    stream = _active.get(message_id)
    worker = _workers.get(stream.message.conversation_id) if stream else None
    return bool(worker and worker.stop_current(message_id, lost=lost))


# --- The node: control channel, lease renewal, reaper ------------------------------------------------------
class Node:
    """This process as one node of the site: its control channel, the leases it renews, the reaper it runs.

    One per event loop. Started when Daphne's reactor starts (``start_node_when_serving``, from chatsite/asgi.py)
    and lazily by the first answer, so it runs without any customer action.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.channel = ""
        self.ready = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        self.channel = await get_channel_layer().new_channel()
        self.tasks = [
            self.loop.create_task(self._control(self.channel), name="chat-node-control"),
            self.loop.create_task(self._periodic(), name="chat-node-leases"),
        ]
        self.ready.set()
        log.info("chat node %s: leases %ss, reaper every %ss", self.channel, settings.CHAT_LEASE_SECONDS,
                 settings.CHAT_REAPER_INTERVAL_SECONDS)

    async def _control(self, channel: str) -> None:
        """Messages addressed to this node: ``stream.cancel`` for an answer it generates."""
        layer = get_channel_layer()
        while True:
            try:
                event = await layer.receive(channel)
                if event.get("type") == groups.STREAM_CANCEL:
                    _stop_local(uuid.UUID(event["message"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node control channel failed; retrying")
                await asyncio.sleep(1)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(reaper_interval())
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database or Redis is down: try again next time
                log.exception("chat node lease/reaper pass failed")

    async def tick(self) -> None:
        """One pass: renew this node's leases (and see cancels), reap lapsed ones, restart orphaned queues."""
        await self.renew()
        for conversation_id, frame in await database_sync_to_async(reap_expired)():
            metrics.ANSWERS_REAPED.inc()
            await publish(conversation_id, frame)
            kick(conversation_id)  # the questions queued behind the dead answer are answered next
        for conversation_id in await database_sync_to_async(orphaned_conversations)():
            kick(conversation_id)

    async def renew(self) -> None:
        owned = [pk for pk, stream in _active.items() if stream.owner == self.channel and not stream.finished]
        if not owned:
            return
        rows = await database_sync_to_async(_renew)(owned, self.channel)
        for pk in owned:
            if pk not in rows:
                log.warning("lost the lease of %s (reaped by another node); stopping it", pk)
                _stop_local(pk, lost=True)
            elif rows[pk]:
                _stop_local(pk)  # cancel_requested, and the fast signal did not arrive

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def reaper_interval() -> float:
    """Seconds between lease renewals / reaper passes: never more than a third of the lease."""
    return max(0.2, min(settings.CHAT_REAPER_INTERVAL_SECONDS, settings.CHAT_LEASE_SECONDS / 3))


def _renew(owned: list[uuid.UUID], owner: str) -> dict[uuid.UUID, bool]:
    """Extend this node's leases; returns {message: cancel_requested} for the rows it still owns."""
    rows = Message.objects.filter(pk__in=owned, state=Message.State.STREAMING, lease_owner=owner)
    rows.update(lease_expires_at=Now() + timedelta(seconds=settings.CHAT_LEASE_SECONDS))
    return dict(rows.values_list("pk", "cancel_requested"))


def reap_expired() -> list[tuple[uuid.UUID, dict]]:
    """Close every answer whose lease lapsed (its node died): ``interrupted`` (or ``cancelled`` if asked).

    The partial text is rebuilt from the frame log and the final is compare-and-appended at the next free seq,
    so a slow-but-alive owner cannot write the same seq; it notices at its next frame or renewal and stops.
    Runs in one transaction with SKIP LOCKED, so several nodes' reapers share the work without doubling it.
    Returns (conversation, final frame) pairs to publish.
    """
    closed = []
    with transaction.atomic():
        expired = list(
            Message.objects.select_for_update(skip_locked=True)
            .filter(role=Message.Role.ASSISTANT, state=Message.State.STREAMING, lease_expires_at__lt=Now())
            .order_by("lease_expires_at")[:REAP_BATCH]
        )
        for message in expired:
            state = protocol.CANCELLED if message.cancel_requested else protocol.INTERRUPTED
            stream, final = _close_log(message, state)
            fields = stream._final_fields(state, "", [], {}, "The node generating this answer stopped responding.")
            if final["state"] != state:  # a final already logged (a reaper that died before committing)
                fields["state"] = final["state"]
            Message.objects.filter(pk=message.pk).update(**fields)
            log.warning("reaped answer %s of node %s: %s at seq %s", message.pk, message.lease_owner,
                        fields["state"], final["seq"])
            closed.append((message.conversation_id, final))
    return closed


def _close_log(message: Message, state: str) -> tuple[MessageStream, dict]:
    log_ = frame_log()
    key = str(message.pk)
    for _ in range(CAS_ATTEMPTS):
        frames = log_.read_sync(key, 0)
        stream = MessageStream(message, owner=message.lease_owner)
        stream.absorb(frames)
        if frames and frames[-1]["type"] == protocol.FINAL:
            return stream, frames[-1]
        final = _final_frame(stream, state)
        if log_.append_sync(key, final, expected=len(frames)):
            return stream, final
    raise RuntimeError(f"could not close the frame log of {message.pk}: its writer keeps writing")


def orphaned_conversations() -> list[uuid.UUID]:
    """Conversations with a queued answer nobody will pick up (its node died before claiming it)."""
    stale = timezone.now() - timedelta(seconds=settings.CHAT_LEASE_SECONDS)
    return list(
        Message.objects.filter(
            role=Message.Role.ASSISTANT, state=Message.State.STREAMING, lease_owner="", created_at__lt=stale
        )
        .filter(~Exists(_live_lease(OuterRef("conversation"))))
        .values_list("conversation_id", flat=True)
        .distinct()[:REAP_BATCH]
    )


_node: Node | None = None


async def ensure_node() -> Node:
    """This process's node for the running loop, started on first use."""
    global _node
    loop = asyncio.get_running_loop()
    if _node is None or _node.loop is not loop:
        _node = Node()
        await _node.start()
    await _node.ready.wait()
    return _node


def start_node_when_serving() -> None:
    """Under Daphne, start the node as soon as the reactor runs: the reaper must not wait for a customer."""
    if "daphne.server" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.callWhenRunning(lambda: asyncio.ensure_future(ensure_node()))


# --- Shutdown -----------------------------------------------------------------------------------------------
async def shutdown(grace_seconds: float = 5.0) -> None:
    """Stop every generation in this process; each unfinished message ends ``interrupted``, none stays streaming.

    Questions queued behind them in the conversations this node was answering end ``interrupted`` too (the
    customer asks again), rather than waiting for another node that may not exist.
    """
    global _node
    workers = list(_workers.values())
    for worker in workers:
        if worker.task and not worker.task.done():
            worker.task.cancel()
        if worker.current_task and not worker.current_task.done():
            worker.current_task.cancel()
    tasks = [t for w in workers for t in (w.task, w.current_task) if t is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=grace_seconds)
    for stream in list(_active.values()):
        await stream.finish(protocol.INTERRUPTED)
    for worker in workers:
        async for message in Message.objects.filter(
            conversation_id=worker.conversation_id, role=Message.Role.ASSISTANT, state=Message.State.STREAMING,
            lease_owner="",
        ).order_by("created_at"):
            await MessageStream(message, owner="").finish(protocol.INTERRUPTED)
    _active.clear()
    _workers.clear()
    if _node is not None and _node.loop is asyncio.get_running_loop():
        await _node.stop()
    _node = None


@atexit.register
def _interrupt_at_exit() -> None:
    """Daphne stops its loop without cancelling our tasks: mark what this process still owned as interrupted."""
    for stream in list(_active.values()):
        try:
            stream.finish_at_exit()
        except Exception:  # the DB may already be gone; the lease lapses and another node reaps it
            log.exception("could not mark message %s interrupted at exit", stream.message.pk)
    _active.clear()
