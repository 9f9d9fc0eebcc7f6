"""This process as one node of the site: its control channel, the leases it renews, the reaper it runs.

A claimed message has ``lease_owner`` (the node's control channel) and ``lease_expires_at``, renewed by the node's
``LeaseKeeper`` thread every ``CHAT_REAPER_INTERVAL_SECONDS`` (leases.py). A periodic task on every node reaps
messages whose lease lapsed and whose node's heartbeat is gone (their node died, e.g. SIGKILL; reaper.py): it
closes them ``interrupted`` with the partial text rebuilt from the frame log, publishes their ``final`` and
restarts the conversation's queue. Detection time: at most ``CHAT_LEASE_SECONDS + CHAT_REAPER_INTERVAL_SECONDS``
after the node's last renewal. A node that could not reach PostgreSQL or Redis itself reaps nothing for one
lease period after (its view of the others' liveness is stale).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from chatsite import metrics, outages
from conversations import groups
from conversations.streaming import cancelling, leases, reaper, workers
from conversations.streaming.stream import publish

log = logging.getLogger(__name__)


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
        self.keeper: leases.LeaseKeeper | None = None
        self.failed_at: float | None = None  # the reaper's own last failure (monotonic)

    async def start(self) -> None:
        self.channel = await get_channel_layer().new_channel()
        self.keeper = leases.LeaseKeeper(self.channel, self.renewed, self.loop)
        self.keeper.start()
        self.tasks = [
            self.loop.create_task(self._control(self.channel), name="chat-node-control"),
            self.loop.create_task(self._periodic(), name="chat-node-reaper"),
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
            except Exception as exc:
                if outages.is_transient(exc):
                    log.warning("node control channel: Redis unreachable (%s); retrying", exc)
                else:
                    log.exception("node control channel failed; retrying")
                await asyncio.sleep(1)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(leases.reaper_interval())
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database or Redis is down: try again next time
                self.failed_at = time.monotonic()
                if outages.is_transient(exc):
                    log.warning("chat node reaper pass: a service is unreachable (%s: %s)", type(exc).__name__, exc)
                else:
                    log.exception("chat node reaper pass failed")

    def in_grace(self) -> bool:
        """True for one lease period after this node could not reach PostgreSQL or Redis: the other nodes were
        probably cut off too, and must get the chance to renew before anyone is declared dead."""
        last = max(self.failed_at or -1e9, (self.keeper.failed_at if self.keeper else None) or -1e9)
        return time.monotonic() - last < settings.CHAT_LEASE_SECONDS

    async def tick(self) -> None:
        """One pass: reap lapsed leases of dead nodes, restart orphaned queues."""
        if self.in_grace():
            return
        for conversation_id, frame in await database_sync_to_async(reaper.reap_expired)(self.channel):
            metrics.ANSWERS_REAPED.inc()
            await publish(conversation_id, frame)
            workers.kick(conversation_id)  # the questions queued behind the dead answer are answered next
        for conversation_id in await database_sync_to_async(reaper.orphaned_conversations)():
            workers.kick(conversation_id)

    def renewed(self, owned: list[uuid.UUID], rows: dict[uuid.UUID, bool]) -> None:
        """The keeper's report (on the loop): stop answers whose lease another node took, or that were cancelled."""
        for pk in owned:
            stream = workers.active.get(pk)
            if stream is None or stream.finished:
                continue  # finished while the keeper renewed
            if pk not in rows:
                log.warning("lost the lease of %s (reaped by another node); stopping it", pk)
                cancelling.stop_local(pk, lost=True)
            elif rows[pk]:
                cancelling.stop_local(pk)  # cancel_requested, and the fast signal did not arrive

    async def stop(self) -> None:
        if self.keeper is not None:
            self.keeper.stop()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


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


