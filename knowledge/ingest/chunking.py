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
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from knowledge.ingest.parsers import Section

HEADING_SEPARATOR = " > "
_TOKEN = re.compile(r"\w+|[^\w\s]")
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+")


@dataclass
class ChunkDraft:
    position: int
    text: str
    heading_path: str
    page: int | None
    token_count: int


def count_tokens(text: str) -> int:
    """Approximate token count (see the module docstring for why not the model tokenizer)."""
    return len(_TOKEN.findall(text))


def _word_tokens(word: str) -> int:
    return max(1, count_tokens(word))


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
