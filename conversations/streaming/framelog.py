"""The frame log of each assistant message: what ``resume`` replays, and the compare-and-append that keeps two
writers from ever owning the same ``seq``.

A Redis list with a TTL when ``REDIS_URL`` is set (readable by every node); this process's memory otherwise
(one process only).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref

from django.conf import settings

from conversations import protocol


class MemoryFrameLog:
    """Frames per message in this process's memory: correct for one process only (no REDIS_URL)."""

    def __init__(self) -> None:
        self._frames: dict[str, tuple[float, list[dict]]] = {}

    def append_sync(self, message_id: str, frame: dict, expected: int | None = None) -> bool:
        _, frames = self._frames.get(message_id, (0.0, []))
        if expected is not None and len(frames) != expected:
            return False
        frames.append(frame)
        self._frames[message_id] = (time.monotonic() + settings.CHAT_FRAME_LOG_TTL_SECONDS, frames)
        return True

    async def append(self, message_id: str, frame: dict, expected: int | None = None) -> bool:
        """Append ``frame``; with ``expected``, only if the log holds exactly that many frames (else False)."""
        return self.append_sync(message_id, frame, expected)

    def read_sync(self, message_id: str, after: int) -> list[dict]:
        self._expire()
        _, frames = self._frames.get(message_id, (0.0, []))
        return list(frames[after:])

    async def read(self, message_id: str, after: int) -> list[dict]:
        return self.read_sync(message_id, after)

    def clear(self) -> None:
        self._frames.clear()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (deadline, _) in self._frames.items() if deadline < now]:
            del self._frames[key]


# Append only if the list has exactly ARGV[2] items: the seq slot is still free. Returns 1 if appended.
_CAS_APPEND = """
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""


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

    async def append(self, message_id: str, frame: dict, expected: int | None = None) -> bool:
        """Append ``frame``; with ``expected``, only if the log holds exactly that many frames (else False)."""
        key, ttl = self.key(message_id), settings.CHAT_FRAME_LOG_TTL_SECONDS
        if expected is not None:
            return bool(await self._client().eval(_CAS_APPEND, 1, key, protocol.encode(frame), expected, ttl))
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.rpush(key, protocol.encode(frame))
            pipe.expire(key, ttl)
            await pipe.execute()
        return True

    async def read(self, message_id: str, after: int) -> list[dict]:
        raw = await self._client().lrange(self.key(message_id), after, -1)
        return [json.loads(item) for item in raw]

    def _sync_client(self):
        import redis

        return redis.Redis.from_url(self.url)

    def append_sync(self, message_id: str, frame: dict, expected: int | None = None) -> bool:
        """For threads and process exit, where no event loop runs."""
        client = self._sync_client()
        try:
            key, ttl = self.key(message_id), settings.CHAT_FRAME_LOG_TTL_SECONDS
            if expected is not None:
                return bool(client.eval(_CAS_APPEND, 1, key, protocol.encode(frame), expected, ttl))
            client.rpush(key, protocol.encode(frame))
            client.expire(key, ttl)
            return True
        finally:
            client.close()

    def read_sync(self, message_id: str, after: int) -> list[dict]:
        client = self._sync_client()
        try:
            return [json.loads(item) for item in client.lrange(self.key(message_id), after, -1)]
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

