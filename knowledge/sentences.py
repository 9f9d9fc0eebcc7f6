"""A passage as the units an extractive answer may quote: whole sentences, list items and table rows.

Computed once per chunk at ingestion (with their vectors, ``knowledge.sentence_vectors``) so a
question costs no model work beyond its own embedding. A chunk may start or end mid-sentence (overlap, PDF
wrapping): such pieces are never units, and neither are headings ("3. What the warranty does not cover").

Here, below both, because ingestion stores the units (``knowledge.sentence_vectors``) and answering quotes them
(``knowledge.answering``), and retrieval strips the same list markers from its snippets: none of them has to
import a layer above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[*_]?[A-Z0-9])|(?<=[。！？])")
#: A Markdown (or parsed) list item's marker: "- ", "* ", "• ", "1. ", "2) " (retrieval strips it from snippets).
LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+")
_ORDERED_MARKER = re.compile(r"^\s*\d{1,2}[.)]\s+")
_HEADING_MARKER = re.compile(r"^\s*#{1,6}\s+")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}")
_NUMBERED_HEADING = re.compile(r"^\s*\d{1,2}[.)]\s+\S")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "approx.", "incl.", "no.", "vs.", "mr.", "mrs.", "dr.", "st.", "max.", "min.")
#: A line ending on one of these words continues on the next one (PDF text wraps mid-sentence).
_CONTINUES = frozenset("a an and or but nor the to of for with on in at by from than as your our their its".split())
#: Words no sentence ends on, end mark or not: it was cut ("…on Sundays or").
_CUT = frozenset("a an and or but nor the your our their its if that which who whose".split())
_BUTTON_QUESTION = re.compile(r"\b((?i:click|tap|select|choose|press|open)\s+)([A-Z][^.?!\"“”]{1,40}\?)(?=\s+\w)")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

SENTENCE, ITEM, STEP, ROW = "sentence", "item", "step", "row"


@dataclass(frozen=True)
class Unit:
    """One quotable piece of a passage. ``block`` numbers the paragraph, list or table it belongs to, so the
    steps of one procedure (``kind == STEP``) can be quoted together, in order."""

    text: str
    kind: str
    block: int

    def as_dict(self) -> dict:
        return {"t": self.text, "k": self.kind, "b": self.block}

    @classmethod
    def from_dict(cls, data: dict) -> Unit:
        return cls(data["t"], data["k"], int(data["b"]))


# --- tables ---------------------------------------------------------------------------------------------------
#
# The parsers write a table as Markdown (knowledge/ingest/parsers.py, ``table_text``): a line per row with every
# cell between pipes, the outer ones included, so an empty cell keeps its column ("| | Basic | Plus |"); the
# header line, when the table has one, first and a rule line ("|---|---|") under it. Passages stored before that
# format hold rows without outer pipes ("Channel | Hours", blank lines between them), the first one the header:
# they are still read so.

_CELL_SEPARATOR = re.compile(r"(?<!\\)\|")
_RULE_CELL = re.compile(r"^\s*:?-+:?\s*$")


def is_table_row(line: str) -> bool:
    """A table line with its outer pipes ("| a | b |"), as the parsers and Markdown write them."""
    stripped = line.strip()
    return len(stripped) >= 2 and stripped[0] == "|" and stripped[-1] == "|" and not stripped.endswith("\\|")


def table_cells(line: str) -> list[str]:
    """The cells of a table line, in their columns: exactly one outer pipe is taken off each side, so an empty
    first or last cell stays a cell; an escaped pipe ("\\|") is a pipe of the cell's text."""
    stripped = line.strip()
    if is_table_row(stripped):
        stripped = stripped[1:-1]
    return [" ".join(cell.replace("\\|", "|").split()) for cell in _CELL_SEPARATOR.split(stripped)]


def is_table_rule(line: str) -> bool:
    """The rule under a table's header ("|---|:--:|")."""
    return is_table_row(line) and all(_RULE_CELL.match(cell) for cell in table_cells(line))


def row_sentence(header: list[str], row: list[str]) -> str:
    """A table row as a sentence with its column names: 'Cell 1 — Header 2: cell 2; Header 3: cell 3.'

    The first cell leads (labelled "Header 1: cell 1" when its column has a name); an empty cell is left out,
    and so is the label of a column without a name. Without a header: 'Cell 1 — cell 2; cell 3.'"""
    names = list(header) + [""] * max(0, len(row) - len(header))
    details = "; ".join(
        f"{name}: {cell}" if name else cell for name, cell in zip(names[1:], row[1:], strict=False) if cell
    )
    lead = f"{names[0]}: {row[0]}" if names and names[0] and row and row[0] else (row[0] if row else "")
    sentence = f"{lead} — {details}" if lead and details else lead or details
    return sentence if not sentence or _ENDS_SENTENCE.search(sentence) else f"{sentence}."


_ENDS_SENTENCE = re.compile(r"[.!?。！？]\**$")


def _table_rows(lines: list[str]) -> list[str]:
    """A table's rows as sentences with their header (``row_sentence``); a row whose first cell is empty (the
    rest of the row above it, in a Markdown table) is not one."""
    if any(is_table_row(line) for line in lines):
        header: list[str] = []
        if len(lines) > 1 and is_table_rule(lines[1]) and not is_table_rule(lines[0]):
            header, lines = table_cells(lines[0]), lines[2:]
        rows = [table_cells(line) for line in lines if not is_table_rule(line)]
    else:  # the format of older passages: no outer pipes, the first row the header
        rows = [table_cells(line) for line in lines if not _TABLE_RULE.match(line)]
        if len(rows) < 2:
            return []
        header, rows = rows[0], rows[1:]
    return [row_sentence(header, row) for row in rows if row and row[0]]


def _is_table_line(line: str) -> bool:
    """A table line: with its outer pipes ("| a | b |"), or as older passages hold rows ("a | b")."""
    stripped = line.strip()
    return stripped.startswith("|") or (" | " in stripped and not LIST_MARKER.match(line))


def _split_line(line: str) -> list[str]:
    """Sentences of one line; no split after "e.g." and friends."""
    pieces: list[str] = []
    for piece in _SENTENCE_END.split(line):
        if not piece.strip():
            continue
        if pieces and pieces[-1].lower().endswith(_ABBREVIATIONS):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    return [" ".join(p.split()) for p in pieces]


def unwrap_lines(text: str) -> list[str]:
    """The passage's lines with hard-wrapped sentences joined again.

    A line is joined to the previous one when that one stops mid-sentence: it ends on a comma, a hyphen or a
    word like "or", or the new line starts in lower case. List items, headings and table rows stay lines, and
    so does a PDF table's header ("Option Delivery time Price Order by") above its first row of figures.
    """
    lines: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        structural = not line or line.startswith("#") or _is_table_line(raw) or bool(LIST_MARKER.match(raw))
        if lines and lines[-1] and not structural and not lines[-1].startswith("#") and not _is_table_line(lines[-1]):
            previous = lines[-1]
            last_word = previous.rsplit(" ", 1)[-1].lower()
            header_row = _is_plain_header(previous) and _is_plain_row(line)  # "Option Price Order by" / "Express 9.95"
            if not header_row and (previous.endswith((",", "-", "–")) or last_word in _CONTINUES or line[:1].islower()):
                joiner = "" if previous.endswith("-") and line[:1].islower() else " "
                lines[-1] = f"{previous}{joiner}{line}"
                continue
        lines.append(line if not structural or not line else raw.rstrip())
    return lines


def _whole(sentence: str) -> bool:
    """Not a piece of a sentence: starts like a sentence and does not end on a dangling word. With its end mark
    a sentence may end on a preposition ("Sign in.", "the address you registered with."), never on "or"."""
    words = sentence.rstrip(".!?:;*。！？").split()
    dangling = _CUT if _TERMINAL.search(sentence) else _CONTINUES
    if not words or words[-1].lower() in dangling:
        return False
    first = sentence.lstrip("\"'(*_")[:1]
    return not (first.isalpha() and first.islower())


_TERMINAL = re.compile(r"[.!?:;。！？：；]\**$")


def _is_plain_row(line: str) -> bool:
    """A line with figures, no sentence end and at most 14 words: a row of a table that lost its separators."""
    return (
        bool(re.search(r"\d", line))
        and not _TERMINAL.search(line)
        and len(line.split()) <= 14
        and not _CJK.search(line)
        and (line[:1].isupper() or line[:1].isdigit())
    )


def _is_plain_header(line: str) -> bool:
    return not re.search(r"\d", line) and not _TERMINAL.search(line) and len(line.split()) <= 6


def _long_enough(sentence: str, is_item: bool) -> bool:
    """A step may be two words ("Sign in."); a sentence quoted alone needs three."""
    return len(_CJK.findall(sentence)) >= 6 or len(sentence.split()) >= (2 if is_item else 3)


def units(text: str) -> list[Unit]:
    """The quotable units of a passage, in order (see the module docstring)."""
    found: list[Unit] = []
    table: list[str] = []
    lines = unwrap_lines(text)
    block = 0
    in_list = False
    header = ""  # the last short line without figures: a plain (PDF) table's header
    for index, raw in enumerate([*lines, None]):
        if raw is not None and _is_table_line(raw):
            table.append(raw)
            continue
        if raw is not None and not raw.strip() and table and not is_table_row(table[-1]):
            continue  # older passages have blank lines between table rows; a table with outer pipes ends at one
        if table:
            block += 1
            found.extend(Unit(row, ROW, block) for row in _table_rows(table))
            table = []
        if raw is None or not raw.strip():
            continue  # a blank line inside a loose list keeps the list one block
        is_item = bool(LIST_MARKER.match(raw))
        if _HEADING_MARKER.match(raw) or is_item != in_list or not is_item:
            block += 1  # a new paragraph, list or heading section
        in_list = is_item
        if _HEADING_MARKER.match(raw):
            continue  # a heading names a topic; it answers nothing
        line = LIST_MARKER.sub("", raw).strip()
        neighbours = [lines[i] for i in (index - 1, index + 1) if 0 <= i < len(lines)]
        if (
            _NUMBERED_HEADING.match(raw)
            and len(line.split()) < 9
            and not re.search(r"[.!:;]\**$", line)
            and not any(LIST_MARKER.match(n) for n in neighbours)
        ):
            continue  # "3. What the warranty does not cover": a numbered heading, not a step
        if not is_item and _is_plain_row(line) and any(_is_plain_row(n) for n in neighbours):
            # A table the parser could not find (a PDF table without ruling lines) keeps no cell separators:
            # "Integrated (built-in) dishwasher installation 169.00". Its header line cannot be matched to the
            # cells, and run together ("Service Price") it would leave the reader to guess which column is which:
            # only a one-word one (a caption, "Prices") leads the row.
            lead = f"{header}: " if header and len(header.split()) == 1 else ""
            found.append(Unit(f"{lead}{line}." if not _ENDS_SENTENCE.search(line) else f"{lead}{line}", ROW, block))
            continue
        header = line if _is_plain_header(line) else ""
        kind = (STEP if _ORDERED_MARKER.match(raw) else ITEM) if is_item else SENTENCE
        for sentence in _split_line(line):
            if not _long_enough(sentence, is_item) or not _whole(sentence):
                continue  # fragments
            if sentence.rstrip("*_").endswith(("?", "？")) and not is_item:
                continue  # the FAQ's own questions ("When will I get my refund?"); a step may end on a button's "?"
            if not is_item and len(sentence.split()) < 9 and not re.search(r"[.!:;。！：；]\**$", sentence):
                if not _CJK.search(sentence):
                    continue  # an unmarked title line ("Changing or cancelling an order")
            # "click Have a promo code? under the summary": the parser dropped the bold, a button's own "?"
            # would end the sentence for a reader; quote the label.
            found.append(Unit(_BUTTON_QUESTION.sub(r"\1“\2”", sentence), kind, block))
    return found


def split_sentences(text: str) -> list[str]:
    """The texts of ``units(text)``."""
    return [unit.text for unit in units(text)]
