"""The offline default generator: answers with the knowledge base's own sentences, each cited."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

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


#: A line ending on one of these words continues on the next one (PDF text wraps mid-sentence).
_CONTINUES = frozenset("a an and or but nor the to of for with on in at by from than as your our their its".split())
_NUMBERED_HEADING = re.compile(r"^\s*\d{1,2}[.)]\s+\S")


def unwrap_lines(text: str) -> list[str]:
    """The passage's lines with hard-wrapped sentences joined again.

    A line is joined to the previous one when that one stops mid-sentence: it ends on a comma, a hyphen or a
    word like "or", or the new line starts in lower case. List items, headings and table rows stay lines.
    """
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        structural = not line or line.startswith(("|", "#")) or bool(_LIST_MARKER.match(raw))
        if lines and lines[-1] and not structural and not lines[-1].startswith(("|", "#")):
            previous = lines[-1]
            last_word = previous.rsplit(" ", 1)[-1].lower()
            if previous.endswith((",", "-", "–")) or last_word in _CONTINUES or line[:1].islower():
                joiner = "" if previous.endswith("-") and line[:1].islower() else " "
                lines[-1] = f"{previous}{joiner}{line}"
                continue
        lines.append(line if not structural or not line else raw.rstrip())
    return lines


def _whole(sentence: str) -> bool:
    """Not a piece of a sentence: starts like a sentence and does not end on a dangling word."""
    words = sentence.rstrip(".!?:;*").split()
    if not words or words[-1].lower() in _CONTINUES:
        return False
    first = sentence.lstrip("\"'(*_")[:1]
    return not (first.isalpha() and first.islower())


def split_sentences(text: str) -> list[str]:
    """Readable, whole sentences of a passage: list markers and headings dropped, tables turned into sentences.

    A chunk may start or end mid-sentence (overlap, PDF wrapping); such pieces are never quoted.
    """
    sentences: list[str] = []
    table: list[str] = []
    lines = unwrap_lines(text)
    for index, raw in enumerate([*lines, ""]):
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
        neighbours = [lines[i] for i in (index - 1, index + 1) if 0 <= i < len(lines)]
        if (
            _NUMBERED_HEADING.match(raw)
            and len(line.split()) < 9
            and not re.search(r"[.!:;]\**$", line)
            and not any(_LIST_MARKER.match(n) for n in neighbours)
        ):
            continue  # "3. What the warranty does not cover": a numbered heading, not a step
        for sentence in _split_line(line):
            words = len(sentence.split())
            if words < 3 or sentence.endswith("?") or not _whole(sentence):
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
    answers_searched_query = True  # it cannot read the conversation: the pipeline hands it the rewritten query

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
        """The follow-up with the key terms of the previous user question added, without a model.

        "And how long does it take?" after "How do I return an item?" searches for "…return item".
        The pipeline asks for this only when the question refers back (``followups.refers_back``) and
        keeps it only when it searches better than the question alone.
        """
        previous = next((t["text"] for t in reversed(history) if t.get("role") == "user"), "")
        words = re.findall(r"[\w'-]+", question.lower())
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
        text = await asyncio.to_thread(self.compose, question, passages)
        pace = self.words_per_second if self.words_per_second is not None else settings.ANSWER_WORDS_PER_SECOND
        async for word in pace_words(text, pace):
            yield word
