"""Revocations through PostgreSQL's ``LISTEN``/``NOTIFY``: a user's access ends on every node, whichever process
ended it.

Why: the channel layer reaches only the processes that share it. With the in-memory layer (no ``REDIS_URL``, the
default single node) a user deactivated by ``manage.py shell`` or a sync job kept their open socket and could still
ask and get answers; with Redis, a pub/sub message lost while a node reconnects left the same gap. Every setup has
PostgreSQL, and every process that changes a user writes to it: ``notify`` sends the revocation on the channel
``groups.USER_REVOKED_NOTIFY`` inside the transaction that made the change, and PostgreSQL delivers it when — and
only if — that transaction commits.

Each Daphne process runs one ``Listener`` (started by its first signed-in socket, ``ensure_running``, like the idle
reminders): a psycopg connection of its own, outside Django's, doing ``LISTEN``. It hands each revocation to the
sockets of that user on THIS node (``open_sockets.LOCAL``) through the channel layer, where
``ChatConsumer.user_revoked`` closes the ones it concerns. The channel-layer publish still happens as well; a socket
that gets the event twice closes once.

PostgreSQL down: the listener reconnects with backoff (one warning line when it loses the connection, one info line
when it listens again) and never stops. Revocations made meanwhile are not replayed: every action re-checks its user
(``access.ensure_may_act``), so such a socket can act no more and closes at its next frame.
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from functools import cache

from channels.layers import get_channel_layer
from django.db import DEFAULT_DB_ALIAS, connections

from conversations import groups, open_sockets, protocol

log = logging.getLogger(__name__)

FIRST_BACKOFF_SECONDS = 0.5  # doubled after each failed attempt, up to MAX_BACKOFF_SECONDS
MAX_BACKOFF_SECONDS = 10.0
#: Connection settings of the listener's own connection. Keepalives: a PostgreSQL host that vanishes without closing
#: the TCP connection is noticed within ~1 min instead of never (libpq ignores them on a unix socket, where a stopped
#: server closes the socket at once); the connect timeout bounds one attempt.
LISTENER_OPTIONS = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
                    "connect_timeout": 10, "application_name": "chatsite revocation listener"}  # fmt: skip


# --- sending ---------------------------------------------------------------------------------------------------
def notify(user_id: int, event: dict) -> None:
    """Send a revocation event of ``user_id`` on the NOTIFY channel, in the current transaction of the default
    database: delivered to every listener when it commits (at once outside a transaction), never if it rolls back."""
    payload = json.dumps({**event, "user": int(user_id)})
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [groups.USER_REVOKED_NOTIFY, payload])


def event_of(payload: str) -> tuple[int, dict] | None:
    """The user and the ``user.revoked`` event a notification carries, or None for anything else on the channel."""
    try:
        data = json.loads(payload)
        user_id = int(data.pop("user"))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if data.get("type") != groups.USER_REVOKED or data.get("reason") not in protocol.REVOKED_REASONS:
        return None
    return user_id, data


# --- listening -------------------------------------------------------------------------------------------------
@cache
def _libpq_keywords() -> frozenset[str]:
    import psycopg

    return frozenset(option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults())


def conninfo() -> dict:
    """How to reach the default database (Django's ``DATABASES``: host, or the embedded server's socket directory,
    port, name, user, password, SSL options…), as libpq keywords, plus ``LISTENER_OPTIONS``."""
    params = connections.create_connection(DEFAULT_DB_ALIAS).get_connection_params()
    keywords = _libpq_keywords()
    return {**{k: v for k, v in params.items() if k in keywords and v not in (None, "")}, **LISTENER_OPTIONS}


async def deliver(user_id: int, event: dict) -> int:
    """Hand a revocation to the user's sockets on this node; each decides whether it concerns it. Returns how many."""
    channels = open_sockets.LOCAL.of_user(user_id)
    layer = get_channel_layer()
    for channel in channels:
        await layer.send(channel, event)
    return len(channels)


class Listener:
    """This process's ``LISTEN`` connection, for the life of the process: reconnects with backoff, never raises."""

    def __init__(self) -> None:
        self.listening = asyncio.Event()  # set while LISTEN is in effect (tests wait for it)
        self.lost = False  # the connection was lost and not yet re-established (one warning per outage)

    async def run(self) -> None:
        import psycopg

        backoff = FIRST_BACKOFF_SECONDS
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(**conninfo(), autocommit=True) as connection:
                    await connection.execute(f'LISTEN "{groups.USER_REVOKED_NOTIFY}"')
                    self.listening.set()
                    backoff = FIRST_BACKOFF_SECONDS
                    if self.lost:
                        self.lost = False
                        log.info("revocation listener: listening to PostgreSQL again")
                    async for note in connection.notifies():
                        await self.handle(note.payload)
            except asyncio.CancelledError:
                self.listening.clear()
                raise
            except Exception as exc:  # noqa: BLE001 - PostgreSQL stopped, restarted or unreachable: try again
                self.listening.clear()
                if not self.lost:
                    self.lost = True
                    log.warning("revocation listener: lost PostgreSQL (%s: %s); reconnecting with backoff (every "
                                "action still re-checks access)", type(exc).__name__, str(exc).strip())  # fmt: skip
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    async def handle(self, payload: str) -> None:
        """One notification; a failure to deliver it is logged and the listener goes on."""
        found = event_of(payload)
        if found is None:
            log.warning("revocation listener: ignored a notification that is not a revocation: %.200s", payload)
            return
        try:
            await deliver(*found)
        except Exception as exc:  # noqa: BLE001 - e.g. Redis unreachable: the per-action check still holds
            log.warning("revocation listener: could not deliver the revocation of user %s (%s: %s)", found[0],
                        type(exc).__name__, exc)  # fmt: skip


_running: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[asyncio.Task, Listener]] = (
    weakref.WeakKeyDictionary()
)


def ensure_running() -> Listener:
    """Start this process's listener if it is not running (idempotent, cheap: called on every signed-in connect)."""
    loop = asyncio.get_running_loop()
    found = _running.get(loop)
    if found is None or found[0].done():
        listener = Listener()
        found = _running[loop] = (loop.create_task(listener.run(), name="revocation-listener"), listener)
    return found[1]


async def stop() -> None:
    """Stop the listener of the running event loop (tests; at process exit the task just ends)."""
    found = _running.pop(asyncio.get_running_loop(), None)
    if found is not None and not found[0].done():
        found[0].cancel()
        try:
            await found[0]
        except asyncio.CancelledError:
            pass
