"""A redis.asyncio client for the running event loop: what the frame log (conversations/streaming/framelog.py) and
the sockets-per-user record (conversations/open_sockets.py) talk to Redis with.

Why one client per event loop: a redis.asyncio connection belongs to the loop that opened it (its reader and writer
are that loop's streams, a pool's waiters are that loop's futures), so a client shared across loops fails on the
second one. Daphne serves on one loop, but the tests, management commands and ``async_to_sync`` run others. Each
loop gets its own client on first use, kept in a ``WeakKeyDictionary`` so that it goes with its loop.

Why a blocking pool: a call past ``max_connections`` waits for a free connection (up to the timeout) instead of
failing: redis-py's default pool raises MaxConnectionsError past 100, which 2 000 customers connecting at once
reached.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript


class LoopClient(NamedTuple):
    """One event loop's client, and the Lua scripts registered on it (called by their SHA once sent)."""

    client: aioredis.Redis
    scripts: tuple[AsyncScript, ...]


class LoopClients:
    """The clients of one user of Redis, one per event loop: ``url``, a pool of at most ``max_connections()``
    (read when a loop's client is made) and ``timeout_seconds`` for connecting, each call, and waiting for a free
    connection; ``scripts`` are registered on every client, in their order."""

    def __init__(self, url: str, *scripts: str, max_connections: Callable[[], int], timeout_seconds: float) -> None:
        self.url = url
        self.scripts = scripts
        self.max_connections = max_connections
        self.timeout_seconds = timeout_seconds
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopClient] = weakref.WeakKeyDictionary()

    def get(self) -> LoopClient:
        """The running loop's client, made on its first use."""
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(loop)
        if found is None:
            found = self._by_loop[loop] = self._connect()
        return found

    def _connect(self) -> LoopClient:
        import redis.asyncio as aioredis

        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections(),
            timeout=self.timeout_seconds,
            socket_timeout=self.timeout_seconds,
            socket_connect_timeout=self.timeout_seconds,
        )
        client = aioredis.Redis.from_pool(pool)
        return LoopClient(client, tuple(client.register_script(script) for script in self.scripts))
