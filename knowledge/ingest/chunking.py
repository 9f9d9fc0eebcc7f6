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
  chunk exceed ``max_tokens``;
- a table (lines "| a | b |" as the parsers write them, knowledge/ingest/parsers.py) is cut only between
  rows: a row is never split, the overlap between two chunks of one table is whole rows (and none after its
  last row: each row is whole where it is), and every chunk that holds rows of a table starts them with the
  table's header line and rule (counted in the chunk's tokens), so each chunk's rows read with their column
  names. A row too long to fit a chunk with its header becomes text, its cells labelled with their column names
  ("Code: KS-104 — What it means: …"), split like a long paragraph.

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
from itertools import groupby

from knowledge.ingest.parsers import Section
from knowledge.sentences import is_table_row, is_table_rule, row_sentence, table_cells

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


@dataclass(eq=False)
class _Table:
    """A table of a paragraph: its header line and rule ("" when it has none) and their token count."""

    header: str
    tokens: int


@dataclass
class _Unit:
    """A paragraph, sentence, word window or table row that is never split further."""

    text: str
    tokens: int
    continues: bool  # part of the same paragraph as the unit before it
    table: _Table | None = None  # a row of this table, or with ``is_header`` its header line
    is_header: bool = False


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


def _text_units(paragraph: str, max_tokens: int, piece_budget: int) -> list[_Unit]:
    tokens = count_tokens(paragraph)
    if tokens <= max_tokens:
        return [_Unit(paragraph, tokens, continues=False)]
    units: list[_Unit] = []
    for sentence in _SENTENCE_END.split(paragraph):
        sentence = sentence.strip()
        if not sentence:
            continue
        parts = [sentence] if count_tokens(sentence) <= piece_budget else _split_words(sentence, piece_budget)
        for part in parts:
            units.append(_Unit(part, count_tokens(part), continues=bool(units)))
    return units


def _table_units(lines: list[str], max_tokens: int, piece_budget: int) -> list[_Unit]:
    """The rows of one table, each a unit of its own that carries the table's header."""
    header_cells: list[str] = []
    if len(lines) > 2 and not is_table_rule(lines[0]) and is_table_rule(lines[1]):
        header_cells = table_cells(lines[0])
        table = _Table(f"{lines[0]}\n{lines[1]}", count_tokens(lines[0]) + count_tokens(lines[1]))
        lines = lines[2:]
    else:
        table = _Table("", 0)
    units: list[_Unit] = []
    for line in lines:
        if is_table_rule(line):
            continue
        tokens = count_tokens(line)
        if table.tokens + tokens <= max_tokens:
            units.append(_Unit(line, tokens, continues=False, table=table))
            continue
        # Too long to keep whole with the header: the row as a labelled sentence, split like text (never a
        # table line, so no piece of it is read as a row).
        text = row_sentence(header_cells, table_cells(line)).replace("|", "/")
        units.extend(_text_units(text, max_tokens, piece_budget))
    return units


def _units(text: str, max_tokens: int, piece_budget: int) -> list[_Unit]:
    units: list[_Unit] = []
    for paragraph in _PARAGRAPHS.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        lines = paragraph.split("\n")
        if not any(is_table_row(line) for line in lines):
            units.extend(_text_units(paragraph, max_tokens, piece_budget))
            continue
        for in_table, run in groupby(lines, key=is_table_row):
            run = [line.strip() for line in run]
            if in_table:
                units.extend(_table_units(run, max_tokens, piece_budget))
            elif any(run):
                units.extend(_text_units("\n".join(run).strip(), max_tokens, piece_budget))
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


def _join(units: list[_Unit]) -> str:
    """A chunk's text: a table's lines one under the other, pieces of a paragraph on one line, paragraphs apart."""
    parts = [units[0].text]
    for before, unit in zip(units, units[1:], strict=False):
        if unit.table is not None and unit.table is before.table:
            parts.append("\n")
        else:
            parts.append(" " if unit.continues else "\n\n")
        parts.append(unit.text)
    return "".join(parts)


def _header(unit: _Unit, chunk: list[_Unit]) -> list[_Unit]:
    """The header line a table row needs in front of it in ``chunk``: none when it has none or it is there."""
    table = unit.table
    if table is None or not table.header or any(u.is_header and u.table is table for u in chunk):
        return []
    return [_Unit(table.header, table.tokens, continues=False, table=table, is_header=True)]


def _overlap(chunk: list[_Unit], overlap_tokens: int, following: _Unit) -> list[_Unit]:
    """What the next chunk, starting with ``following``, starts with: after a table row, when more rows
    follow, the last whole rows worth at most ``overlap_tokens`` (with their header) — after the table's last row
    none, its rows are whole in the chunk they are in; after text, its last words, never reaching back into a
    table before it."""
    if overlap_tokens <= 0:
        return []
    last = chunk[-1]
    if last.table is not None:
        if following.table is not last.table:
            return []
        rows: list[_Unit] = []
        used = 0
        for unit in reversed(chunk):
            if unit.table is not last.table or unit.is_header or used + unit.tokens > overlap_tokens:
                break
            rows.insert(0, unit)
            used += unit.tokens
        return _header(rows[0], []) + rows if rows else []
    text: list[_Unit] = []
    for unit in reversed(chunk):
        if unit.table is not None:
            break
        text.insert(0, unit)
    tail = _tail(_join(text), overlap_tokens)
    return [_Unit(tail, count_tokens(tail), continues=False)] if tail else []


def _pack(units: list[_Unit], max_tokens: int, overlap_tokens: int) -> list[str]:
    chunks: list[str] = []
    current: list[_Unit] = []
    used = 0
    for unit in units:
        header = _header(unit, current)
        cost = unit.tokens + sum(u.tokens for u in header)
        if current and used + cost <= max_tokens:
            current += [*header, unit]
            used += cost
            continue
        if current:
            chunks.append(_join(current))
            overlap = _overlap(current, overlap_tokens, unit)
            if overlap:
                start = [*overlap, *_header(unit, overlap), unit]
                if sum(u.tokens for u in start) <= max_tokens:
                    current, used = start, sum(u.tokens for u in start)
                    continue
        current = [*_header(unit, []), unit]
        used = sum(u.tokens for u in current)
    if current:
        chunks.append(_join(current))
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
