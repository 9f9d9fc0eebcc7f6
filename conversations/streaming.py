"""Generating answers independently of any socket: numbering, the frame log for ``resume``, and fan-out.

An answer is produced by a task owned by the process, not by the WebSocket that asked, so a dropped connection
never stops it. For each assistant message a single ``MessageStream`` numbers its frames (seq 1, 2, 3…), appends
each to the message's frame log (Redis list with a TTL when ``REDIS_URL`` is set, readable by every node; an
in-process dict otherwise — one process only) and then publishes it to the conversation's channel-layer group
``conv.<hex>``, which every socket showing the conversation has joined. ``replay()`` reads the log, or rebuilds
the frames from PostgreSQL once the log has expired.

Questions of one conversation are answered one at a time, in order, by a per-conversation worker task.
A generation that dies (error, shutdown) ends ``interrupted``; issue 4 adds a cross-node lease for nodes that
die without running any code (SIGKILL).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import time
import uuid
import weakref
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from conversations import protocol
from conversations.models import Message
from knowledge import answering

log = logging.getLogger(__name__)

HISTORY_LIMIT = 20  # earlier messages handed to the pipeline, which keeps the recent turns it needs


def group_name(conversation_id: uuid.UUID | str) -> str:
    """The channel-layer group of one conversation: every socket (and, later, staff watcher) showing it."""
    return f"conv.{uuid.UUID(str(conversation_id)).hex}"


async def publish(conversation_id: uuid.UUID | str, frame: dict[str, Any]) -> None:
    """Send a frame to every socket in the conversation, on any node (through the channel layer)."""
    await get_channel_layer().group_send(group_name(conversation_id), {"type": "chat.frame", "frame": frame})


# --- Frame log ----------------------------------------------------------------------------------------------
class MemoryFrameLog:
    """Frames per message in this process's memory: correct for one process only (no REDIS_URL)."""

    def __init__(self) -> None:
        self._frames: dict[str, tuple[float, list[dict]]] = {}

    async def append(self, message_id: str, frame: dict) -> None:
        _, frames = self._frames.get(message_id, (0.0, []))
        frames.append(frame)
        self._frames[message_id] = (time.monotonic() + settings.CHAT_FRAME_LOG_TTL_SECONDS, frames)

    async def read(self, message_id: str, after: int) -> list[dict]:
        self._expire()
        _, frames = self._frames.get(message_id, (0.0, []))
        return list(frames[after:])

    def clear(self) -> None:
        self._frames.clear()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (deadline, _) in self._frames.items() if deadline < now]:
            del self._frames[key]


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

    async def append(self, message_id: str, frame: dict) -> None:
        key = self.key(message_id)
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.rpush(key, protocol.encode(frame))
            pipe.expire(key, settings.CHAT_FRAME_LOG_TTL_SECONDS)
            await pipe.execute()

    async def read(self, message_id: str, after: int) -> list[dict]:
        raw = await self._client().lrange(self.key(message_id), after, -1)
        return [json.loads(item) for item in raw]

    def append_sync(self, message_id: str, frame: dict) -> None:
        """For process exit, when no event loop runs any more."""
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.rpush(self.key(message_id), protocol.encode(frame))
            client.expire(self.key(message_id), settings.CHAT_FRAME_LOG_TTL_SECONDS)
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
    )


# --- One message's stream -----------------------------------------------------------------------------------
class MessageStream:
    """The single writer of one assistant message's frames: numbers them, logs them, publishes them."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.seq = 0
        self.parts: list[str] = []
        self.compact: list[Any] = []  # what Message.frames will hold
        self.sources: list[dict] = []
        self.cancel_requested = False
        self.finished = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def emit(self, build, *args: Any, **kwargs: Any) -> dict:
        self.seq += 1
        frame = build(self.message.pk, self.seq, *args, **kwargs)
        if frame["type"] == protocol.TOKEN:
            self.parts.append(frame["text"])
            self.compact.append(len(frame["text"]))
        elif frame["type"] != protocol.FINAL:
            self.compact.append({k: v for k, v in frame.items() if k not in ("message", "seq")})
        await frame_log().append(str(self.message.pk), frame)
        await publish(self.message.conversation_id, frame)
        await asyncio.sleep(0)  # let the sockets drain their channels between frames
        return frame

    async def error(self, code: str, detail: str) -> None:
        await self.emit(lambda m, s: protocol.error_frame(code, detail, message=m, seq=s))

    async def finish(
        self,
        state: str,
        *,
        html: str = "",
        citations: list[int] | None = None,
        trace: dict | None = None,
        error: str = "",
    ) -> None:
        """Save the message as finished, then send its final frame. Idempotent."""
        if self.finished:
            return
        self.finished = True
        msg = self.message
        trace = dict(trace or {})
        msg.text = self.text
        msg.html = html or _plain_html(msg.text)
        msg.state = state
        msg.citations = citations or []
        msg.sources = self.sources
        msg.trace = trace
        msg.frames = self.compact
        msg.error = error
        msg.seq_last = self.seq + 1
        msg.completed_at = timezone.now()
        try:
            await msg.asave()
        except Exception:  # the final frame still goes out; shutdown/lease will reconcile the row
            log.exception("could not save message %s", msg.pk)
        await self.emit(
            protocol.final_frame,
            text=msg.text,
            html=msg.html,
            citations=msg.citations,
            state=state,
            timings=trace.get("timings", {}),
        )

    def finish_at_exit(self) -> None:
        """Process exit without a running loop: mark the message interrupted, synchronously."""
        if self.finished:
            return
        self.finished = True
        msg = self.message
        seq = self.seq + 1
        Message.objects.filter(pk=msg.pk, state=Message.State.STREAMING).update(
            state=Message.State.INTERRUPTED,
            text=self.text,
            html=_plain_html(self.text),
            sources=self.sources,
            frames=self.compact,
            seq_last=seq,
            completed_at=timezone.now(),
            updated_at=timezone.now(),
        )
        log_ = frame_log()
        if isinstance(log_, RedisFrameLog):
            frame = protocol.final_frame(
                msg.pk, seq, text=self.text, html="", citations=[], state=protocol.INTERRUPTED, timings={}
            )
            log_.append_sync(str(msg.pk), frame)


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
    msg = stream.message
    final_event: answering.FinalEvent | None = None
    try:
        question = msg.reply_to.text if msg.reply_to else ""
        kb = msg.conversation.knowledge_base
        history = await _history(msg)
        async for event in answering.answer(question, kb=kb, history=history):
            if isinstance(event, answering.StatusEvent):
                await stream.emit(protocol.status_frame, event.stage, event.text)
            elif isinstance(event, answering.SourcesEvent):
                stream.sources = list(event.items)
                await stream.emit(protocol.sources_frame, stream.sources)
            elif isinstance(event, answering.TokenEvent):
                if event.text:
                    await stream.emit(protocol.token_frame, event.text)
            elif isinstance(event, answering.FinalEvent):
                final_event = event
                break
    except asyncio.CancelledError:
        if stream.cancel_requested:
            await stream.finish(protocol.CANCELLED)
            return
        await stream.finish(protocol.INTERRUPTED)
        raise
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
    if final_event.text != stream.text:
        log.warning("final text of %s differs from its tokens; the tokens win", msg.pk)
    trace = dict(final_event.trace or {})
    trace.setdefault("timings", final_event.timings)
    await stream.finish(
        protocol.COMPLETE,
        html=final_event.html if final_event.text == stream.text else "",
        citations=list(final_event.citations),
        trace=trace,
    )


class ConversationWorker:
    """Answers one conversation's questions one at a time, in the order they were asked."""

    def __init__(self, conversation_id: uuid.UUID) -> None:
        self.conversation_id = conversation_id
        self.loop = asyncio.get_running_loop()
        self.queue: collections.deque[MessageStream] = collections.deque()
        self.current: MessageStream | None = None
        self.current_task: asyncio.Task | None = None
        self.task: asyncio.Task | None = None

    def submit(self, stream: MessageStream) -> None:
        self.queue.append(stream)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name=f"chat-worker-{self.conversation_id}")

    async def _run(self) -> None:
        try:
            while self.queue:
                stream = self.queue.popleft()
                self.current = stream
                self.current_task = self.loop.create_task(generate(stream), name=f"chat-answer-{stream.message.pk}")
                try:
                    await self.current_task
                except asyncio.CancelledError:
                    stopping = asyncio.current_task().cancelling() > 0  # the worker itself is being stopped
                    # Reached only if the answer task was cancelled before it could record why; finish() is
                    # idempotent, so a message generate() already finished is left alone.
                    await stream.finish(protocol.CANCELLED if stream.cancel_requested and not stopping else
                                        protocol.INTERRUPTED)
                    if stopping:
                        raise
                finally:
                    _active.pop(stream.message.pk, None)
                    self.current = self.current_task = None
        finally:
            if _workers.get(self.conversation_id) is self and not self.queue:
                del _workers[self.conversation_id]

    async def cancel(self, message_id: uuid.UUID) -> bool:
        """Stop ``message_id`` if this worker owns it; a queued one ends at once. True if it was here."""
        if self.current is not None and self.current.message.pk == message_id and self.current_task:
            self.current.cancel_requested = True
            self.current_task.cancel()
            return True
        for stream in list(self.queue):
            if stream.message.pk == message_id:
                self.queue.remove(stream)
                stream.cancel_requested = True
                _active.pop(message_id, None)
                await stream.finish(protocol.CANCELLED)
                return True
        return False


_workers: dict[uuid.UUID, ConversationWorker] = {}
_active: dict[uuid.UUID, MessageStream] = {}  # every unfinished message this process owns (queued or generating)


def start(message: Message) -> None:
    """Queue generation of an assistant message (state streaming) behind its conversation's earlier questions.

    ``message`` must have ``conversation__knowledge_base`` and ``reply_to`` loaded.
    """
    loop = asyncio.get_running_loop()
    worker = _workers.get(message.conversation_id)
    if worker is None or worker.loop is not loop:
        worker = _workers[message.conversation_id] = ConversationWorker(message.conversation_id)
    stream = MessageStream(message)
    _active[message.pk] = stream
    worker.submit(stream)


async def cancel(message: Message) -> bool:
    """Cancel an unfinished assistant message owned by this process. False if no task here owns it."""
    worker = _workers.get(message.conversation_id)
    return bool(worker and await worker.cancel(message.pk))


async def shutdown(grace_seconds: float = 5.0) -> None:
    """Stop every generation in this process; each unfinished message ends ``interrupted``, none stays streaming."""
    workers = list(_workers.values())
    for worker in workers:
        for stream in list(worker.queue):
            worker.queue.remove(stream)
            _active.pop(stream.message.pk, None)
            await stream.finish(protocol.INTERRUPTED)
        if worker.task and not worker.task.done():
            worker.task.cancel()
        if worker.current_task and not worker.current_task.done():
            worker.current_task.cancel()
    tasks = [t for w in workers for t in (w.task, w.current_task) if t is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=grace_seconds)
    for stream in list(_active.values()):
        await stream.finish(protocol.INTERRUPTED)
    _active.clear()
    _workers.clear()


@atexit.register
def _interrupt_at_exit() -> None:
    """Daphne stops its loop without cancelling our tasks: mark what this process still owned as interrupted."""
    for stream in list(_active.values()):
        try:
            stream.finish_at_exit()
        except Exception:  # the DB may already be gone; issue 4's lease catches what is left
            log.exception("could not mark message %s interrupted at exit", stream.message.pk)
    _active.clear()
