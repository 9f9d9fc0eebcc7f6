"""Stopping this process's answers: a graceful ``shutdown`` and, when the loop is already gone, at exit."""

from __future__ import annotations

import asyncio
import atexit
import logging

from conversations import protocol
from conversations.models import Message
from conversations.streaming import node as node_
from conversations.streaming import workers
from conversations.streaming.stream import MessageStream

log = logging.getLogger(__name__)


async def shutdown(grace_seconds: float = 5.0) -> None:
    """Stop every generation in this process; each unfinished message ends ``interrupted``, none stays streaming.

    Questions queued behind them in the conversations this node was answering end ``interrupted`` too (the
    customer asks again), rather than waiting for another node that may not exist.
    """
    running = list(workers.by_conversation.values())
    for worker in running:
        if worker.task and not worker.task.done():
            worker.task.cancel()
        if worker.current_task and not worker.current_task.done():
            worker.current_task.cancel()
    tasks = [t for w in running for t in (w.task, w.current_task) if t is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=grace_seconds)
    for stream in list(workers.active.values()):
        await stream.finish(protocol.INTERRUPTED)
    for worker in running:
        async for message in Message.objects.filter(
            conversation_id=worker.conversation_id, role=Message.Role.ASSISTANT, state=Message.State.STREAMING,
            lease_owner="",
        ).order_by("created_at"):
            await MessageStream(message, owner="").finish(protocol.INTERRUPTED)
    workers.active.clear()
    workers.by_conversation.clear()
    await node_.stop_node()


@atexit.register
def _interrupt_at_exit() -> None:
    """Daphne stops its loop without cancelling our tasks: mark what this process still owned as interrupted."""
    for stream in list(workers.active.values()):
        try:
            stream.finish_at_exit()
        except Exception:  # the DB may already be gone; the lease lapses and another node reaps it
            log.exception("could not mark message %s interrupted at exit", stream.message.pk)
    workers.active.clear()

