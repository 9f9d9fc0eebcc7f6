"""PostgreSQL and Redis blips: which failures pass, and how long work in flight waits them out.

Why one place: an answer that is streaming when Redis restarts or PostgreSQL stops for 15 s must finish, not
fail; a question sent meanwhile must be refused with its id and a ``retry_after`` the client honours (never
``internal``). Everything that waits out an outage uses ``retry`` with the same deadline,
``CHAT_OUTAGE_SECONDS``, and logs the outage once when it starts and once when it ends, not per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from django.conf import settings

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.1  # seconds before the first retry; doubled each time up to MAX_DELAY
MAX_DELAY = 1.0


def transient_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "PostgreSQL or Redis is unreachable right now" (not a bug of ours)."""
    import redis.exceptions
    from django.db import InterfaceError, OperationalError

    return (
        OperationalError,  # Django's wrapper of psycopg's: connection refused, server closed the connection…
        InterfaceError,  # a connection psycopg already knows is closed
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        ConnectionError,  # refused / reset sockets raised outside the client libraries' wrappers
        TimeoutError,  # asyncio.TimeoutError too (an alias since 3.11)
    )


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, transient_errors())


class OutageTooLong(RuntimeError):
    """A service stayed unreachable for longer than ``CHAT_OUTAGE_SECONDS``; the work gives up."""


async def retry(call: Callable[[], Awaitable[T]], what: str, *, seconds: float | None = None) -> T:
    """``await call()``, retried with backoff while it fails with a transient error, for at most ``seconds``
    (default ``CHAT_OUTAGE_SECONDS``). Other errors propagate at once."""
    deadline = time.monotonic() + (settings.CHAT_OUTAGE_SECONDS if seconds is None else seconds)
    delay, failing_since = FIRST_DELAY, None
    while True:
        try:
            result = await call()
        except transient_errors() as exc:
            now = time.monotonic()
            if failing_since is None:
                failing_since = now
                log.warning("%s failed (%s: %s); retrying for up to %.0f s", what, type(exc).__name__, exc,
                            deadline - now)
            if now + delay > deadline:
                raise OutageTooLong(f"{what}: unreachable for {now - failing_since:.1f} s ({exc})") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
            continue
        if failing_since is not None:
            log.warning("%s succeeded again after %.1f s", what, time.monotonic() - failing_since)
        return result


class OneLineForOutages(logging.Filter):
    """Log records whose exception is an outage become one line (``message (ConnectionError: …)``).

    Why: channels-redis logs a full traceback every second while Redis is down; an operator needs to see that
    Redis is unreachable, not 40 lines per second of it. The same for channels-redis's "Unexpected exception while
    cleaning-up channel" when the unsubscribe of a socket that closed mid-handshake is itself cancelled (hundreds
    of tracebacks when 2 000 customers connect at once). Bugs keep their tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        cancelled_cleanup = isinstance(exc, asyncio.CancelledError) and record.name.startswith("channels_redis")
        if exc is not None and (is_transient(exc) or cancelled_cleanup):
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True
