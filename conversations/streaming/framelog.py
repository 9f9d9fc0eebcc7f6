"""The frame log of each assistant message: what ``resume`` replays, and the compare-and-append that keeps two
writers from ever owning the same ``seq``.

A Redis list with a TTL when ``REDIS_URL`` is set (readable by every node); this process's memory otherwise
(one process only).
"""

from __future__ import annotations

import enum
import json
import time
from typing import NamedTuple

from django.conf import settings

from conversations import protocol
from conversations.redis_clients import LoopClient, LoopClients


class Append(enum.Enum):
    """What a compare-and-append found."""

    APPENDED = "appended"  # the frame now holds its seq (also when an earlier, timed-out attempt had put it there)
    TAKEN = "taken"  # another writer holds that seq (a reaper closed the message): the writer has lost it
    SHORT = "short"  # the log holds fewer frames than expected (Redis restarted empty): restore, then append


class Publication(NamedTuple):
    """A channel-layer message the append publishes itself (``stream.publication``): Redis channel, payload."""

    channel: str
    payload: bytes


class MemoryFrameLog:
    """Frames per message in this process's memory: correct for one process only (no REDIS_URL)."""

    publishes = False  # the writer publishes each frame itself

    def __init__(self) -> None:
        self._frames: dict[str, tuple[float, list[dict]]] = {}

    def append_sync(self, message_id: str, frame: dict, expected: int) -> Append:
        _, frames = self._frames.get(message_id, (0.0, []))
        if len(frames) != expected:
            if len(frames) < expected:
                return Append.SHORT
            return Append.APPENDED if frames[expected] == frame else Append.TAKEN
        frames.append(frame)
        self._frames[message_id] = (time.monotonic() + settings.CHAT_FRAME_LOG_TTL_SECONDS, frames)
        return Append.APPENDED

    async def append(self, message_id: str, frame: dict, expected: int, publication: None = None) -> Append:
        """Append ``frame`` only if the log holds exactly ``expected`` frames: its seq slot is still free."""
        return self.append_sync(message_id, frame, expected)

    async def restore(self, message_id: str, frames: list[dict]) -> None:
        """Put back the frames a writer sent, if the log lost them."""
        _, held = self._frames.get(message_id, (0.0, []))
        if len(held) < len(frames):
            self._frames[message_id] = (time.monotonic() + settings.CHAT_FRAME_LOG_TTL_SECONDS, list(frames))

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


# KEYS[1] the log; ARGV: frame, expected length, ttl[, channel, message]. 1: appended (or already there: a retried
# call whose first attempt reached Redis), 0: the seq is another writer's, -1: the log is shorter than expected
# (it was lost). With a channel, an appended frame's message is also published there: one round trip per frame
# (a retried call publishes again; clients drop a seq they already have).
_CAS_APPEND = """
local n = redis.call('LLEN', KEYS[1])
local expected = tonumber(ARGV[2])
if n == expected then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
elseif n < expected then
  return -1
elseif redis.call('LINDEX', KEYS[1], expected) ~= ARGV[1] then
  return 0
end
if ARGV[4] then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
"""
# KEYS[1] the log; ARGV: ttl, then every frame the writer sent. Refills a log that holds fewer of them.
_RESTORE = """
if redis.call('LLEN', KEYS[1]) < #ARGV - 1 then
  redis.call('DEL', KEYS[1])
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 2))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
return 1
"""
_RESULTS = {1: Append.APPENDED, 0: Append.TAKEN, -1: Append.SHORT}

#: Redis calls that take longer fail (and are retried by the writer): a frozen Redis must not hang a node.
SOCKET_TIMEOUT_SECONDS = 5.0


class RedisFrameLog:
    """Frames per message in a Redis list (index = seq - 1) with a TTL, so every node can replay them.

    The scripts are sent once and then called by their SHA (redis-py loads them again after a Redis restart).
    The append also publishes the frame when given its ``Publication`` (``publishes``).
    """

    publishes = True

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self._clients = LoopClients(
            url,
            _CAS_APPEND,
            _RESTORE,
            max_connections=lambda: settings.CHAT_FRAME_LOG_REDIS_CONNECTIONS,
            timeout_seconds=SOCKET_TIMEOUT_SECONDS,
        )

    def key(self, message_id: str) -> str:
        return f"{self.prefix}:frames:{message_id}"

    def _client(self) -> LoopClient:
        """This event loop's client, with the append and restore scripts."""
        return self._clients.get()

    async def append(
        self, message_id: str, frame: dict, expected: int, publication: Publication | None = None
    ) -> Append:
        """Append ``frame`` only if the log holds exactly ``expected`` frames: its seq slot is still free; and
        publish ``publication`` in the same call when it was appended."""
        cas, _ = self._client().scripts
        args = [protocol.encode(frame), expected, settings.CHAT_FRAME_LOG_TTL_SECONDS, *(publication or ())]
        return _RESULTS[int(await cas(keys=[self.key(message_id)], args=args))]

    async def restore(self, message_id: str, frames: list[dict]) -> None:
        """Put back the frames a writer sent, if the log lost them (Redis restarted without its data)."""
        _, restore = self._client().scripts
        ttl = settings.CHAT_FRAME_LOG_TTL_SECONDS
        await restore(keys=[self.key(message_id)], args=[ttl, *(protocol.encode(f) for f in frames)])

    async def read(self, message_id: str, after: int) -> list[dict]:
        raw = await self._client().client.lrange(self.key(message_id), after, -1)
        return [json.loads(item) for item in raw]

    def _sync_client(self):
        import redis

        return redis.Redis.from_url(
            self.url, socket_timeout=SOCKET_TIMEOUT_SECONDS, socket_connect_timeout=SOCKET_TIMEOUT_SECONDS
        )

    def append_sync(self, message_id: str, frame: dict, expected: int) -> Append:
        """For threads and process exit, where no event loop runs."""
        client = self._sync_client()
        try:
            ttl = settings.CHAT_FRAME_LOG_TTL_SECONDS
            result = client.eval(_CAS_APPEND, 1, self.key(message_id), protocol.encode(frame), expected, ttl)
            return _RESULTS[int(result)]
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
