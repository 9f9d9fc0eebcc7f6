"""The answer pipeline: question -> retrieval -> grounded generation, as typed events.

One async generator, ``answer()``, with no WebSocket knowledge: the chat consumer
turns each event into a frame (``{"type": event.type, **event.as_dict()}``). Order:

    status(retrieving) -> status(retrieved) -> sources -> status(generating) -> token... -> final

``history`` is the conversation BEFORE this question, oldest first, as
``[{"role": "user" | "assistant" | "agent", "text": str}]``. When it is not
empty the generator first rewrites the follow-up into a standalone query, and
that query is what retrieval searches for (both are in ``final.trace``).

Failure contract: when the generator backend fails (LLM endpoint down, HTTP
error, timeout) ``answer()`` has already yielded every token produced so far and
then raises ``AnswerBackendError`` with a message fit to show; there is no
``final``. The caller sends ``error {code: backend_error}`` and stores the
message as ``failed`` with the partial text. We raise instead of yielding a
"failed" final because a final claims the answer is over and well-formed; an
exception cannot be mistaken for success.

Cancellation: the caller cancels the task consuming ``answer()``. Nothing here
catches ``asyncio.CancelledError``; the generator's stream is closed in a
``finally`` (for the LLM that closes the HTTP response), so no request keeps
running after a Stop. Callers that stop iterating without cancelling should
``aclose()`` the iterator (e.g. ``contextlib.aclosing``).

Generators (``get_generator()`` picks one from ``settings.ANSWER_GENERATOR``):

* ``ExtractiveGenerator`` ("extractive", the offline default): quotes the
  sentences of the retrieved passages closest to the question, never writes
  anything of its own beyond a fixed lead-in, and says so when nothing is close.
* ``OpenAIChatGenerator`` ("openai"): any OpenAI-compatible chat endpoint with
  streaming, configured by ``LLM_BASE_URL`` / ``LLM_MODEL`` / ``LLM_API_KEY``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

import markdown_it
import nh3
from django.conf import settings

from knowledge.models import KnowledgeBase

logger = logging.getLogger(__name__)


class AnswerBackendError(RuntimeError):
    """The answer generator (e.g. an LLM endpoint) failed; the message is safe to show."""


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusEvent:
    """Progress line for the user ("Searching the knowledge base…")."""

    type: ClassVar[str] = "status"
    stage: str  # "retrieving" | "retrieved" | "generating"
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SourcesEvent:
    """The numbered passages the answer may cite; items: n, document, title, heading, page, snippet, score, url."""

    type: ClassVar[str] = "sources"
    items: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenEvent:
    """A piece of answer text; the final text is exactly the concatenation of these."""

    type: ClassVar[str] = "token"
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinalEvent:
    """The finished answer with rendered, sanitised HTML, the cited source numbers and the retrieval trace."""

    type: ClassVar[str] = "final"
    text: str
    html: str
    citations: list[int]
    state: str  # "complete"
    timings: dict[str, float]
    trace: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Event = StatusEvent | SourcesEvent | TokenEvent | FinalEvent


class Generator(Protocol):
    """Writes an answer from numbered passages (``knowledge.retrieval.Passage``; source n = index + 1)."""

    name: str

    def stream(self, question: str, passages: Sequence[Any], history: list[dict]) -> AsyncIterator[str]:
        """Text pieces of the answer, citing passages as [n]."""
        ...

    async def rewrite(self, question: str, history: list[dict]) -> str:
        """The follow-up ``question`` as a standalone search query, given earlier turns."""
        ...


# --- the pipeline -------------------------------------------------------------------


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
    from knowledge.retrieval import asearch

    started = time.perf_counter()
    generator = generator or get_generator()
    turns = _prior_turns(question, history)

    # The status goes out before the (possibly slow, LLM) rewrite so the user sees progress at once.
    yield StatusEvent("retrieving", "Searching the knowledge base…")
    query = question
    rewrite_ms = 0.0
    if turns:
        rewrite_started = time.perf_counter()
        query = (await generator.rewrite(question, turns)).strip() or question
        rewrite_ms = _ms(time.perf_counter() - rewrite_started)

    try:
        result = await asearch(query, kb=kb, k=settings.RETRIEVAL_TOP_K)
    except Exception as exc:  # embedding backend or database down: one clear error for the caller
        logger.exception("Retrieval failed for %r", query)
        raise AnswerBackendError("Searching the knowledge base failed; please try again in a moment.") from exc
    passages = list(result.passages)
    yield StatusEvent("retrieved", retrieved_text(passages))
    yield SourcesEvent(source_items(passages))
    yield StatusEvent("generating", "Writing the answer…")

    pieces: list[str] = []
    first_token_ms: float | None = None
    generate_started = time.perf_counter()
    stream = generator.stream(question, passages, turns)
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

    text = "".join(pieces)
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
    yield FinalEvent(
        text=text,
        html=render_answer_html(text, len(passages)),
        citations=cited_sources(text, len(passages)),
        state="complete",
        timings=timings,
        trace=trace,
    )


# --- citations and HTML -------------------------------------------------------------

# [3] and the LLM habit [1, 3]
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_MARKDOWN = markdown_it.MarkdownIt("commonmark", {"html": False})
_ALLOWED_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "sup",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title", "data-n"}, "ol": {"start"}}


def cited_sources(text: str, source_count: int) -> list[int]:
    """Sorted unique source numbers cited as [n] in ``text`` that exist (1..source_count)."""
    found: set[int] = set()
    for match in _CITATION.finditer(text):
        found.update(int(n) for n in match.group(1).split(",") if 1 <= int(n) <= source_count)
    return sorted(found)


def _link_citations(fragment: str, source_count: int) -> str:
    def replace(match: re.Match) -> str:
        numbers = [int(n) for n in match.group(1).split(",")]
        if not all(1 <= n <= source_count for n in numbers):
            return match.group(0)  # not a citation of ours: leave the text alone
        return "".join(f'<sup class="cite"><a href="#source-{n}" data-n="{n}">[{n}]</a></sup>' for n in numbers)

    return _CITATION.sub(replace, fragment)


def render_answer_html(text: str, source_count: int) -> str:
    """Markdown (raw HTML disabled) -> citation links -> nh3 allow-list, so answer text can never inject markup."""
    rendered = _MARKDOWN.render(text)
    parts = re.split(r"(<[^>]+>)", rendered)
    in_code = 0
    for i, part in enumerate(parts):
        if part.startswith("<"):
            tag = part.strip("</>").split()[0] if part.strip("</>") else ""
            if tag in {"code", "pre"}:
                in_code += -1 if part.startswith("</") else 1
        elif part and not in_code:
            parts[i] = _link_citations(part, source_count)
    return nh3.clean(
        "".join(parts),
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        allowed_classes={"sup": {"cite"}},
        url_schemes={"http", "https", "mailto"},
    )


# --- extractive generator (offline default) -----------------------------------------

NOTHING_FOUND = (
    "I couldn't find anything about that in the knowledge base. Could you rephrase the question, "
    "or would you like me to connect you to a person?"
)
LEAD_IN = "Here is what the knowledge base says:"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[*_]?[A-Z0-9])")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+")
_HEADING_MARKER = re.compile(r"^\s*#{1,6}\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}")
_WORDS = re.compile(r"\S+\s*")
_STOPWORDS = frozenset(
    "a an and are as at be but by can could do does for from have how i if in is it its me my "
    "of on or our please should so that the their them then there these they this those to was "
    "we what when where which who why will with would you your about any".split()
)
_REFERRING = frozenset("it its that this they them those these there one ones he she his her same".split())


@dataclass
class _Candidate:
    n: int  # source number
    position: int  # order within the passage
    text: str


def _table_rows(lines: list[str]) -> list[str]:
    """Markdown table rows as sentences: 'Cell 1 — Header 2: cell 2.'"""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if not _TABLE_RULE.match(line)]
    if len(rows) < 2:
        return []
    header, sentences = rows[0], []
    for row in rows[1:]:
        details = "; ".join(f"{h}: {c}" for h, c in zip(header[1:], row[1:], strict=False) if c)
        if row and row[0]:
            sentences.append(f"{row[0]} — {details}." if details else f"{row[0]}.")
    return sentences


_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "approx.", "incl.", "no.", "vs.", "mr.", "mrs.", "dr.", "st.")


def _split_line(line: str) -> list[str]:
    """Sentences of one line; no split after "e.g." and friends."""
    pieces: list[str] = []
    for piece in _SENTENCE_END.split(line):
        if pieces and pieces[-1].lower().endswith(_ABBREVIATIONS):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    return [" ".join(p.split()) for p in pieces]


def split_sentences(text: str) -> list[str]:
    """Readable sentences of a passage: list markers and heading marks dropped, tables turned into sentences."""
    sentences: list[str] = []
    table: list[str] = []
    for raw in text.splitlines() + [""]:
        if raw.strip().startswith("|"):
            table.append(raw)
            continue
        if table:
            sentences.extend(_table_rows(table))
            table = []
        if _HEADING_MARKER.match(raw):
            continue  # a heading names a topic; it answers nothing
        is_item = bool(_LIST_MARKER.match(raw))
        line = _LIST_MARKER.sub("", raw).strip()
        for sentence in _split_line(line):
            words = len(sentence.split())
            if words < 3 or sentence.endswith("?"):
                continue  # fragments, and the FAQ's own questions ("When will I get my refund?")
            if not is_item and words < 9 and not re.search(r"[.!:;]\**$", sentence):
                continue  # an unmarked title line ("Changing or cancelling an order")
            sentences.append(sentence)
    return sentences


def _with_marker(sentence: str, n: int) -> str:
    """'Do X.' -> 'Do X [1].' — the marker sits inside the sentence it supports."""
    sentence = sentence.rstrip()
    if sentence and sentence[-1] in ".!?:;":
        return f"{sentence[:-1]} [{n}]{sentence[-1]}"
    return f"{sentence} [{n}]."


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return float(sum(x * y for x, y in zip(a, b, strict=False)))


def key_terms(text: str) -> list[str]:
    """Content words of a question, in order, without repeats."""
    seen: list[str] = []
    for word in re.findall(r"[\w'-]+", text.lower()):
        if word not in _STOPWORDS and len(word) > 1 and word not in seen:
            seen.append(word)
    return seen


async def pace_words(text: str, words_per_second: float) -> AsyncIterator[str]:
    """Yield ``text`` word by word (each word with its following whitespace) at a steady pace; 0 = no delay."""
    interval = 1.0 / words_per_second if words_per_second > 0 else 0.0
    start = time.monotonic()
    for i, word in enumerate(_WORDS.findall(text)):
        if interval:
            # Deadline-based so small sleep overshoots do not add up over a long answer.
            await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
        else:
            await asyncio.sleep(0)  # still a cancellation point between tokens
        yield word


class ExtractiveGenerator:
    """Grounded extractive answers: the passages' own sentences closest to the question, each cited.

    Candidate sentences are embedded with the KB's embedder (in a thread, so the event
    loop keeps serving other sockets), scored by cosine similarity to the question,
    picked with MMR so near-duplicates from overlapping chunks are dropped, and kept
    only above ``ANSWER_MIN_SIMILARITY`` and close to the best match. The picked
    sentences are grouped per source and shown in source order, then in passage order.
    If nothing passes the threshold it says so instead of guessing.
    """

    name = "extractive"

    def __init__(
        self,
        *,
        words_per_second: float | None = None,
        max_sentences: int | None = None,
        min_similarity: float | None = None,
    ) -> None:
        self.words_per_second = words_per_second
        self.max_sentences = max_sentences
        self.min_similarity = min_similarity

    async def rewrite(self, question: str, history: list[dict]) -> str:
        """Heuristic follow-up rewrite without a model.

        A short question (up to 6 words) or one that refers back ("it", "that", "what about…")
        gets the key terms of the previous user question appended, so "And how long does
        it take?" after "How do I return an item?" searches for "…return item". Anything
        else is searched as asked.
        """
        previous = next((t["text"] for t in reversed(history) if t.get("role") == "user"), "")
        if not previous:
            return question
        words = re.findall(r"[\w'-]+", question.lower())
        follow_up = (
            len(words) <= 6
            or any(w in _REFERRING for w in words)
            or question.lower().startswith(("and ", "what about", "how about", "also "))
        )
        if not follow_up:
            return question
        extra = [t for t in key_terms(previous) if t not in words]
        return f"{question} {' '.join(extra)}".strip() if extra else question

    def compose(self, question: str, passages: Sequence[Any]) -> str:
        """The whole answer text (synchronous: embeds; call it in a thread)."""
        from knowledge.embeddings import get_embedder

        candidates: list[_Candidate] = []
        seen: set[str] = set()
        for n, passage in enumerate(passages, start=1):
            for position, sentence in enumerate(split_sentences(passage.text)):
                key = sentence.lower()
                if key not in seen:  # overlapping chunks repeat sentences verbatim
                    seen.add(key)
                    candidates.append(_Candidate(n, position, sentence))
        if not candidates:
            return NOTHING_FOUND

        embedder = get_embedder()
        query_vector = embedder.embed_query(question)
        vectors = embedder.embed_documents([c.text for c in candidates])
        relevance = [_dot(query_vector, v) for v in vectors]

        min_similarity = self.min_similarity if self.min_similarity is not None else settings.ANSWER_MIN_SIMILARITY
        best = max(relevance)
        if best < min_similarity:
            return NOTHING_FOUND
        floor = max(min_similarity, best * settings.ANSWER_RELATIVE_SIMILARITY)
        max_sentences = self.max_sentences or settings.ANSWER_MAX_SENTENCES

        chosen: list[int] = []
        pool = [i for i, score in enumerate(relevance) if score >= floor]
        while pool and len(chosen) < max_sentences:

            def mmr(i: int) -> float:
                redundancy = max((_dot(vectors[i], vectors[j]) for j in chosen), default=0.0)
                return 0.75 * relevance[i] - 0.25 * redundancy

            pick = max(pool, key=mmr)
            pool.remove(pick)
            if any(_dot(vectors[pick], vectors[j]) > 0.9 for j in chosen):
                continue  # says the same thing as a sentence already chosen
            chosen.append(pick)

        chosen.sort(key=lambda i: (candidates[i].n, candidates[i].position))
        paragraphs: dict[int, list[str]] = {}
        for i in chosen:
            paragraphs.setdefault(candidates[i].n, []).append(_with_marker(candidates[i].text, candidates[i].n))
        body = "\n\n".join(" ".join(sentences) for sentences in paragraphs.values())
        return f"{LEAD_IN}\n\n{body}"

    async def stream(self, question: str, passages: Sequence[Any], history: list[dict]) -> AsyncIterator[str]:
        query = await self.rewrite(question, history) if history else question  # "is it valid?" needs context
        text = await asyncio.to_thread(self.compose, query, passages)
        pace = self.words_per_second if self.words_per_second is not None else settings.ANSWER_WORDS_PER_SECOND
        async for word in pace_words(text, pace):
            yield word


# --- OpenAI-compatible chat generator -----------------------------------------------

SYSTEM_PROMPT = """You are the customer support assistant of this company. Answer the customer's question \
using ONLY the numbered passages from the knowledge base below.

Rules:
- Cite the passage(s) each statement comes from with its number in square brackets, e.g. [1] or [2][3].
- If the passages do not contain the answer, say plainly that you could not find it in the knowledge base \
and offer to connect the customer to a person. Never invent facts, prices, dates or policies.
- Be concise and friendly; use short paragraphs or a list for steps. Reply in the customer's language.

Passages:
{passages}"""

REWRITE_PROMPT = """Rewrite the customer's last message as one standalone search query for the knowledge base, \
resolving words like "it" or "that" from the conversation. Reply with the query only, no quotes."""


def format_passages(passages: Sequence[Any]) -> str:
    """The numbered passages as the model sees them."""
    if not passages:
        return "(no passages matched the question)"
    blocks = []
    for n, p in enumerate(passages, start=1):
        where = " › ".join(part for part in (p.title, p.heading) if part)
        page = f", page {p.page}" if p.page else ""
        blocks.append(f"[{n}] {where}{page}\n{p.text.strip()}")
    return "\n\n".join(blocks)


def _http_errors() -> tuple[type[Exception], ...]:
    """Exceptions meaning "the endpoint failed": the SDK's own, plus its HTTP library's raised mid-stream.

    The SDK wraps request errors but not all errors while a stream is being read; it has used
    ``httpx`` and, in newer releases, ``httpx2``, so both are recognised when installed.
    """
    import importlib

    import openai

    errors: list[type[Exception]] = [openai.OpenAIError]
    for module_name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module_name).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def _is_timeout(exc: Exception) -> bool:
    import openai

    return isinstance(exc, openai.APITimeoutError) or type(exc).__name__ in {
        "TimeoutException", "ReadTimeout", "ConnectTimeout", "WriteTimeout", "PoolTimeout",
    }  # fmt: skip


class OpenAIChatGenerator:
    """Any OpenAI-compatible chat endpoint (OpenAI, Azure, Ollama, vLLM, llama.cpp) via the official SDK.

    One client per call, closed after it: the SDK's HTTP pool is bound to the event loop
    that created it, and answers run on many loops (Daphne, tests).
    """

    name = "openai"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.base_url = base_url or settings.LLM_BASE_URL
        self.model = model or settings.LLM_MODEL
        self.api_key = api_key or settings.LLM_API_KEY or "not-needed"
        self.timeout = timeout if timeout is not None else settings.LLM_TIMEOUT
        self.max_tokens = max_tokens or settings.LLM_MAX_TOKENS
        if not self.base_url or not self.model:
            raise AnswerBackendError(
                "ANSWER_GENERATOR=openai needs LLM_BASE_URL (e.g. http://localhost:11434/v1) and LLM_MODEL."
            )
        self.name = f"openai:{self.model}"

    def _client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=settings.LLM_MAX_RETRIES
        )

    def _error(self, exc: Exception) -> AnswerBackendError:
        import openai

        if _is_timeout(exc):
            message = f"The language model did not respond within {self.timeout:g} s."
        elif isinstance(exc, openai.APIStatusError):
            message = f"The language model endpoint returned HTTP {exc.status_code}: {exc.message}"
        elif isinstance(exc, openai.APIConnectionError):
            message = f"Could not reach the language model endpoint at {self.base_url}."
        else:
            message = f"The language model endpoint failed: {exc}"
        return AnswerBackendError(message)

    @staticmethod
    def history_messages(history: list[dict]) -> list[dict[str, str]]:
        """The last few turns as chat messages; a human agent's replies count as the assistant side."""
        recent = history[-settings.ANSWER_HISTORY_MESSAGES :] if settings.ANSWER_HISTORY_MESSAGES > 0 else []
        return [
            {"role": "user" if turn.get("role") == "user" else "assistant", "content": turn["text"]} for turn in recent
        ]

    def messages(self, question: str, passages: Sequence[Any], history: list[dict]) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": SYSTEM_PROMPT.format(passages=format_passages(passages))},
            *self.history_messages(history),
            {"role": "user", "content": question},
        ]

    async def stream(self, question: str, passages: Sequence[Any], history: list[dict]) -> AsyncIterator[str]:
        errors = _http_errors()
        async with self._client() as client:
            try:
                response = await client.chat.completions.create(
                    model=self.model,
                    messages=self.messages(question, passages, history),
                    stream=True,
                    max_tokens=self.max_tokens,
                    temperature=settings.LLM_TEMPERATURE,
                )
            except errors as exc:
                raise self._error(exc) from exc
            try:
                async for chunk in response:
                    for choice in chunk.choices:
                        if choice.delta and choice.delta.content:
                            yield choice.delta.content
            except errors as exc:
                raise self._error(exc) from exc
            finally:
                await response.close()  # also on cancel: the server sees the connection go away

    async def rewrite(self, question: str, history: list[dict]) -> str:
        errors = _http_errors()
        conversation = "\n".join(
            f"{'Customer' if m['role'] == 'user' else 'Support'}: {m['content']}"
            for m in self.history_messages(history)
        )
        async with self._client() as client:
            try:
                completion = await client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": REWRITE_PROMPT},
                        {"role": "user", "content": f"Conversation:\n{conversation}\n\nLast message: {question}"},
                    ],
                    max_tokens=64,
                    temperature=0,
                )
            except errors as exc:
                raise self._error(exc) from exc
        content = completion.choices[0].message.content if completion.choices else None
        return " ".join((content or "").split()).strip("\"'") or question


def get_generator(name: str | None = None) -> Generator:
    """The generator named by ``settings.ANSWER_GENERATOR`` ("extractive" | "openai"), freshly built."""
    name = name or settings.ANSWER_GENERATOR
    if name == "extractive":
        return ExtractiveGenerator()
    if name == "openai":
        return OpenAIChatGenerator()
    raise AnswerBackendError(f"Unknown ANSWER_GENERATOR={name!r}; use 'extractive' or 'openai'.")
