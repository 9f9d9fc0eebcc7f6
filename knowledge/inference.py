"""Where an answer's CPU work runs: never on the event loop, never on the one database thread.

Two places, each bounded:

* **Query embeddings** go to one embedding thread per process (``QueryBatcher``) that coalesces the questions
  waiting at that moment into one forward pass (micro-batching: it waits ``EMBEDDING_BATCH_WAIT_MS`` for
  company, then takes up to ``EMBEDDING_MAX_BATCH``; while a pass runs, the next batch gathers). Under load a
  node embeds 16 questions in one pass instead of 16 (12.5 vs 16.5 ms per question for multilingual-e5-small
  on 2 cores). At most ``EMBEDDING_QUEUE_LIMIT`` questions wait; past that ``EmbeddingBusy`` is raised at once
  rather than queueing without end. Vectors are remembered (``QUERY_CACHE_SIZE``), so a repeated question, and
  the answerer's second look at the same question, cost nothing.
* **Composing an answer** (reading the stored sentence vectors and scoring them) runs in a small pool of answer
  threads (``ANSWER_THREADS``) with their own database connections, so the node's single database thread —
  the one every socket's ORM call queues behind — is never held by answer work.

The model's own threads are set by ``EMBEDDING_THREADS`` (default: all cores but one, so the web process keeps
a core for I/O). To move inference off the web nodes entirely, use ``EMBEDDING_BACKEND=openai`` against a
dedicated embedding server (text-embeddings-inference, vLLM, Ollama): docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction

from chatsite import db_threads
from knowledge.embeddings import EmbeddingError, get_embedder

T = TypeVar("T")

QUERY_CACHE_SIZE = 4096


class EmbeddingBusy(EmbeddingError):
    """Too many questions are waiting for the embedding model; the caller refuses this one now."""


class QueryBatcher:
    """One thread that embeds the queries waiting at each moment in one forward pass."""

    def __init__(self, max_batch: int, wait_seconds: float, limit: int) -> None:
        self.max_batch = max(1, max_batch)
        self.wait_seconds = max(0.0, wait_seconds)
        self.limit = max(1, limit)
        self._pending: list[tuple[str, concurrent.futures.Future]] = []
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="embedding", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._ready:
            if len(self._pending) >= self.limit:
                raise EmbeddingBusy(
                    f"{len(self._pending)} questions are waiting for the embedding model (EMBEDDING_QUEUE_LIMIT="
                    f"{self.limit}); try again in a moment."
                )
            self._pending.append((text, future))
            self._ready.notify()
        return future

    def waiting(self) -> int:
        return len(self._pending)

    def _take(self) -> list[tuple[str, concurrent.futures.Future]]:
        with self._ready:
            while not self._pending:
                self._ready.wait()
            deadline = time.monotonic() + self.wait_seconds
            while len(self._pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._ready.wait(left)
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            return batch

    def _run(self) -> None:
        from chatsite import metrics

        while True:
            # A waiter that gave up (its task was cancelled) cancelled its future: skip it. Once running, a future
            # can no longer be cancelled, so setting its result below cannot fail.
            batch = [(text, future) for text, future in self._take() if future.set_running_or_notify_cancel()]
            if not batch:
                continue
            texts = list(dict.fromkeys(text for text, _ in batch))  # the same question twice: embedded once
            try:
                vectors = dict(zip(texts, get_embedder().embed_queries(texts), strict=True))
            except Exception as exc:  # noqa: BLE001 - every waiter gets the model's error
                for _, future in batch:
                    future.set_exception(exc)
                continue
            metrics.EMBEDDING_BATCH.labels(metrics.QUERY).observe(len(texts))
            for text, future in batch:
                future.set_result(vectors[text])


class _QueryCache:
    """The last QUERY_CACHE_SIZE query vectors per model, shared by every thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], tuple[float, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[float, ...] | None:
        with self._lock:
            vector = self._items.get(key)
            if vector is not None:
                self._items.move_to_end(key)
            return vector

    def put(self, key: tuple[str, str], vector: tuple[float, ...]) -> None:
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_cache = _QueryCache(QUERY_CACHE_SIZE)
_batcher: QueryBatcher | None = None
_start_lock = threading.Lock()


def batcher() -> QueryBatcher:
    """This process's embedding thread, started on first use."""
    global _batcher
    if _batcher is None:
        with _start_lock:
            if _batcher is None:
                _batcher = QueryBatcher(
                    settings.EMBEDDING_MAX_BATCH, settings.EMBEDDING_BATCH_WAIT_MS / 1000, settings.EMBEDDING_QUEUE_LIMIT
                )
    return _batcher


def query_vector(text: str) -> list[float]:
    """The query's embedding (synchronous: for threads), through the cache and the embedding thread."""
    key = (get_embedder().name, text)
    vector = _cache.get(key)
    if vector is None:
        vector = tuple(batcher().submit(text).result())
        _cache.put(key, vector)
    return list(vector)


async def aquery_vector(text: str) -> list[float]:
    """The same without blocking the event loop: the loop awaits the embedding thread's result."""
    key = (get_embedder().name, text)
    vector = _cache.get(key)
    if vector is None:
        vector = tuple(await asyncio.wrap_future(batcher().submit(text)))
        _cache.put(key, vector)
    return list(vector)


def forget_queries() -> None:
    """Drop remembered query vectors (after a model change, and in tests)."""
    _cache.clear()


def _answer_threads() -> int:
    return settings.ANSWER_THREADS


#: The threads that compose answers (``answer_work``).
ANSWERS = db_threads.Pool("answer", _answer_threads)


async def answer_work(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``function`` (CPU work that may read the database) in an answer thread, not on the loop nor on the
    database thread every socket shares; its reads (and the sentence vectors it may cache) in one transaction
    rather than one per statement."""
    return await ANSWERS.run(_in_one_transaction, function, *args, **kwargs)


def _in_one_transaction(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    with transaction.atomic(savepoint=False):
        return function(*args, **kwargs)
