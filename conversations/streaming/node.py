"""This process as one node of the site: its control channel, the leases it renews, the reaper it runs.

A claimed message has ``lease_owner`` (the node's control channel) and ``lease_expires_at``, renewed by the node
every ``CHAT_REAPER_INTERVAL_SECONDS``. The same periodic task, on every node, reaps messages whose lease lapsed
(their node died, e.g. SIGKILL): it closes them ``interrupted`` with the partial text rebuilt from the frame log,
publishes their ``final`` and restarts the conversation's queue. Detection time: at most ``CHAT_LEASE_SECONDS +
CHAT_REAPER_INTERVAL_SECONDS`` after the node's last renewal.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from datetime import timedelta

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Now
from django.utils import timezone

from chatsite import metrics
from conversations import groups, protocol
from conversations.models import Message
from conversations.streaming import cancelling, workers
from conversations.streaming.framelog import frame_log
from conversations.streaming.stream import MessageStream, final_frame_of, publish

log = logging.getLogger(__name__)

REAP_BATCH = 50  # expired leases closed per reaper pass (the rest on the next pass)
CAS_ATTEMPTS = 5  # a reaper racing a still-writing owner re-reads the log this many times at most


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
                    cancelling.stop_local(uuid.UUID(event["message"]))
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
            workers.kick(conversation_id)  # the questions queued behind the dead answer are answered next
        for conversation_id in await database_sync_to_async(orphaned_conversations)():
            workers.kick(conversation_id)

    async def renew(self) -> None:
        owned = [pk for pk, stream in workers.active.items() if stream.owner == self.channel and not stream.finished]
        if not owned:
            return
        rows = await database_sync_to_async(_renew)(owned, self.channel)
        for pk in owned:
            if pk not in rows:
                log.warning("lost the lease of %s (reaped by another node); stopping it", pk)
                cancelling.stop_local(pk, lost=True)
            elif rows[pk]:
                cancelling.stop_local(pk)  # cancel_requested, and the fast signal did not arrive

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
        final = final_frame_of(stream, state)
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
        .filter(~Exists(workers.live_lease(OuterRef("conversation"))))
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


async def stop_node() -> None:
    """Stop this process's node (its control channel and lease task), if it runs on this loop."""
    global _node
    if _node is not None and _node.loop is asyncio.get_running_loop():
        await _node.stop()
    _node = None


def start_node_when_serving() -> None:
    """Under Daphne, start the node as soon as the reactor runs: the reaper must not wait for a customer."""
    if "daphne.server" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.callWhenRunning(lambda: asyncio.ensure_future(ensure_node()))


