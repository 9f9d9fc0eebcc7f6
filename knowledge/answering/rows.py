"""A table row quoted as the answer: the row the customer asked about, with only the columns they named.

Tables are stored as rows under their header (``knowledge.sentences``: "Replacement card — Basic: €6.00; Plus: …;
Metal: First two each calendar year free, then €39.00."). Asked "I'm on Metal, what does a new card cost?", the
answer is that row's Metal cell, not every plan's: when the question names some of the table's columns (by the
column's own words: a plan, a route, a fare), the quoted row keeps its label and those cells. A question naming
no column, or every one, gets the whole row. Which row answers is decided by the scorer (``scoring``) and by
``one_row_per_table`` here: a second row of a table only when it adds words of the question the first lacks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from knowledge.answering.scoring import terms
from knowledge.sentences import is_table_row, is_table_rule, row_sentence, table_cells


def _tables(text: str) -> Iterator[tuple[list[str], list[list[str]]]]:
    """The passage's tables with a header, as (header cells, rows of cells)."""
    lines = [line.strip() for line in text.splitlines()]
    i = 0
    while i < len(lines):
        if is_table_row(lines[i]) and i + 1 < len(lines) and is_table_rule(lines[i + 1]):
            header, rows = table_cells(lines[i]), []
            i += 2
            while i < len(lines) and (is_table_row(lines[i]) or not lines[i]):
                if lines[i]:
                    rows.append(table_cells(lines[i]))
                i += 1
            yield header, rows
        else:
            i += 1


def cells_of(passage_text: str, row_text: str) -> tuple[list[str], list[str]] | None:
    """The header and cells of the row quoted as ``row_text`` in ``passage_text``, or None (no header, not found)."""
    for header, rows in _tables(passage_text):
        for row in rows:
            if row_sentence(header, row) == row_text:
                return header, row
    return None


def focused(passage_text: str, row_text: str, asked: set[str], wanted: Sequence[re.Pattern] = ()) -> str:
    """``row_text`` with only the columns whose names share words with the question (``asked``: its terms).

    The first column is the row's label and stays. When none of the named columns holds the kind of fact asked
    (``wanted``: the answer patterns of the question's intents, a price for "how much"), the columns that do are
    kept too ("how much is express and when does it arrive?" names "Delivery time"; the price is in "Price"). A
    column without a name, or a question naming none or all of the columns, leaves the row whole.
    """
    found = cells_of(passage_text, row_text)
    if found is None:
        return row_text
    header, row = found
    filled = [i for i in range(1, min(len(header), len(row))) if row[i]]
    named = [i for i in filled if header[i] and terms(header[i]) & asked]
    if named and wanted and not any(p.search(row[i]) for i in named for p in wanted):
        named = sorted({*named, *(i for i in filled if any(p.search(row[i]) for p in wanted))})
    if not named or len(named) == len(filled):
        return row_text
    keep = [0, *named]
    return row_sentence([header[i] for i in keep], [row[i] for i in keep])


def adds_to(row_text: str, chosen_rows: list[str], asked: set[str]) -> bool:
    """Whether a further row of a table already quoted answers more of the question: it holds asked words that
    none of ``chosen_rows`` holds ("express to Austria and to Germany?")."""
    covered = set().union(*(terms(text) for text in chosen_rows)) if chosen_rows else set()
    return bool((terms(row_text) & asked) - covered)
