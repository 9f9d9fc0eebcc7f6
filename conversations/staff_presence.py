"""Which staff members have the support console open right now, on any node: what "is anyone there?" asks
(conversations/leave_message.py) before a customer who wants a person is told to wait or asked for an address.

Why not the record of conversations/open_sockets.py: it keeps a socket for as long as a socket could live (2 h) and
a node that dies leaves its sockets in it — harmless for a bound, which evicts them first, but it would tell a
customer at 3 a.m. that someone is there. Presence is a heartbeat instead:

* With ``REDIS_URL``: one sorted set ``<CHANNEL_PREFIX>:staff-online`` for the site, a member ``<user id>@<node>``
  per staff member with a console open on a node, scored with when that node last said so (ms). A node adds the
  member when a console socket opens, removes it when the member's last console socket on the node closes, and
  refreshes its members every third of ``CONSOLE_PRESENCE_SECONDS`` (30 s); a member older than that is not
  counted, so a dead node's staff stop counting within it. Asking costs one ``ZRANGEBYSCORE``.
* Without: this process's own count (one node).

A Redis error while asking gives ``None`` (not known), logged at most once a minute; while refreshing it is retried
at the next beat. Whether the users are still active staff is the caller's question (one query, when a customer
asks for a person): a console socket outliving its rights is closed by revocation anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref

from django.conf import settings

from chatsite import outages
from conversations.redis_clients import LoopClients

log = logging.getLogger(__name__)

#: This process, in the members it writes (a node restarted under the same name must not inherit a dead one's).
NODE = uuid.uuid4().hex[:12]
REDIS_TIMEOUT_SECONDS = 2.0
WARN_EVERY_SECONDS = 60.0

#: Console sockets open on this node, per staff member.
_local: dict[int, int] = {}
_clients: dict[str, LoopClients] = {}
_beats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()
_warned_at = -WARN_EVERY_SECONDS


def _key() -> str:
    return f"{settings.CHANNEL_PREFIX}:staff-online"


def _member(user_id: int) -> str:
    return f"{int(user_id)}@{NODE}"


def _redis():
    """The running loop's Redis client, or None without ``REDIS_URL``."""
    if not settings.REDIS_URL:
        return None
    clients = _clients.get(settings.REDIS_URL)
    if clients is None:
        clients = _clients[settings.REDIS_URL] = LoopClients(
            settings.REDIS_URL, max_connections=lambda: 4, timeout_seconds=REDIS_TIMEOUT_SECONDS
        )
    return clients.get().client


def _unreachable() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (*outages.transient_errors(), redis.exceptions.RedisError, OSError)


def _warn(what: str, exc: BaseException) -> None:
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= WARN_EVERY_SECONDS:
        _warned_at = now
        log.warning("staff presence: %s (%s: %s)", what, type(exc).__name__, exc)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def arrived(user_id: int) -> None:
    """A console socket of ``user_id`` opened on this node: they count as online everywhere at once."""
    _local[user_id] = _local.get(user_id, 0) + 1
    client = _redis()
    if client is None:
        return
    _ensure_beating()
    try:
        await client.zadd(_key(), {_member(user_id): _now_ms()})
    except _unreachable() as exc:
        _warn("could not record a console that opened; the next beat retries", exc)


async def left(user_id: int) -> None:
    """A console socket of ``user_id`` closed on this node: with their last one here, this node's member goes."""
    count = _local.get(user_id, 0) - 1
    if count > 0:
        _local[user_id] = count
        return
    _local.pop(user_id, None)
    client = _redis()
    if client is None:
        return
    try:
        await client.zrem(_key(), _member(user_id))
    except _unreachable() as exc:
        _warn("could not record a console that closed; it lapses", exc)


async def online_user_ids() -> set[int] | None:
    """The users with a console open on some node now (``None``: Redis could not be asked)."""
    client = _redis()
    if client is None:
        return set(_local)
    since = _now_ms() - int(settings.CONSOLE_PRESENCE_SECONDS * 1000)
    try:
        members = await client.zrangebyscore(_key(), since, "+inf")
    except _unreachable() as exc:
        _warn("could not tell who is online", exc)
        return None
    return {int((m.decode() if isinstance(m, bytes) else m).split("@", 1)[0]) for m in members}


async def beat() -> None:
    """Refresh this node's members and drop lapsed ones (every node's, so a dead node's go too)."""
    client = _redis()
    if client is None:
        return
    now = _now_ms()
    pipe = client.pipeline(transaction=False)
    if _local:
        pipe.zadd(_key(), {_member(user_id): now for user_id in _local})
    pipe.zremrangebyscore(_key(), "-inf", now - int(settings.CONSOLE_PRESENCE_SECONDS * 1000))
    pipe.pexpire(_key(), 2 * int(settings.CONSOLE_PRESENCE_SECONDS * 1000))
    await pipe.execute()


async def _run() -> None:
    while True:
        await asyncio.sleep(max(0.05, settings.CONSOLE_PRESENCE_SECONDS / 3))
        try:
            await beat()
        except asyncio.CancelledError:
            raise
        except _unreachable() as exc:
            _warn("could not refresh this node's consoles; retrying", exc)
        except Exception:  # our bug: logged, and the heartbeat goes on (a stopped one would empty the room)
            log.exception("staff presence: the heartbeat failed; retrying")


def _ensure_beating() -> None:
    """Start this process's heartbeat on the running loop (idempotent; a stopped one is started again)."""
    loop = asyncio.get_running_loop()
    task = _beats.get(loop)
    if task is None or task.done():
        _beats[loop] = loop.create_task(_run(), name="staff-presence")
