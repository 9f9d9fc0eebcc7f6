"""Where an answer's CPU work runs: never on the event loop, never on the one database thread.

Two places, each bounded:

* **Query embeddings** go to an embedding thread (``QueryBatcher``) that coalesces the questions waiting at that
  moment into one forward pass (micro-batching: it waits ``EMBEDDING_BATCH_WAIT_MS`` for company, then takes up
  to ``EMBEDDING_MAX_BATCH``; while a pass runs, the next batch gathers). Under load a node embeds 16 questions in
  one pass instead of 16 (12.5 vs 16.5 ms per question for multilingual-e5-small on 2 cores). At most
  ``EMBEDDING_QUEUE_LIMIT`` questions wait; past that ``EmbeddingBusy`` is raised at once rather than queueing
  without end. Vectors are remembered (``QUERY_CACHE_SIZE``), so a repeated question, and the answerer's second
  look at the same question, cost nothing.
* **Composing an answer** (reading the stored sentence vectors and scoring them) runs in a small pool of answer
  threads (``ANSWER_THREADS``) with their own database connections, so the node's single database thread —
  the one every socket's ORM call queues behind — is never held by answer work.

**A fair share of the model.** A forward pass cannot be interrupted, and its cost grows with its inputs' length:
one customer's eight questions of 4 000 characters of one word cost seconds each, and another customer's
ordinary question, queued behind them first come first served, waited 12–33 s for its first token instead of
0.1–2 s (docs/benchmarks.md, "A fair share of the model"). So:

* every requester (the customer asking: ``Conversation.requester``; a call without one is a requester of its own)
  has its own line, and each pass takes at most one question of each line, in turn: a customer's questions delay
  another's by at most one of theirs per pass, however many they send;
* a question of more than ``EMBEDDING_LONG_QUERY_CHARS`` characters goes to a second thread, the long lane, with
  its own copy of the model (``_SecondModel``; its lock is not the ordinary lane's) at a low CPU priority
  (``_yield_the_cpu``): an ordinary question never waits behind a long pass, and the long pass takes the CPU the
  rest of the node leaves. Each lane serves its requesters in turn, with its own ``EMBEDDING_QUEUE_LIMIT``.

The node's answer slots are shared out the same way (conversations/streaming/admission.py: one customer holds at
most half of them), or the flood would hold every slot while it waits for the model.

The model's own threads are set by ``EMBEDDING_THREADS`` (default: all cores but one, so the web process keeps
a core for I/O). To move inference off the web nodes entirely, use ``EMBEDDING_BACKEND=openai`` against a
dedicated embedding server (text-embeddings-inference, vLLM, Ollama): docs/deployment.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction

from chatsite import db_threads
from knowledge.embeddings import Embedder, EmbeddingError, build_embedder, get_embedder

T = TypeVar("T")

QUERY_CACHE_SIZE = 4096
#: The long lane's nice value: it takes the CPU the rest of the process leaves (``_yield_the_cpu``).
BACKGROUND_NICE = 10


class EmbeddingBusy(EmbeddingError):
    """Too many questions are waiting for the embedding model; the caller refuses this one now."""


class QueryBatcher:
    """One thread that embeds the queries waiting at each moment in one forward pass, serving requesters in turn.

    Every requester (a customer: ``"user:<id>"``, ``"session:<key>"``; a call without one is a requester of its
    own) has its own line, and each pass takes at most ONE question from each line, in turn (round-robin): a
    customer who sends eight expensive questions gets one of them into each pass, so another customer's question
    waits for at most one of them, not for all eight. Batching still happens across customers.
    """

    def __init__(
        self,
        max_batch: int,
        wait_seconds: float,
        limit: int,
        *,
        model: Callable[[], Embedder] = get_embedder,
        name: str = "embedding",
        background: bool = False,
    ) -> None:
        self.max_batch = max(1, max_batch)
        self.wait_seconds = max(0.0, wait_seconds)
        self.limit = max(1, limit)
        self.model = model  # the embedder this lane computes with
        self.background = background  # at a low CPU priority (``_yield_the_cpu``)
        #: requester -> its questions in order; the dict's order is the round's (a served line goes to the back)
        self._lines: OrderedDict[Hashable, deque[tuple[str, concurrent.futures.Future]]] = OrderedDict()
        self._waiting = 0
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, text: str, requester: str | None = None) -> concurrent.futures.Future:
        """Queue ``text`` in ``requester``'s line; ``EmbeddingBusy`` at once when EMBEDDING_QUEUE_LIMIT wait."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        key = requester if requester is not None else object()  # no requester: a line of its own
        with self._ready:
            if self._waiting >= self.limit:
                raise EmbeddingBusy(
                    f"{self._waiting} questions are waiting for the embedding model (EMBEDDING_QUEUE_LIMIT="
                    f"{self.limit}); try again in a moment."
                )
            self._lines.setdefault(key, deque()).append((text, future))
            self._waiting += 1
            self._ready.notify()
        return future

    def waiting(self) -> int:
        return self._waiting

    def _take(self) -> list[tuple[str, concurrent.futures.Future]]:
        """The next pass: the first question of each line in turn, up to EMBEDDING_MAX_BATCH lines."""
        with self._ready:
            while True:
                while not self._lines:
                    self._ready.wait()
                deadline = time.monotonic() + self.wait_seconds
                while len(self._lines) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self._ready.wait(left)
                batch = [item for key in list(self._lines)[: self.max_batch] if (item := self._next_of(key))]
                if batch:
                    return batch

    def _next_of(self, key: Hashable) -> tuple[str, concurrent.futures.Future] | None:
        """The first question of ``key``'s line still wanted, now running; the line goes to the back of the round.

        A waiter that gave up (its task was cancelled) cancelled its future: it is dropped here, so it neither
        costs a pass nor takes its requester's turn. Once running, a future can no longer be cancelled, so setting
        its result later cannot fail."""
        line = self._lines.pop(key)
        found = None
        while line and found is None:
            text, future = line.popleft()
            self._waiting -= 1
            if future.set_running_or_notify_cancel():
                found = (text, future)
        if line:
            self._lines[key] = line
        return found

    def _run(self) -> None:
        from chatsite import metrics

        if self.background:
            _yield_the_cpu()
        while True:
            batch = self._take()
            texts = list(dict.fromkeys(text for text, _ in batch))  # the same question twice: embedded once
            try:
                vectors = dict(zip(texts, self.model().embed_queries(texts), strict=True))
            except Exception as exc:  # noqa: BLE001 - every waiter gets the model's error
                for _, future in batch:
                    future.set_exception(exc)
                continue
            metrics.EMBEDDING_BATCH.labels(metrics.QUERY).observe(len(texts))
            for text, future in batch:
                future.set_result(vectors[text])


class _QueryCache:
    """The last QUERY_CACHE_SIZE query vectors of one model, the process's current one, shared by every thread.

    Each lookup names the model it wants vectors of (``get_embedder()``); when that is not the model the cache holds
    vectors of (``embeddings.reset_embedder`` replaced it after a settings change), the old vectors are dropped
    first. By the model object, not its name: two models may share a name (an HTTP endpoint's model, a local
    file) but never their vectors. So the cache follows the model like ``_SecondModel`` does, and
    ``knowledge.embeddings`` never has to reach up here to clear it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._model: Embedder | None = None  # the model every vector in ``_items`` was made for
        self._lock = threading.Lock()

    def get(self, model: Embedder, text: str) -> tuple[float, ...] | None:
        with self._lock:
            self._follow(model)
            vector = self._items.get(text)
            if vector is not None:
                self._items.move_to_end(text)
            return vector

    def put(self, model: Embedder, text: str, vector: tuple[float, ...]) -> None:
        with self._lock:
            self._follow(model)
            self._items[text] = vector
            self._items.move_to_end(text)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def _follow(self, model: Embedder) -> None:
        """Hold vectors of ``model`` from now on: those of any other model are dropped (caller holds the lock)."""
        if model is not self._model:
            self._items.clear()
            self._model = model


def _yield_the_cpu() -> None:
    """Lower the calling thread's CPU priority (nice 10), and that of the model threads it starts: on Linux every
    thread has its own nice value, so the rest of the process (the event loop, the other lane) goes first when
    both want a core. Elsewhere a nice value is the whole process's: nothing is changed there."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)


class _SecondModel:
    """The long lane's own copy of the process's embedding model (``embeddings.build_embedder``), so a long pass
    never holds the lock of the copy ordinary questions use; built on first use and again when the process's
    model is replaced (``embeddings.reset_embedder``). Called from the long lane's thread only."""

    def __init__(self) -> None:
        self._copy: Embedder | None = None
        self._of: Embedder | None = None

    def __call__(self) -> Embedder:
        current = get_embedder()
        if self._copy is None or self._of is not current:
            self._copy, self._of = build_embedder(), current
        return self._copy


_cache = _QueryCache(QUERY_CACHE_SIZE)
_lanes: dict[bool, QueryBatcher] = {}  # long? -> its lane
_start_lock = threading.Lock()


def lane(text: str) -> QueryBatcher:
    """The embedding thread ``text`` waits for, started on first use: the long lane (its own copy of the model,
    at a low CPU priority) for a text of more than ``EMBEDDING_LONG_QUERY_CHARS`` characters, the ordinary one
    otherwise."""
    long = len(text) > settings.EMBEDDING_LONG_QUERY_CHARS
    found = _lanes.get(long)
    if found is None:
        with _start_lock:
            found = _lanes.get(long)
            if found is None:
                limits = settings.EMBEDDING_MAX_BATCH, settings.EMBEDDING_BATCH_WAIT_MS / 1000, settings.EMBEDDING_QUEUE_LIMIT
                if long:
                    found = QueryBatcher(*limits, model=_SecondModel(), name="embedding-long", background=True)
                else:
                    found = QueryBatcher(*limits)
                _lanes[long] = found
    return found


def query_vector(text: str, requester: str | None = None) -> list[float]:
    """The query's embedding (synchronous: for threads), through the cache and the embedding thread, in
    ``requester``'s turn (``QueryBatcher``; None: a line of its own, e.g. ``manage.py search``)."""
    model = get_embedder()
    vector = _cache.get(model, text)
    if vector is None:
        vector = tuple(lane(text).submit(text, requester).result())
        _cache.put(model, text, vector)
    return list(vector)


async def aquery_vector(text: str, requester: str | None = None) -> list[float]:
    """The same without blocking the event loop: the loop awaits the embedding thread's result."""
    model = get_embedder()
    vector = _cache.get(model, text)
    if vector is None:
        vector = tuple(await asyncio.wrap_future(lane(text).submit(text, requester)))
        _cache.put(model, text, vector)
    return list(vector)


def remembered_query_vector(text: str) -> list[float] | None:
    """The query's embedding if this process computed it lately, else None — never any model work (for callers
    inside a transaction, e.g. an answer's knowledge gap saved with its finished row)."""
    vector = _cache.get(get_embedder(), text)
    return list(vector) if vector is not None else None


def forget_queries() -> None:
    """Drop remembered query vectors (tests that count embedding passes; a model change needs no call)."""
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
