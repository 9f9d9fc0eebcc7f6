"""The answer pipeline: question -> (follow-up rewrite) -> retrieval -> generation, as typed events.

One async generator, ``answer()``, with no WebSocket knowledge: conversations/streaming.py turns each event
into a frame. ``history`` is the conversation BEFORE this question, oldest first, as
``[{"role": "user" | "assistant" | "agent", "text": str}]``.

Failure contract: when the generator backend fails (LLM endpoint down, HTTP error, timeout) ``answer()`` has
already yielded every token produced so far and then raises ``AnswerBackendError`` with a message fit to
show; there is no ``final``. The caller sends ``error {code: backend_error}`` and stores the message as
``failed`` with the partial text. An exception cannot be mistaken for a well-formed answer; a final could.

Cancellation: the caller cancels the task consuming ``answer()``. Nothing here catches
``asyncio.CancelledError``; the generator's stream is closed in a ``finally`` (for the LLM that closes the
HTTP response), so no request keeps running after a Stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from django.conf import settings

from knowledge.answering.events import (
    AnswerBackendError,
    Event,
    FinalEvent,
    SourcesEvent,
    StatusEvent,
    TokenEvent,
)
from knowledge.answering.followups import choose_query, refers_back
from knowledge.answering.generators import Generator, get_generator
from knowledge.answering.grounding import Guard
from knowledge.answering.rendering import cited_sources, render_answer_html
from knowledge.models import KnowledgeBase

logger = logging.getLogger(__name__)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def retrieved_text(passages: Sequence[Any]) -> str:
    """'Found 3 passages in 2 documents' — the status line after retrieval."""
    if not passages:
        return "No matching passages found"
    documents = {p.document_id for p in passages}
    return f"Found {_plural(len(passages), 'passage')} in {_plural(len(documents), 'document')}"


def source_items(passages: Sequence[Any]) -> list[dict[str, Any]]:
    """The numbered sources as sent to the client (n is what [n] in the answer refers to)."""
    return [
        {
            "n": n,
            "document": p.document_id,
            "title": p.title,
            "heading": p.heading,
            "page": p.page,
            "snippet": p.snippet,
            "score": p.score,
            "url": p.url,
        }
        for n, p in enumerate(passages, start=1)
    ]


def _prior_turns(question: str, history: list[dict] | None) -> list[dict]:
    """History without the current question, in case the caller already appended it."""
    turns = [t for t in (history or []) if (t.get("text") or "").strip()]
    if turns and turns[-1].get("role") == "user" and turns[-1].get("text", "").strip() == question.strip():
        turns = turns[:-1]
    return turns


async def _search(query: str, kb: KnowledgeBase | None) -> Any:
    from knowledge.retrieval import asearch

    try:
        return await asearch(query, kb=kb, k=settings.RETRIEVAL_TOP_K)
    except Exception as exc:  # embedding backend or database down: one clear error for the caller
        logger.exception("Retrieval failed for %r", query)
        raise AnswerBackendError("Searching the knowledge base failed; please try again in a moment.") from exc


async def answer(
    question: str,
    *,
    kb: KnowledgeBase | None,
    history: list[dict] | None = None,
    generator: Generator | None = None,
) -> AsyncIterator[Event]:
    """Answer ``question`` from ``kb`` as a stream of events (``kb=None`` searches every knowledge base).

    Raises ``AnswerBackendError`` after the tokens produced so far if the generator fails.
    """
    started = time.perf_counter()
    generator = generator or get_generator()
    turns = _prior_turns(question, history)

    # The status goes out before the (possibly slow, LLM) rewrite so the user sees progress at once.
    yield StatusEvent("retrieving", "Searching the knowledge base…")
    result = await _search(question, kb)
    query = question
    rewrite_ms = 0.0
    if turns and refers_back(question):
        # Only a question that points back is rewritten, and the rewrite is kept only if it searches better.
        rewrite_started = time.perf_counter()
        candidate = (await generator.rewrite(question, turns)).strip() or question
        rewrite_ms = _ms(time.perf_counter() - rewrite_started)
        if candidate != question:
            rewritten = await _search(candidate, kb)
            if choose_query(result.passages, rewritten.passages):
                query, result = candidate, rewritten
    passages = list(result.passages)
    yield StatusEvent("retrieved", retrieved_text(passages))
    yield SourcesEvent(source_items(passages))
    yield StatusEvent("generating", "Writing the answer…")

    pieces: list[str] = []
    first_token_ms: float | None = None
    generate_started = time.perf_counter()
    # A generator that cannot read the conversation itself (extractive) answers the query that was searched.
    asked = query if getattr(generator, "answers_searched_query", False) else question
    guard = Guard(generator, passages)  # LLM answers: citations of unlisted sources never reach a token
    stream = guard.wrap(generator.stream(asked, passages, turns))
    try:
        async for piece in stream:
            if not piece:
                continue
            if first_token_ms is None:
                first_token_ms = _ms(time.perf_counter() - started)
            pieces.append(piece)
            yield TokenEvent(piece)
    except AnswerBackendError:
        raise
    except Exception as exc:  # a bug or unexpected failure in a generator must still end the message clearly
        logger.exception("Answer generator %s failed", generator.name)
        raise AnswerBackendError("The answer generator failed unexpectedly; please ask again.") from exc
    finally:
        # Also on cancel / aclose(): close the generator now (for the LLM: the HTTP stream), not at GC time.
        if hasattr(stream, "aclose"):
            await stream.aclose()
    generate_ms = _ms(time.perf_counter() - generate_started)

    grounded = await guard.check("".join(pieces), query)  # uncited: marked, or replaced by the extractive answer
    text = grounded.text
    timings = {
        "rewrite_ms": rewrite_ms,
        "retrieve_ms": round(result.timings.get("total_ms", 0.0), 1),
        "embed_ms": round(result.timings.get("embed_ms", 0.0), 1),
        "db_ms": round(result.timings.get("db_ms", 0.0), 1),
        "generate_ms": generate_ms,
        "first_token_ms": first_token_ms if first_token_ms is not None else 0.0,
        "total_ms": _ms(time.perf_counter() - started),
    }
    trace = {
        "query": question,
        "rewritten_query": query if query != question else None,
        "mode": result.mode,
        "passages": [
            {
                "n": n,
                "chunk_id": p.chunk_id,
                "document": p.document_id,
                "title": p.title,
                "source": p.source,
                "heading": p.heading,
                "vector_score": p.vector_score,
                "keyword_score": p.keyword_score,
                "score": p.score,
            }
            for n, p in enumerate(passages, start=1)
        ],
        "timings": timings,
        "generator": generator.name,
    }
    if grounded.report is not None:
        trace["grounding"] = grounded.report
    yield FinalEvent(
        text=text,
        html=render_answer_html(text, len(passages)),
        citations=cited_sources(text, len(passages)),
        state="complete",
        timings=timings,
        trace=trace,
        replaced=grounded.replaced,
    )
