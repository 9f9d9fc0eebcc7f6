"""Thread pools for database work that must not queue behind the one thread every socket's ORM calls share.

Why: ``database_sync_to_async`` runs every call of a process on a single thread (asgiref's thread-sensitive
mode); an answer composed there held up everyone's database calls for its ~60 ms. Work that needs its own lane
gets a small ``Pool``: its threads keep their own (persistent) connections, closed stale
around each call as ``database_sync_to_async`` does.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from channels.db import DatabaseSyncToAsync

T = TypeVar("T")


class Pool:
    """A named lane of ``size()`` threads for synchronous work that may read the database."""

    def __init__(self, name: str, size: Callable[[], int]) -> None:
        self.name = name
        self.size = size
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            with self._lock:
                if self._executor is None:
                    self._executor = concurrent.futures.ThreadPoolExecutor(
                        max_workers=max(1, self.size()), thread_name_prefix=self.name
                    )
        return self._executor

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` on one of this pool's threads, awaited without blocking the loop."""
        return await DatabaseSyncToAsync(function, thread_sensitive=False, executor=self.executor())(*args, **kwargs)

    def close_connections(self) -> None:
        """Close the database connection each thread keeps (before the database is dropped, in tests)."""
        if self._executor is None:
            return
        from django.db import connections

        workers = self._executor._max_workers
        barrier = threading.Barrier(workers, timeout=30)

        def close() -> None:
            barrier.wait()  # every thread of the pool takes exactly one of these
            connections.close_all()

        for future in [self._executor.submit(close) for _ in range(workers)]:
            future.result()

