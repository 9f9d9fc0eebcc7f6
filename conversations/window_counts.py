"""Counts per minute (or any window) shared by every node: tool calls per tool and per customer
(conversations/tool_askers.py), new widget visitors and their questions per address (conversations/visitors.py).

Several counts of one event are taken together: the event is refused, and nothing counted, when any of them is full.
They live in Redis when ``REDIS_URL`` is set, so a limit holds across nodes; in this process otherwise (one node),
and also while Redis is away: each node's own counts still bound what one client can do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from django.conf import settings
from redis.exceptions import RedisError

from conversations.redis_clients import LoopClients

log = logging.getLogger(__name__)

#: KEYS: the counts; ARGV: their limits, then the keys' time to live. 1 if all were below their limit (and all were
#: counted), else 0 (and none was).
_COUNT = """
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i]) then return 0 end
end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key); redis.call('EXPIRE', key, ARGV[#KEYS + 1])
end
return 1
"""


class _LocalCounters:
    """The same counts in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[float, int]] = {}

    def count(self, keys: Sequence[str], limits: Sequence[int], ttl: int) -> bool:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) > 100_000:  # drop the expired ones now and then
                self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
            current = [self._counts.get(key, (0.0, 0)) for key in keys]
            current = [count if until > now else 0 for until, count in current]
            if any(count >= limit for count, limit in zip(current, limits, strict=True)):
                return False
            for key, count in zip(keys, current, strict=True):
                until = self._counts.get(key, (0.0, 0))[0]
                self._counts[key] = (until if until > now else now + ttl, count + 1)
            return True


_local = _LocalCounters()
_clients: dict[str, LoopClients] = {}


def _redis() -> LoopClients:
    if settings.REDIS_URL not in _clients:
        _clients[settings.REDIS_URL] = LoopClients(settings.REDIS_URL, _COUNT, max_connections=lambda: 50,
                                                   timeout_seconds=2.0)  # fmt: skip
    return _clients[settings.REDIS_URL]


def window_key(name: str, window_seconds: int, *parts: object) -> str:
    """The key of one count in the current window: ``<prefix>:<name>:<parts…>:<window number>``."""
    window = int(time.time() // window_seconds)
    return ":".join([settings.CHANNEL_PREFIX, name, *map(str, parts), str(window)])


async def count_within(keys: Sequence[str], limits: Sequence[int], window_seconds: int) -> bool:
    """Count one event against every ``keys[i]`` (limit ``limits[i]``) if none is full; whether it was counted."""
    ttl = window_seconds * 2
    if settings.REDIS_URL:
        try:
            (script,) = _redis().get().scripts
            return bool(await script(keys=list(keys), args=[*limits, ttl]))
        except (OSError, RedisError) as exc:
            log.warning("counted on this node only: Redis failed (%s)", exc)
    return _local.count(keys, limits, ttl)
