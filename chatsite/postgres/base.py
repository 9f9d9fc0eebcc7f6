"""Django's PostgreSQL backend, with one change: the health check of a persistent connection.

Why: with ``CONN_HEALTH_CHECKS`` Django sends ``SELECT 1`` before the first query of every "request", and
Channels' ``database_sync_to_async`` makes every call one — about ten extra round trips (and transactions) per
answer, 10 % of a loaded node's CPU (docs/benchmarks.md "Database work per answer"). A connection that carried a
query less than ``DATABASE_HEALTH_CHECK_IDLE_SECONDS`` ago is taken as alive; one idle for longer (the case a
PostgreSQL restart overnight leaves behind) is checked before it is used, as Django does. A connection that died
while busy fails its next query instead: Django marks it (``errors_occurred``) and replaces it before the next
call, and the answer path retries such errors (``chatsite.outages``).
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    _used_at = 0.0  # time.monotonic() of the last cursor on this connection

    def connect(self) -> None:
        super().connect()
        self._used_at = time.monotonic()

    def close_if_health_check_failed(self) -> None:
        recently_used = time.monotonic() - self._used_at < settings.DATABASE_HEALTH_CHECK_IDLE_SECONDS
        if self.connection is not None and self.health_check_enabled and not self.health_check_done and recently_used:
            self.health_check_done = True  # no SELECT 1: it answered a moment ago
        super().close_if_health_check_failed()
        self._used_at = time.monotonic()
