"""Open sockets per user: this node's registry of them, and the bound on how many one user holds across the site.

Why both in one place: a revocation that reaches this node through PostgreSQL (conversations/revocation_listener.py)
must find the user's sockets on this node, and the bound on sockets per user must count them — the same record of
which socket belongs to whom.

**Owner**: who a socket counts against — ``chat:u<user id>``, ``chat:s<session key>`` for an anonymous visitor, and
``console:u<user id>``: console sockets are counted apart, with the same bound, so a support person's console tabs
never close their chat and the other way round.

**The bound** (``CHAT_MAX_SOCKETS_PER_USER``, 20; 0: none). Why: one account could hold 1 000 sockets on a node, each
costing memory and a share of every fan-out. A socket past the bound closes the owner's OLDEST socket, not the new
one: the tab in front of the person always works and a forgotten one goes. It is told through the channel layer
(``socket.evicted`` to its channel, on whatever node it is) and sends ``too_many_sockets`` then closes with 4429.

* With ``REDIS_URL``: one sorted set per owner in Redis (member: the socket's channel name, score: when it
  connected, in ms), added to and trimmed in one script — every node sees one count, and two sockets connecting at
  once on two nodes cannot both stay. The key's TTL is refreshed at every connect; records older than any socket
  lives (``RECORD_SECONDS``) are dropped. A member left by a node that died is harmless: it is among the oldest, so
  it is evicted first, and the event sent to its channel reaches nobody.
* Without: this process's registry (one node).

A Redis outage admits the socket uncounted (fail open, one warning line a minute): the bound protects the site from
one user, it must not lock everyone out.
"""

from __future__ import annotations

import logging
import time

from channels.layers import get_channel_layer
from django.conf import settings

from chatsite import outages
from conversations import groups
from conversations.redis_clients import LoopClients

log = logging.getLogger(__name__)

KINDS = ("chat", "console")  # the sockets' ``socket_kind``; each kind is counted apart

#: How long a record of a socket is kept: longer than Daphne lets a socket live (``--websocket_timeout`` 3600 s,
#: docs/deployment.md), so a live socket's record never lapses first.
RECORD_SECONDS = 2 * 3600
#: A Redis call that takes longer fails (the socket is then admitted uncounted): a frozen Redis must not hang connects.
REDIS_TIMEOUT_SECONDS = 2.0
REDIS_CONNECTIONS = 20  # per node; connects and disconnects wait for a free one (up to the timeout)
WARN_EVERY_SECONDS = 60.0


def owner(socket_kind: str, user_id: int | None, session_key: str = "") -> str:
    """Whom a socket counts against: the signed-in user, else the anonymous visitor's session, per kind."""
    return f"{socket_kind}:u{int(user_id)}" if user_id is not None else f"{socket_kind}:s{session_key}"


class LocalSockets:
    """This process's open sockets by owner, oldest first (a dict keeps insertion order)."""

    def __init__(self) -> None:
        self._by_owner: dict[str, dict[str, None]] = {}

    def add(self, owner: str, channel: str) -> None:
        self._by_owner.setdefault(owner, {})[channel] = None

    def discard(self, owner: str, channel: str) -> None:
        channels = self._by_owner.get(owner)
        if channels is not None:
            channels.pop(channel, None)
            if not channels:
                del self._by_owner[owner]

    def channels(self, owner: str) -> list[str]:
        """The owner's sockets on this node, oldest first."""
        return list(self._by_owner.get(owner, ()))

    def of_user(self, user_id: int) -> list[str]:
        """Every socket of a signed-in user on this node, chat and console."""
        return [channel for kind in KINDS for channel in self.channels(owner(kind, user_id))]


LOCAL = LocalSockets()

# KEYS[1] the owner's set; ARGV: the new socket's channel, now (ms), the bound, RECORD_SECONDS in ms.
# Returns the channels pushed over the bound, oldest first, already removed from the set.
_ADMIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[4]))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if over <= 0 then return {} end
local oldest = redis.call('ZRANGE', KEYS[1], 0, over - 1)
redis.call('ZREM', KEYS[1], unpack(oldest))
return oldest
"""


class RedisSockets:
    """The owners' sockets in Redis, shared by every node (one client per event loop)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._clients = LoopClients(
            url, _ADMIT, max_connections=lambda: REDIS_CONNECTIONS, timeout_seconds=REDIS_TIMEOUT_SECONDS
        )

    def key(self, owner: str) -> str:
        return f"{self.prefix}:sockets:{owner}"

    async def admit(self, owner: str, channel: str, limit: int) -> list[str]:
        (script,) = self._clients.get().scripts
        over = await script(
            keys=[self.key(owner)], args=[channel, int(time.time() * 1000), limit, RECORD_SECONDS * 1000]
        )
        return [item.decode() if isinstance(item, bytes) else item for item in over]

    async def forget(self, owner: str, channel: str) -> None:
        await self._clients.get().client.zrem(self.key(owner), channel)


_redis: dict[tuple[str, str], RedisSockets] = {}


def _shared() -> RedisSockets | None:
    """The Redis record for the current settings, or None without ``REDIS_URL`` or without a bound."""
    if not settings.REDIS_URL or settings.CHAT_MAX_SOCKETS_PER_USER <= 0:
        return None
    key = (settings.REDIS_URL, settings.CHANNEL_PREFIX)
    if key not in _redis:
        _redis[key] = RedisSockets(*key)
    return _redis[key]


class _Warnings:
    """At most one warning line per ``WARN_EVERY_SECONDS`` about Redis being unreachable, never a traceback."""

    def __init__(self) -> None:
        self.logged_at = -WARN_EVERY_SECONDS

    def note(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self.logged_at >= WARN_EVERY_SECONDS:
            self.logged_at = now
            log.warning("sockets per user: %s (%s: %s); sockets are admitted uncounted meanwhile", what,
                        type(exc).__name__, exc)  # fmt: skip


_WARNINGS = _Warnings()


def _unreachable() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (*outages.transient_errors(), redis.exceptions.RedisError, OSError)


async def admit(owner: str, channel: str) -> int:
    """Count a socket that has just opened, and tell the owner's oldest sockets past the bound to close, on
    whatever node they are. Returns how many were told."""
    LOCAL.add(owner, channel)
    limit = settings.CHAT_MAX_SOCKETS_PER_USER
    if limit <= 0:
        return 0
    shared = _shared()
    if shared is None:
        mine = LOCAL.channels(owner)
        over = mine[: max(0, len(mine) - limit)]
    else:
        try:
            over = await shared.admit(owner, channel, limit)
        except _unreachable() as exc:
            _WARNINGS.note("Redis unreachable", exc)
            return 0
    for victim in over:
        LOCAL.discard(owner, victim)  # counted no more from now on (a no-op when it is on another node)
        try:
            await get_channel_layer().send(victim, {"type": groups.SOCKET_EVICTED, "limit": limit})
        except _unreachable() as exc:
            _WARNINGS.note("could not tell the oldest socket to close", exc)
    return len(over)


async def forget(owner: str, channel: str) -> None:
    """A socket closed: it counts no more (an evicted one was already uncounted; forgetting it again is a no-op)."""
    LOCAL.discard(owner, channel)
    shared = _shared()
    if shared is None:
        return
    try:
        await shared.forget(owner, channel)
    except _unreachable():
        pass  # a record left behind is harmless: it is the oldest, evicted first, and lapses with its key
