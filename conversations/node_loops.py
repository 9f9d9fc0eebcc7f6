"""A node's periodic jobs: one asyncio task per job and event loop, started by the first socket of the process.

Why on the Daphne nodes and not in the procrastinate worker: what the jobs find may have to reach a customer's
socket, and without ``REDIS_URL`` (one node, in-memory channel layer) only the web process can do that. Each job
claims its rows with conditional UPDATEs, so with several nodes each row is handled once. Used by the idle
reminder (conversations/reminders.py) and the outcome sweep (conversations/outcomes.py).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class NodeLoop:
    """Run ``step`` every ``interval()`` seconds for the life of the process; a failing step is logged and tried
    again next time (a database hiccup must not stop the job until the process restarts)."""

    def __init__(self, name: str, step: Callable[[], Awaitable[object]], interval: Callable[[], float]) -> None:
        self.name = name
        self.step = step
        self.interval = interval
        self._tasks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; retrying", self.name)
            await asyncio.sleep(max(0.05, self.interval()))

    def ensure_running(self) -> None:
        """Start the job on the running event loop if it is not running (idempotent, cheap: call it on every
        connect)."""
        loop = asyncio.get_running_loop()
        task = self._tasks.get(loop)
        if task is None or task.done():
            self._tasks[loop] = loop.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop the job on the running event loop (tests; at process shutdown the task just ends)."""
        task = self._tasks.pop(asyncio.get_running_loop(), None)
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
