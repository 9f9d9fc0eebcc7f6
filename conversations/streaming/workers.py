"""The queue is the database: an assistant message in state ``streaming`` that nobody has claimed is a queued
answer. A per-conversation ``ConversationWorker`` on some node claims the oldest one under a row lock on the
conversation, and only when no other answer of that conversation holds a live lease: generation is single-flight
per conversation across all nodes, in the order the questions were asked.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from chatsite import outages
from conversations import protocol
from conversations.models import Conversation, Message
from conversations.streaming import node as node_
from conversations.streaming.generation import generate, history
from conversations.streaming.stream import MessageStream


def live_lease(conversation_ref) -> Any:
    """Answers of a conversation some node is generating right now (claimed, lease not lapsed)."""
    return Message.objects.filter(
        conversation=conversation_ref, role=Message.Role.ASSISTANT, state=Message.State.STREAMING,
        lease_expires_at__gt=Now(),
    ).exclude(lease_owner="")


class Claim(NamedTuple):
    """A claimed answer and the conversation before its question (read in the same transaction)."""

    message: Message
    history: list[dict]


def claim_next(conversation_id: uuid.UUID, owner: str) -> Claim | None:
    """Claim the conversation's oldest queued answer for ``owner``, unless one is already being generated.

    The row lock on the conversation serialises claims (and asks, which take the same lock), so across all
    nodes at most one answer per conversation is generated at a time, in the order the questions were saved.
    """
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        if conversation is None or live_lease(conversation).exists():
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
        return Claim(message, history(message))


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
            node = await node_.ensure_node()
            while True:
                self.kicked = False
                claim = await outages.retry(
                    lambda: database_sync_to_async(claim_next)(self.conversation_id, node.channel),
                    f"claiming the next answer of {self.conversation_id}",
                )
                if claim is None:
                    if self.kicked:
                        continue  # a question arrived while we looked
                    return  # nothing queued, or another node is answering (it takes the next one after)
                message = claim.message
                stream = MessageStream(message, owner=node.channel)
                active[message.pk] = stream
                if message.cancel_requested or message.conversation.status == Conversation.Status.AGENT:
                    stream.cancel_requested = True  # cancelled, or a person took over, before it started
                    await stream.finish(protocol.CANCELLED)
                    active.pop(message.pk, None)
                    continue
                await self._generate(stream, claim.history)
                if not stream.more_queued and not self.kicked:
                    return  # its finish saw no other question waiting (and none arrived here since)
        finally:
            if by_conversation.get(self.conversation_id) is self:
                del by_conversation[self.conversation_id]

    async def _generate(self, stream: MessageStream, history: list[dict]) -> None:
        self.current = stream
        self.current_task = self.loop.create_task(
            generate(stream, history), name=f"chat-answer-{stream.message.pk}"
        )
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
            active.pop(stream.message.pk, None)
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


by_conversation: dict[uuid.UUID, ConversationWorker] = {}
active: dict[uuid.UUID, MessageStream] = {}  # the answers this process is generating (claimed by its node)


def kick(conversation_id: uuid.UUID) -> None:
    """Make sure this node looks at the conversation's queue (claiming is single-flight, so any node may)."""
    loop = asyncio.get_running_loop()
    worker = by_conversation.get(conversation_id)
    if worker is None or worker.loop is not loop:
        worker = by_conversation[conversation_id] = ConversationWorker(conversation_id)
    worker.kick()


def start(message: Message) -> None:
    """Queue generation of an assistant message (state streaming, unclaimed) behind its conversation's earlier
    questions. The answer may end up generated by another node if that node is answering this conversation."""
    kick(message.conversation_id)


