"""Leases that never lapse on a living node: renewed from a thread of their own, and node heartbeats in Redis.

Why a thread: renewal on the event loop starved when the loop was busy with hundreds of answers, and the node's
own reaper (or another node's) then closed healthy answers as ``interrupted``. The ``LeaseKeeper`` thread has its
own PostgreSQL and Redis connections and runs every ``reaper_interval()`` whatever the loop is doing.

Why heartbeats: a node that cannot reach PostgreSQL for a while (its leases lapse) is still alive if it keeps
writing ``<prefix>:node:<channel>`` to Redis (TTL ``CHAT_LEASE_SECONDS``); reapers never close the answers of a
node whose heartbeat is live, and reap nothing when they cannot read heartbeats (they cannot tell).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.models.functions import Now

from conversations.models import Message
from conversations.streaming import workers

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 1.0  # a frozen Redis must not hold up the PostgreSQL renewal that follows


def reaper_interval() -> float:
    """Seconds between lease renewals / reaper passes: never more than a third of the lease."""
    return max(0.2, min(settings.CHAT_REAPER_INTERVAL_SECONDS, settings.CHAT_LEASE_SECONDS / 3))


def heartbeat_key(channel: str) -> str:
    prefix = settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("prefix", "chatsite")
    return f"{prefix}:node:{channel}"


def _redis():
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )


def alive_nodes(channels: Iterable[str]) -> set[str]:
    """The nodes among ``channels`` whose heartbeat is live. Without Redis there is one process: none other is.
    Raises when Redis cannot be read (the caller must then not reap)."""
    channels = sorted(set(channels))
    if not settings.REDIS_URL or not channels:
        return set()
    client = _redis()
    try:
        values = client.mget([heartbeat_key(c) for c in channels])
    finally:
        client.close()
    return {channel for channel, value in zip(channels, values, strict=True) if value is not None}


def renew(owned: list[uuid.UUID], owner: str) -> dict[uuid.UUID, bool]:
    """Extend this node's leases; returns {message: cancel_requested} for the rows it still owns."""
    rows = Message.objects.filter(pk__in=owned, state=Message.State.STREAMING, lease_owner=owner)
    rows.update(lease_expires_at=Now() + timedelta(seconds=settings.CHAT_LEASE_SECONDS))
    return dict(rows.values_list("pk", "cancel_requested"))


class LeaseKeeper(threading.Thread):
    """Every ``reaper_interval()``: this node's heartbeat in Redis, then its leases in PostgreSQL.

    ``report(owned, rows)`` is called on the node's event loop with what ``renew`` found (lost leases, cancels).
    ``failed_at`` (monotonic) is the last time either service could not be reached.
    """

    def __init__(self, channel: str, report: Callable[[list[uuid.UUID], dict[uuid.UUID, bool]], None], loop) -> None:
        super().__init__(name="chat-lease-keeper", daemon=True)
        self.channel = channel
        self.report = report
        self.loop = loop
        self.stopping = threading.Event()
        self.failed_at: float | None = None
        self._failing: set[str] = set()  # services failing now: one log line when it starts, one when it ends
        self._client = None

    def run(self) -> None:
        try:
            while True:
                self.beat()
                if self.stopping.wait(reaper_interval()):
                    return
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()

    def beat(self) -> None:
        if settings.REDIS_URL:
            self._attempt("Redis", self._heartbeat)
        owned = [pk for pk, s in dict(workers.active).items() if s.owner == self.channel and not s.finished]
        if owned:
            rows = self._attempt("PostgreSQL", lambda: self._renew(owned))
            if rows is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(self.report, owned, rows)
        else:
            connection.close()  # an idle node holds no session for its keeper

    def _heartbeat(self) -> None:
        if self._client is None:
            self._client = _redis()
        self._client.set(heartbeat_key(self.channel), "1", px=int(settings.CHAT_LEASE_SECONDS * 1000))

    def _renew(self, owned: list[uuid.UUID]) -> dict[uuid.UUID, bool]:
        close_old_connections()  # drops a connection a PostgreSQL restart broke; the next query reconnects
        return renew(owned, self.channel)

    def _attempt(self, service: str, call: Callable):
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - any failure: try again next beat
            self.failed_at = time.monotonic()
            if service not in self._failing:
                self._failing.add(service)
                log.warning("lease keeper of %s: %s unreachable (%s: %s)", self.channel, service,
                            type(exc).__name__, exc)
            if service == "PostgreSQL":
                with contextlib.suppress(Exception):
                    connection.close()
            return None
        if service in self._failing:
            self._failing.discard(service)
            log.warning("lease keeper of %s: %s reachable again", self.channel, service)
        return result
