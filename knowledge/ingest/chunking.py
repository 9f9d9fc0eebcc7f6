"""Structure-aware chunking: headings first, then paragraphs, then a token budget.

Rules:
- a chunk never crosses a Section (heading or page) boundary, so every chunk
  has exactly one heading path and page to cite;
- whole paragraphs are packed together up to ``max_tokens``;
- a paragraph longer than the budget is split at sentence ends, and a sentence
  longer than the budget at word boundaries;
- consecutive chunks of the same section share up to ``overlap_tokens`` tokens
  (the tail of the previous chunk starts the next one), so a fact cut in two
  is still whole in one of them. Overlap is dropped rather than letting a
  chunk exceed ``max_tokens``.

Token counting is an approximation on purpose: words and punctuation marks
count one each (``\\w+|[^\\w\\s]``). For English prose that lands within
~20 % of the WordPiece count of all-MiniLM-L6-v2, is free to compute, does not
load a tokenizer, and does not change meaning when the embedding backend is
swapped for an HTTP endpoint with another tokenizer. The default budget (200)
leaves headroom under the local model's 256-piece window for that error.

Two kinds of text break that approximation, and with it the promise that a chunk fits the model's input (512
tokens for multilingual-e5): Chinese, Japanese and Korean are written without spaces, so a whole clause is one
``\\w+`` run — each of their characters counts one token instead (a model's tokenizer makes 0.6–1 token of
one); and one unbroken run of letters (a hostile file's 10 MB "word", a long hash) costs a model one token per
3–5 characters — a run longer than ``LONG_RUN_CHARS`` counts one token per ``CHARS_PER_LONG_RUN_TOKEN``
characters and is split between chunks like a sentence between words. Chinese and Japanese sentences end at
。！？ without a space.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from knowledge.ingest.parsers import Section

HEADING_SEPARATOR = " > "
#: Scripts written without spaces between words: Han, Hiragana, Katakana, Hangul syllables.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？])[」』”）]*\s*")
#: A run of letters or digits longer than this is not a word (a hash, a hostile file's endless "aaaa…"): it
#: counts one token per CHARS_PER_LONG_RUN_TOKEN characters, about what a subword tokenizer makes of it.
LONG_RUN_CHARS = 24
CHARS_PER_LONG_RUN_TOKEN = 4


@dataclass
class ChunkDraft:
    position: int
    text: str
    heading_path: str
    page: int | None
    token_count: int


def _run_cost(run: str) -> int:
    return 1 if len(run) <= LONG_RUN_CHARS else math.ceil(len(run) / CHARS_PER_LONG_RUN_TOKEN)


def count_tokens(text: str) -> int:
    """Approximate token count (see the module docstring for why not the model tokenizer)."""
    return sum(_run_cost(run) for run in _TOKEN.findall(text))


def _word_tokens(word: str) -> int:
    return max(1, count_tokens(word))


def _token_ends(word: str) -> Iterator[int]:
    """The offsets in ``word`` after each of its approximate tokens (a long run ends every few characters)."""
    for match in _TOKEN.finditer(word):
        if len(match.group()) > LONG_RUN_CHARS:
            yield from range(match.start() + CHARS_PER_LONG_RUN_TOKEN, match.end(), CHARS_PER_LONG_RUN_TOKEN)
        yield match.end()


def _split_long_word(word: str, budget: int) -> list[str]:
    """A word (no spaces) costing more than ``budget`` tokens, cut into pieces of at most ``budget`` tokens."""
    pieces: list[str] = []
    start = used = 0
    end = 0
    for end in _token_ends(word):
        used += 1
        if used == budget:
            pieces.append(word[start:end])
            start, used = end, 0
    if start < len(word):
        pieces.append(word[start:])
    return pieces


@dataclass
class _Unit:
    """A paragraph, sentence or word window that is never split further."""

    text: str
    tokens: int
    continues: bool  # part of the same paragraph as the unit before it


def _split_words(text: str, budget: int) -> list[str]:
    pieces: list[str] = []
    words: list[str] = []
    used = 0
    for word in text.split():
        cost = _word_tokens(word)
        if cost > budget:  # a word no chunk can hold: its pieces, each a chunk's worth
            if words:
                pieces.append(" ".join(words))
                words, used = [], 0
            *whole, word = _split_long_word(word, budget)
            pieces.extend(whole)
            cost = _word_tokens(word)
        if words and used + cost > budget:
            pieces.append(" ".join(words))
            words, used = [], 0
        words.append(word)
        used += cost
    if words:
        pieces.append(" ".join(words))
    return pieces


def _units(text: str, max_tokens: int, piece_budget: int) -> list[_Unit]:
    units: list[_Unit] = []
    for paragraph in _PARAGRAPHS.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        tokens = count_tokens(paragraph)
        if tokens <= max_tokens:
            units.append(_Unit(paragraph, tokens, continues=False))
            continue
        first = True
        for sentence in _SENTENCE_END.split(paragraph):
            sentence = sentence.strip()
            if not sentence:
                continue
            parts = [sentence] if count_tokens(sentence) <= piece_budget else _split_words(sentence, piece_budget)
            for part in parts:
                units.append(_Unit(part, count_tokens(part), continues=not first))
                first = False
    return units


def _tail(text: str, overlap_tokens: int) -> str:
    """The last words of ``text`` worth at most ``overlap_tokens`` tokens."""
    if overlap_tokens <= 0:
        return ""
    kept: list[str] = []
    used = 0
    for word in reversed(text.split()):
        cost = _word_tokens(word)
        if used + cost > overlap_tokens:
            break
        kept.append(word)
        used += cost
    return " ".join(reversed(kept))


def _pack(units: list[_Unit], max_tokens: int, overlap_tokens: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for unit in units:
        separator = " " if unit.continues else "\n\n"
        if current and count_tokens(current) + unit.tokens <= max_tokens:
            current += separator + unit.text
            continue
        if current:
            chunks.append(current)
            overlap = _tail(current, overlap_tokens)
            if overlap and count_tokens(overlap) + unit.tokens <= max_tokens:
                current = overlap + separator + unit.text
                continue
        current = unit.text
    if current:
        chunks.append(current)
    return chunks


def chunk_sections(sections: list[Section], max_tokens: int, overlap_tokens: int) -> list[ChunkDraft]:
    """Split parsed sections into chunks of at most ``max_tokens`` approximate tokens."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    overlap_tokens = max(0, min(overlap_tokens, max_tokens // 2))
    # Pieces of a split paragraph leave room for the overlap in front of them.
    piece_budget = max(1, max_tokens - overlap_tokens)
    drafts: list[ChunkDraft] = []
    for section in sections:
        heading = HEADING_SEPARATOR.join(section.heading_path)
        for text in _pack(_units(section.text, max_tokens, piece_budget), max_tokens, overlap_tokens):
            drafts.append(
                ChunkDraft(
                    position=len(drafts),
                    text=text,
                    heading_path=heading,
                    page=section.page,
                    token_count=count_tokens(text),
                )
            )
    return drafts
