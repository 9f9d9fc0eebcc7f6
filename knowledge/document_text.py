"""A chunk's text as the article page shows it: Markdown (lists, tables) rendered to sanitised HTML.

Chunk text is what the parsers kept of a document (knowledge/ingest/parsers.py): Markdown-ish plain text. A list
item is a paragraph starting with "- " (or "1. "). A table is written as Markdown rows, one line each, every
cell between pipes, the outer ones included ("| a | b |"), the header line and its "|---|" rule first when the
table has one (every chunk holding rows of such a table starts with them: knowledge/ingest/chunking.py); that
passes through as a Markdown table. ``as_markdown`` regroups what plain Markdown would show as loose paragraphs
or raw "|": runs of "- item" paragraphs into a tight list, a table without a header (rows, no rule) into a table
without a head row, and rows of passages stored before that format ("cell | cell", one paragraph per row, no
outer pipes, no rule) into a table whose first row is the header.

Rendering: markdown-it-py "commonmark" with the table rule, raw HTML disabled, single newlines kept as line
breaks (PDF and HTML text is laid out in lines), then nh3 with an allow-list. Nothing in the chunk can add
markup, ids or scripts; the page's ``#chunk-N`` anchors live on the template's sections, outside this HTML.
"""

from __future__ import annotations

import re

import markdown_it
import nh3

from knowledge.ingest.chunking import HEADING_SEPARATOR
from knowledge.sentences import is_table_row, is_table_rule, table_cells

# No setext headings: a line of dashes under PDF text is not a heading (headings come from the heading path).
_MARKDOWN = markdown_it.MarkdownIt("commonmark", {"html": False, "breaks": True}).enable("table").disable("lheading")
_ALLOWED_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "a", "hr",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
_ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}

_BLOCKS = re.compile(r"\n[ \t]*\n+")
_LIST_ITEM = re.compile(r"^(?:[-*+•]|\d{1,3}[.)])\s+\S")
_CELL_SEPARATOR = " | "
#: The head row Markdown needs above a table's rule when the table has none: all its cells empty, removed from
#: the HTML again (``_EMPTY_HEAD``).
_EMPTY_HEAD = re.compile(r"<thead>\s*<tr>\s*(?:<th(?: style=\"[^\"]*\")?></th>\s*)+</tr>\s*</thead>\s*")


def _row_cells(block: str) -> list[str] | None:
    """The cells of a one-line "a | b | c" paragraph (a table row as the parsers write it), else None."""
    line = block.strip()
    if "\n" in line or _CELL_SEPARATOR not in line or line.startswith("|"):
        return None
    cells = [cell.strip() for cell in line.split(_CELL_SEPARATOR)]
    return cells if all(cells) else None


def _headerless_table(block: str) -> str | None:
    """A table written without a header ("| a | b |" lines, no "|---|" rule) as Markdown that renders it as
    a table: an empty head row and a rule above the rows (the empty head is dropped from the HTML); else None."""
    lines = [line.strip() for line in block.strip().split("\n")]
    if not all(is_table_row(line) and not is_table_rule(line) for line in lines):
        return None
    width = max(len(table_cells(line)) for line in lines)
    if width < 2:
        return None
    return "\n".join(["|" + "  |" * width, "|" + "---|" * width, *lines])


def _table(rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(rows[0]), "|" + "---|" * len(rows[0]), *(line(row) for row in rows[1:])])


def as_markdown(text: str) -> str:
    """Chunk text -> Markdown: runs of "- item" paragraphs become one tight list, a block of "| a | b |" rows
    without a rule a table without a head row, runs of at least two "a | b" rows (older passages) with the same
    number of cells a table whose first row is the header."""
    blocks = [b for b in _BLOCKS.split(text.replace("\r\n", "\n").strip()) if b.strip()]
    out: list[str] = []
    i = 0
    while i < len(blocks):
        cells = _row_cells(blocks[i])
        if cells and len(cells) >= 2:
            rows = [cells]
            while i + len(rows) < len(blocks):
                following = _row_cells(blocks[i + len(rows)])
                if not following or len(following) != len(cells):
                    break
                rows.append(following)
            if len(rows) >= 2:
                out.append(_table(rows))
                i += len(rows)
                continue
        headerless = _headerless_table(blocks[i])
        if headerless is not None:
            out.append(headerless)
            i += 1
            continue
        if _LIST_ITEM.match(blocks[i].lstrip()):
            items = [blocks[i]]
            while i + len(items) < len(blocks) and _LIST_ITEM.match(blocks[i + len(items)].lstrip()):
                items.append(blocks[i + len(items)])
            out.append("\n".join(item.strip() for item in items))
            i += len(items)
            continue
        out.append(blocks[i])
        i += 1
    return "\n\n".join(out)


def section_heading(heading_path: str, document_title: str) -> str:
    """A chunk's heading on its document's page: the heading path without the document's own title (the page's
    h1 already says it), nested sections joined with "›"; "" for the document's introduction."""
    parts = [p.strip() for p in (heading_path or "").split(HEADING_SEPARATOR) if p.strip()]
    if parts and parts[0].casefold() == document_title.strip().casefold():
        parts = parts[1:]
    return " › ".join(parts)


def chunk_html(text: str) -> str:
    """Sanitised HTML of one chunk's text, for the article page (a wide table scrolls inside its wrapper)."""
    html = nh3.clean(
        _EMPTY_HEAD.sub("", _MARKDOWN.render(as_markdown(text or ""))),
        tags=_ALLOWED_TAGS,
        attributes=_ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
    )
    return html.replace("<table>", '<div class="table-wrap"><table>').replace("</table>", "</table></div>")
