"""The answer pipeline: question -> (follow-up rewrite) -> retrieval -> generation, as typed events.

One async generator, ``answer()``, with no WebSocket knowledge: conversations/streaming/generation.py turns each event
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
from django.utils import translation
from django.utils.translation import gettext, gettext_noop, ngettext

from knowledge import inference
from knowledge.answering import curated, tool_answers, wordless
from knowledge.answering.events import (
    AnswerBackendError,
    Event,
    FinalEvent,
    SourcesEvent,
    StatusEvent,
    TokenEvent,
)
from knowledge.answering.followups import (
    best_similarity,
    choose_query,
    previous_question,
    refers_back,
    rewrite_margin,
)
from knowledge.answering.generators import Composition, Generator, ToolRequest, get_generator
from knowledge.answering.generators.extractive import lead_in, min_similarity, pace_words
from knowledge.answering.grounding import Guard
from knowledge.answering.rendering import cited_sources, render_answer_html
from knowledge.answering.subquestions import split as split_question
from knowledge.language import detect as detect_language
from knowledge.language import in_language
from knowledge.models import KnowledgeBase, Tool
from knowledge.retrieval import SearchResult, asearch
from knowledge.tools import running
from knowledge.tools.running import Asker, ToolRun

logger = logging.getLogger(__name__)

#: Status lines (marked for translation here, translated per question in its language).
SEARCHING = gettext_noop("Searching the knowledge base…")
WRITING = gettext_noop("Writing the answer…")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def retrieved_text(passages: Sequence[Any]) -> str:
    """'Found 3 passages in 2 documents' — the status line after retrieval (in the active language)."""
    if not passages:
        return gettext("No matching passages found")
    documents = len({p.document_id for p in passages})
    found = ngettext("Found %(count)d passage", "Found %(count)d passages", len(passages)) % {"count": len(passages)}
    where = ngettext("in %(count)d document", "in %(count)d documents", documents) % {"count": documents}
    return f"{found} {where}"


async def _compose(
    generator: Generator, query: str, passages: list[Any], language: str, *, focus: str | None, context: str | None,
    requester: str | None,
) -> Composition:
    """The generator's extractive composition of ``query`` (``Generator.composition``); for a rewritten
    follow-up, ``focus`` is what the customer wrote and ``context`` the previous question."""

    def run() -> Composition:
        with translation.override(language):
            # An LLM gets the retrieved passages; its verdict needs no other chunks of their documents.
            return generator.composition(query, passages, focus=focus, context=context,
                                         whole_documents=generator.composes, requester=requester)

    try:
        return await inference.answer_work(run)  # an answer thread: not the loop, not the database thread
    except Exception as exc:  # the database or the embedding model is down
        logger.exception("Composing the answer failed for %r", query)
        raise AnswerBackendError("Reading the knowledge base failed; please try again in a moment.") from exc


async def _compose_parts(
    generator: Generator, parts: list[str], passages: list[Any], language: str, kb: KnowledgeBase | None,
    reader: Any, requester: str | None, searches: list[dict[str, Any]],
) -> Composition | None:
    """One answer to a message asking several things: each part searched (its passages added to the message's),
    then answered in turn over all of them, each part's composition numbering its sources after the ones before
    (so the parts' citations agree); the answers of the parts that the knowledge base answers, one after the other.
    None when no part is answered (the whole message's composition stands)."""
    pool = curated.without(passages)  # a curated answer answers a whole question, never a part's numbering
    seen = {p.chunk_id for p in pool}
    for part in parts:
        found = await _search(part, kb, reader, requester)
        searches.append({**_search_record(part, found), "used": True, "why": "a part of the message"})
        pool += [p for p in curated.without(found.passages) if p.chunk_id not in seen and not seen.add(p.chunk_id)]
    sources, bodies, reports = pool, [], []
    for part in parts:
        answered = await _compose(generator, part, sources, language, focus=None, context=None, requester=requester)
        reports.append({"part": part, **answered.report})
        if not answered.declined:
            sources = answered.passages
            body = answered.text.split("\n\n", 1)[-1]
            bodies.append("\n\n".join(p for p in body.split("\n\n") if all(p not in b for b in bodies)))
    bodies = [body for body in bodies if body]
    if not bodies:
        return None
    lead = in_language(language, lead_in)
    return Composition(f"{lead}\n\n" + "\n\n".join(bodies), False, {"parts": reports}, sources)


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
            # an answer the support team wrote (knowledge/answering/curated.py); a document's carries no kind
            **({"kind": "curated"} if getattr(p, "kind", None) == "curated" else {}),
        }
        for n, p in enumerate(passages, start=1)
    ]


def _prior_turns(question: str, history: list[dict] | None) -> list[dict]:
    """History without the current question, in case the caller already appended it."""
    turns = [t for t in (history or []) if (t.get("text") or "").strip()]
    if turns and turns[-1].get("role") == "user" and turns[-1].get("text", "").strip() == question.strip():
        turns = turns[:-1]
    return turns


def _search_record(query: str, result: SearchResult) -> dict[str, Any]:
    """One search as the trace shows it: what was searched, how close its best passage came, where it led."""
    return {"query": query, "best_similarity": round(best_similarity(result.passages), 3),
            "found": [p.document_id for p in result.passages[:3]], "used": False}


async def _search(query: str, kb: KnowledgeBase | None, reader: Any, requester: str | None) -> SearchResult:
    try:
        return await asearch(query, kb=kb, k=settings.RETRIEVAL_TOP_K, reader=reader, requester=requester)
    except Exception as exc:  # embedding backend or database down: one clear error for the caller
        logger.exception("Retrieval failed for %r", query)
        raise AnswerBackendError("Searching the knowledge base failed; please try again in a moment.") from exc


async def answer(
    question: str,
    *,
    kb: KnowledgeBase | None,
    history: list[dict] | None = None,
    generator: Generator | None = None,
    language: str | None = None,
    reader: Any = None,
    requester: str | None = None,
    asker: Asker | None = None,
) -> AsyncIterator[Event]:
    """Answer ``question`` from ``kb`` as a stream of events (``kb=None`` searches every knowledge base).

    Only what ``reader`` may see is searched (``retrieval.search``; None: an anonymous visitor, public knowledge
    bases only): a ``kb`` the reader may not see finds nothing, so the answer is the "nothing found" refusal.

    Raises ``AnswerBackendError`` after the tokens produced so far if the generator fails. The answer's own
    words are in the question's language; ``language`` (the client's Accept-Language) when that can't be told.
    ``requester`` is the customer asking (``Conversation.requester``): the embedding model serves customers in
    turn (knowledge/inference.py), so one customer's many questions cannot hold up another's; None: a turn of its
    own.

    ``asker`` is who the answer is for, as the server knows them: with one, the tools switched on for ``kb`` may be
    used for them (knowledge/answering/tool_answers.py); without one (the bench, ``manage.py search``), none is.
    """
    generator = generator or get_generator()
    turns = _prior_turns(question, history)
    # The customer's language: the answer's own words, status lines and a refusal are in it.
    language = detect_language(question) or language or translation.get_language() or settings.LANGUAGE_CODE
    if not question.strip():  # an image sent without words: nothing to search (knowledge/answering/wordless.py)
        async for event in wordless.answer(language, generator.pace(), generator.name):
            yield event
        return
    tools = await asker.allowed(await running.usable_tools(kb)) if asker is not None else []
    plan = await tool_answers.plan(question, turns, tools, requester) if tools and generator.composes else None

    def from_knowledge(asked: str, offered: dict[str, Tool] | None = None) -> AsyncIterator[Event]:
        return _from_knowledge(asked, kb=kb, turns=turns, generator=generator, language=language, reader=reader,
                               requester=requester, asker=asker, offered=offered or {})  # fmt: skip

    if plan is None:
        offered = tool_answers.offers(tools) if tools and not generator.composes else {}
        async for event in from_knowledge(question, offered):
            yield event
        return
    events = tool_answers.answer(plan, asker, language, question=question, pace=generator.pace(),
                                 generator_name=generator.name, knowledge=from_knowledge)  # fmt: skip
    async for event in events:
        yield event


async def _from_knowledge(
    question: str, *, kb: KnowledgeBase | None, turns: list[dict], generator: Generator, language: str, reader: Any,
    requester: str | None, asker: Asker | None, offered: dict[str, Tool],
) -> AsyncIterator[Event]:  # fmt: skip
    """The answer from the articles (``answer``); with ``offered`` tools, the LLM may call them mid-answer."""
    started = time.perf_counter()
    # The status goes out before the (possibly slow, LLM) rewrite so the user sees progress at once.
    yield StatusEvent("retrieving", in_language(language, gettext, SEARCHING))
    result = await _search(question, kb, reader, requester)
    query = question
    rewrite_ms = 0.0
    points_back = refers_back(question)
    searches = [_search_record(question, result)]
    if turns and (points_back or generator.rewrites_cheaply):
        # A follow-up is also searched rewritten with the conversation; the rewrite is kept on evidence: it
        # must search better, and clearly better when the question does not point back ("what do I need to
        # bring?", "大概多久能收到？"). Length never decides. An LLM's rewrite is a model call, so it is asked
        # only for questions that point back.
        rewrite_started = time.perf_counter()
        candidate = (await generator.rewrite(question, turns)).strip() or question
        rewrite_ms = _ms(time.perf_counter() - rewrite_started)
        if candidate != question:
            rewritten = await _search(candidate, kb, reader, requester)
            searches.append(_search_record(candidate, rewritten))
            written = result.passages[0].language if result.passages else ""
            threshold = min_similarity(question, written)
            margin = rewrite_margin(points_back, threshold)
            kept = choose_query(result.passages, rewritten.passages, margin=margin)
            searches[-1]["why"] = (
                f"{'kept' if kept else 'not kept'}: best passage {best_similarity(rewritten.passages):.3f} vs "
                f"{best_similarity(result.passages):.3f} as asked, margin {margin:.3f} "
                f"({'the question points back' if points_back else 'the question does not point back'})"
            )
            if kept:
                query, result = candidate, rewritten
    for record in searches:
        record["used"] = record["query"] == query
    passages = [in_language(language, curated.labelled, p) for p in result.passages]
    # The verdict (and, for the extractive generator, the answer itself): does any passage answer the query?
    rewritten_from = question if query != question else None
    composition = await _compose(
        generator, query, passages, language, focus=rewritten_from,
        context=previous_question(turns) if rewritten_from else None, requester=requester,
    )
    # The support team's own answer matched (knowledge/answering/curated.py): it is the answer, for every generator.
    curated_answer = "curated" in composition.report
    passages = passages if curated_answer else curated.without(passages)  # not the answer: not a passage either
    parts = split_question(question) if generator.composes and not rewritten_from else [question]
    if len(parts) > 1 and not composition.declined and not curated_answer:
        # Two questions in one message, which the knowledge base answers as a whole (a part alone is shorter and
        # matches more loosely, so the verdict stays the whole message's): each part searched and answered on
        # its own (knowledge/answering/subquestions.py).
        composition = await _compose_parts(
            generator, parts, passages, language, kb, reader, requester, searches
        ) or composition
    offer_handoff = composition.declined
    # Nothing relevant: no sources to show, a refusal in the customer's language, a person. The trace keeps
    # what was retrieved (the console shows why nothing was good enough).
    retrieved, passages = passages, ([] if offer_handoff else passages)
    if (generator.composes or curated_answer) and not offer_handoff:
        passages = composition.passages  # the retrieved passages, then other chunks of their documents it quotes
    yield StatusEvent("retrieved", in_language(language, retrieved_text, passages))
    yield SourcesEvent(source_items(passages))
    yield StatusEvent("generating", in_language(language, gettext, WRITING))

    pieces: list[str] = []
    first_token_ms: float | None = None
    generate_started = time.perf_counter()
    # A generator that cannot read the conversation itself (extractive) answers the query that was searched.
    asked = query if generator.answers_searched_query else question
    guard = Guard(generator, passages)  # LLM answers: citations of unlisted sources never reach a token
    offers = [tool_answers.offer(name, tool) for name, tool in offered.items()]
    # Nothing in the articles, but tools to offer: the model may still look the customer's own data up. Its words
    # wait until it asks for a tool; an answer without one is the refusal, as without tools.
    model_decides = bool(offers) and offer_handoff and not generator.composes
    if (offer_handoff and not model_decides) or generator.composes or curated_answer:
        stream = pace_words(composition.text, generator.pace())
    else:
        stream = guard.wrap(generator.stream(asked, passages, turns, offers))
    held: list[str] | None = [] if model_decides else None
    runs: list[ToolRun] = []
    extra: list[dict[str, Any]] = []  # the tools' results, numbered after the passages
    try:
        async for piece in stream:
            if isinstance(piece, ToolRequest):
                assert asker is not None  # tools are offered only with an asker
                n = len(passages) + len(extra) + 1
                async for item in tool_answers.serve(piece, offered, asker, language, n):
                    if isinstance(item, ToolRun):
                        runs.append(item)
                        if item.ok:
                            extra.append(item.source(n))
                            guard.filter.source_count += 1
                            yield SourcesEvent(source_items(passages) + extra)
                    else:
                        yield item
                if held is not None:
                    piece, held = "".join(held), None
                else:
                    continue
            if not piece:
                continue
            if held is not None:
                held.append(piece)
                continue
            if first_token_ms is None:
                first_token_ms = _ms(time.perf_counter() - started)
            pieces.append(piece)
            yield TokenEvent(piece)
        if held is not None:  # the model asked for no tool: the refusal, as without tools
            async for piece in pace_words(composition.text, generator.pace()):
                first_token_ms = first_token_ms or _ms(time.perf_counter() - started)
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
    if model_decides and runs:
        offer_handoff = not any(run.ok for run in runs)
    generate_ms = _ms(time.perf_counter() - generate_started)

    grounded = await guard.check("".join(pieces), query) if not (offer_handoff or runs or curated_answer) else None  # uncited: marked, or replaced by the extractive answer
    text = grounded.text if grounded else "".join(pieces)
    timings = {
        "rewrite_ms": rewrite_ms,
        "retrieve_ms": round(result.timings.get("total_ms", 0.0), 1),
        "embed_ms": round(result.timings.get("embed_ms", 0.0), 1),
        "db_ms": round(result.timings.get("db_ms", 0.0), 1),
        "generate_ms": generate_ms,
        "first_token_ms": first_token_ms if first_token_ms is not None else 0.0,
        "total_ms": _ms(time.perf_counter() - started),
    }
    if runs:
        timings["tool_ms"] = round(sum(run.latency_ms for run in runs), 1)
    trace = {
        "query": question,
        "rewritten_query": query if query != question else None,
        # Every search made for this answer, the one used and why: the question as asked and, for a question
        # asked after others, rewritten with the conversation.
        "searches": searches,
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
            # the sources [n] numbers; when nothing was good enough (none shown), what was retrieved
            for n, p in enumerate(passages or retrieved, start=1)
        ],
        "timings": timings,
        "generator": generator.name,
        "language": language,
        "answer": composition.report,
        "tools": [run.traced() for run in runs],
    }
    if grounded and grounded.report is not None:
        trace["grounding"] = grounded.report
    yield FinalEvent(
        text=text,
        html=render_answer_html(text, len(passages) + len(extra)),
        citations=cited_sources(text, len(passages) + len(extra)),
        state="complete",
        timings=timings,
        trace=trace,
        replaced=bool(grounded and grounded.replaced),
        offer_handoff=offer_handoff,
    )
