"""One customer, few streams: a customer (``Conversation.requester``) has at most ``CHAT_MAX_STREAMS_PER_USER``
answers generating at once, across all their conversations and every node; their other answers wait in line, first
come first served, and start as one of theirs ends. ``0``: no bound.

Why: node admission (admission.py) bounds a customer to half of ONE node's slots, and only up to the first token.
A customer asking in ten conversations, or on two nodes through two tabs, would still hold ten answers' worth of
the model and the pacing loop while another customer waits. Taken before the node's slot and held until the answer
ends, so a waiting answer never holds one of the node's slots (one customer's many questions cannot block others).

**With** ``REDIS_URL``, three sorted sets per customer (``<CHANNEL_PREFIX>:streams:<requester>:…``), changed by one
script so two nodes taking the last slot at once cannot both get it; times are Redis's clock (``TIME``), one for
every node:

* ``held`` — token → lease expiry (ms). This process renews its tokens every ``reaper_interval()`` from a thread of
  its own (as the lease keeper, leases.py: a loop busy with hundreds of answers must not let a live answer's slot
  lapse). A node that dies renews nothing: its slots lapse after ``CHAT_LEASE_SECONDS`` and waiting answers take them.
* ``line`` — token → arrival (ms): the waiting answers, oldest first. A slot that frees goes to the oldest.
* ``alive`` — token → expiry of a waiting answer's place, renewed each time it looks: an answer waiting on a node that
  died leaves the line after its lease, so it never blocks the ones behind it.

A waiting answer looks again at once when an answer of the same customer ends on this node, and every
``POLL_SECONDS`` otherwise (one that ended on another node). Stopped (cancelled) while waiting, it leaves the line.

**Without** ``REDIS_URL``: this event loop's memory (one node, nothing to expire).

A Redis outage starts the answer without a customer slot (fail open, one warning a minute): the node's own admission
still bounds it; the limit shares the site fairly, it must not stop answers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from django.conf import settings
from django.utils.translation import gettext

from chatsite import outages
from conversations.redis_clients import LoopClients

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # a waiting answer looks again at least this often (an answer of its customer ended elsewhere)
REDIS_TIMEOUT_SECONDS = 2.0  # a frozen Redis must not hold up an answer for long: it then starts uncounted
REDIS_CONNECTIONS = 20  # per node; calls past it wait for a free one (up to the timeout)
WARN_EVERY_SECONDS = 60.0


def waiting_text() -> str:
    """The ``status(queued)`` text of an answer waiting for its customer's other answers, in the active language."""
    return gettext("Your other answers are still being written; this one starts as soon as one of them is done.")


# KEYS: held, line, alive; ARGV: token, limit, lease (ms), arrival (ms; "" the first time). Returns {position,
# arrival}: position 0 = the slot is taken (held until ``leave``), else the answer's place among those waiting.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token, limit, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  if gone ~= token then
    redis.call('ZREM', KEYS[2], gone)
    redis.call('ZREM', KEYS[3], gone)
  end
end
local arrival = tonumber(ARGV[4]) or now
if not redis.call('ZSCORE', KEYS[2], token) then redis.call('ZADD', KEYS[2], arrival, token) end
local rank = redis.call('ZRANK', KEYS[2], token)
local free = limit - redis.call('ZCARD', KEYS[1])
local position = 0
if rank < free then
  redis.call('ZREM', KEYS[2], token)
  redis.call('ZREM', KEYS[3], token)
  redis.call('ZADD', KEYS[1], now + lease, token)
else
  redis.call('ZADD', KEYS[3], now + lease, token)
  position = rank - math.max(free, 0) + 1
end
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], 2 * lease) end
return {position, arrival}
"""

# KEYS: the held sets; ARGV: lease (ms), then one token per key. Extends only tokens still held (XX): a slot released
# meanwhile is not brought back.
_RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', expiry, ARGV[i + 1])
  redis.call('PEXPIRE', key, 2 * tonumber(ARGV[1]))
end
return 1
"""


class Taken(NamedTuple):
    """What a look at the line found: ``position`` 0 = the slot is ours; ``arrival`` keeps our place."""

    position: int
    arrival: int | None


class LocalStreams:
    """The customers' slots and lines in this event loop's memory (no ``REDIS_URL``: one node)."""

    def __init__(self) -> None:
        self.held: dict[str, set[str]] = collections.defaultdict(set)
        self.line: dict[str, dict[str, None]] = collections.defaultdict(dict)  # insertion order = arrival

    async def take(self, requester: str, token: str, arrival: int | None, limit: int) -> Taken:
        line = self.line[requester]
        line.setdefault(token, None)
        rank = list(line).index(token)
        free = limit - len(self.held[requester])
        if rank < free:
            del line[token]
            self.held[requester].add(token)
            return Taken(0, None)
        return Taken(rank - max(free, 0) + 1, None)

    async def leave(self, requester: str, token: str) -> None:
        self.held[requester].discard(token)
        self.line[requester].pop(token, None)
        for table in (self.held, self.line):
            if not table[requester]:
                del table[requester]


class RedisStreams:
    """The customers' slots and lines in Redis, shared by every node (one client per event loop)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._clients = LoopClients(
            url, _TAKE, max_connections=lambda: REDIS_CONNECTIONS, timeout_seconds=REDIS_TIMEOUT_SECONDS
        )

    def keys(self, requester: str) -> list[str]:
        base = f"{self.prefix}:streams:{requester}"
        return [f"{base}:held", f"{base}:line", f"{base}:alive"]

    async def take(self, requester: str, token: str, arrival: int | None, limit: int) -> Taken:
        (script,) = self._clients.get().scripts
        lease_ms = int(settings.CHAT_LEASE_SECONDS * 1000)
        position, arrival = await script(
            keys=self.keys(requester), args=[token, limit, lease_ms, "" if arrival is None else arrival]
        )
        if int(position) == 0:
            RENEWALS.add(token, self.url, self.keys(requester)[0])
        return Taken(int(position), int(arrival))

    async def leave(self, requester: str, token: str) -> None:
        RENEWALS.discard(token)  # first: a lease no longer renewed lapses even if the removal below fails
        pipe = self._clients.get().client.pipeline(transaction=False)
        for key in self.keys(requester):
            pipe.zrem(key, token)
        await pipe.execute()


class Renewals(threading.Thread):
    """Every ``reaper_interval()``: extend the leases of the customer slots this process holds (one script call per
    Redis). Started with the first slot taken; a daemon, idle while nothing is held."""

    def __init__(self) -> None:
        super().__init__(name="chat-customer-streams", daemon=True)
        self.lock = threading.Lock()
        self.held: dict[str, tuple[str, str]] = {}  # token → (Redis URL, held key)
        self._clients: dict[str, object] = {}
        self._failing = False

    def add(self, token: str, url: str, key: str) -> None:
        with self.lock:
            self.held[token] = (url, key)
            if self.ident is None:
                self.start()

    def discard(self, token: str) -> None:
        with self.lock:
            self.held.pop(token, None)

    def run(self) -> None:
        from conversations.streaming.leases import reaper_interval

        while True:
            time.sleep(reaper_interval())
            self.renew()

    def renew(self) -> None:
        with self.lock:
            by_url: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
            for token, (url, key) in self.held.items():
                by_url[url].append((key, token))
        lease_ms = int(settings.CHAT_LEASE_SECONDS * 1000)
        for url, items in by_url.items():
            try:
                self._client(url).eval(_RENEW, len(items), *(k for k, _ in items), lease_ms, *(t for _, t in items))
            except Exception as exc:  # noqa: BLE001 - unreachable now: the next beat tries again
                if not self._failing:
                    log.warning("customer stream leases: Redis unreachable (%s: %s)", type(exc).__name__, exc)
                self._failing = True
                continue
            if self._failing:
                log.warning("customer stream leases: Redis reachable again")
            self._failing = False

    def _client(self, url: str):
        import redis

        if url not in self._clients:
            self._clients[url] = redis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
            )
        return self._clients[url]


RENEWALS = Renewals()


class _Wakeups:
    """Answers waiting on this event loop, by customer: an answer of theirs that ends here wakes them at once."""

    def __init__(self) -> None:
        self.waiting: dict[str, set[asyncio.Future]] = collections.defaultdict(set)

    async def wait(self, requester: str, seconds: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        self.waiting[requester].add(woken)
        try:
            await asyncio.wait_for(woken, seconds)
        except TimeoutError:
            pass
        finally:
            self.waiting[requester].discard(woken)
            if not self.waiting[requester]:
                del self.waiting[requester]

    def wake(self, requester: str) -> None:
        for woken in self.waiting.get(requester, ()):
            if not woken.done():
                woken.set_result(None)


class _PerLoop(NamedTuple):
    local: LocalStreams
    wakeups: _Wakeups


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PerLoop] = weakref.WeakKeyDictionary()
_redis: dict[tuple[str, str], RedisStreams] = {}


def _this_loop() -> _PerLoop:
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        found = _per_loop[loop] = _PerLoop(LocalStreams(), _Wakeups())
    return found


def _backend() -> LocalStreams | RedisStreams:
    """Redis when ``REDIS_URL`` is set (every node), else this event loop's memory."""
    if not settings.REDIS_URL:
        return _this_loop().local
    key = (settings.REDIS_URL, settings.CHANNEL_PREFIX)
    if key not in _redis:
        _redis[key] = RedisStreams(*key)
    return _redis[key]


_warned_at = -WARN_EVERY_SECONDS


def _redis_failed(exc: BaseException) -> bool:
    """True (after at most one warning line a minute) when ``exc`` means Redis cannot be used now: the answer goes
    on uncounted. False for anything else (a bug: raised)."""
    global _warned_at
    import redis.exceptions

    if not isinstance(exc, (*outages.transient_errors(), redis.exceptions.RedisError, OSError)):
        return False
    if time.monotonic() - _warned_at >= WARN_EVERY_SECONDS:
        _warned_at = time.monotonic()
        log.warning("streams per customer: Redis unreachable (%s: %s); answers start uncounted meanwhile",
                    type(exc).__name__, exc)  # fmt: skip
    return True


class CustomerStream:
    """One answer's place among its customer's streams: ``await enter(told)``, then ``await leave()`` when it ends
    (idempotent). ``held`` is False for an answer that waits, was stopped, or started uncounted (Redis down)."""

    def __init__(self, requester: str, limit: int) -> None:
        self.requester = requester
        self.limit = limit
        self.token = uuid.uuid4().hex
        self.held = False
        self.backend: LocalStreams | RedisStreams | None = None

    async def enter(self, told: Callable[[int], Awaitable[None]]) -> None:
        """Take one of the customer's slots, waiting in their line if all are taken: ``told(position)`` once, when
        the answer starts waiting. Cancelled while waiting: it leaves the line."""
        self.backend = _backend()
        try:
            taken = await self.backend.take(self.requester, self.token, None, self.limit)
            if taken.position:
                await told(taken.position)
            while taken.position:
                await _this_loop().wakeups.wait(self.requester, POLL_SECONDS)
                taken = await self.backend.take(self.requester, self.token, taken.arrival, self.limit)
        except BaseException as exc:
            await asyncio.shield(self._forget())  # stopped while waiting (or as it got the slot): pass it on
            if isinstance(exc, Exception) and _redis_failed(exc):
                return  # fail open: the node's admission still bounds it
            raise
        self.held = True

    async def leave(self) -> None:
        """The answer ended: its slot goes to the customer's next waiting answer (on this node at once)."""
        if self.held:
            self.held = False
            await self._forget()

    async def _forget(self) -> None:
        try:
            await self.backend.leave(self.requester, self.token)
        except Exception as exc:
            if not _redis_failed(exc):
                raise
            # its lease is no longer renewed: it lapses by itself
        finally:
            _this_loop().wakeups.wake(self.requester)


class _Unbounded:
    """An answer the bound does not concern (no customer, or ``CHAT_MAX_STREAMS_PER_USER`` 0)."""

    held = False

    async def enter(self, told: Callable[[int], Awaitable[None]]) -> None:
        return None

    async def leave(self) -> None:
        return None


def stream_for(requester: object) -> CustomerStream | _Unbounded:
    """The place of one answer of ``requester`` (``Conversation.requester``) among the customer's streams."""
    limit = settings.CHAT_MAX_STREAMS_PER_USER
    if limit <= 0 or not isinstance(requester, str) or not requester:
        return _Unbounded()
    return CustomerStream(requester, limit)
