"""Turn an uploaded file into titled, heading-structured text.

Every format yields the same shape: a title and a list of Sections, each the
text under one heading path (or one PDF page). Keeping the heading hierarchy is
what lets the chunker respect document structure and lets search weight
headings above body text.
"""

from __future__ import annotations

import codecs
import io
import mimetypes
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import charset_normalizer

from knowledge.ingest.errors import LimitExceeded, ParseError, UnsupportedFileType
from knowledge.ingest.limits import TEXT_SUFFIXES, Limits

MIME_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@dataclass
class Section:
    """Text under one heading path; ``page`` is 1-based where the format has pages."""

    heading_path: list[str]
    text: str
    page: int | None = None


@dataclass
class ParsedDocument:
    title: str
    sections: list[Section]
    mime_type: str


__all__ = ["LimitExceeded", "ParseError", "ParsedDocument", "Section", "UnsupportedFileType", "parse_file"]


def mime_type_for(filename: str) -> str:
    """MIME type by extension; our own table first because `mimetypes` misses .md on many systems."""
    suffix = Path(filename).suffix.lower()
    return MIME_TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def parse_file(data: bytes, filename: str, limits: Limits | None = None) -> ParsedDocument:
    """Parse ``data`` according to the extension of ``filename``, within ``limits`` (the settings' by default).

    Runs in the ingestion's child process (``knowledge.ingest.isolation``), which bounds its memory and time;
    the checks here refuse what a file declares about itself before the work starts."""
    limits = limits or Limits.from_settings()
    suffix = Path(filename).suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        allowed = ", ".join(sorted(_PARSERS))
        raise UnsupportedFileType(f"Cannot read {suffix or 'extension-less'} files ({filename}); supported: {allowed}.")
    if suffix in TEXT_SUFFIXES:
        limits.check_text_size(len(data), filename)
    title, sections = parser(data, filename, limits)
    sections = [s for s in (_clean_section(s) for s in sections) if s.text]
    if not sections:
        raise ParseError(f"No text found in {filename}; scanned PDFs need OCR.")
    return ParsedDocument(
        title=_collapse(title) or Path(filename).stem, sections=sections, mime_type=mime_type_for(filename)
    )


# --- helpers ----------------------------------------------------------------------

_SPACES = re.compile(r"[ \t\u00a0\u200b]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
#: Control characters: never text a reader sees. NUL is refused by PostgreSQL's text columns, and U+001E/U+001F are
#: the separators of the CJK full-text index (knowledge.models.CjkBigrams). Tab and line breaks are kept.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def remove_control_characters(text: str) -> str:
    return _CONTROL.sub("", text)


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", remove_control_characters(text or "")).strip()


# --- tables -----------------------------------------------------------------------------
#
# Every parser writes a table the same way, as Markdown: one line per row, every cell between pipes, the outer
# ones included ("| a |  | c |", so an empty first or last cell keeps its column), a "|" inside a cell escaped
# as "\|", and when the table has a header row, that row first with a rule line under it ("|---|---|---|").
# A table is one paragraph (its rows are consecutive lines): the chunker keeps each row whole and repeats the
# header line in every chunk that holds rows of the table (knowledge/ingest/chunking.py), and
# knowledge/sentences.py quotes each row with its header ("Label — Header: cell; Header: cell.").


def table_line(cells: list[str]) -> str:
    """One row as a Markdown table line."""
    return "| " + " | ".join(_collapse(cell).replace("|", "\\|") for cell in cells) + " |"


def table_text(rows: list[list[str]], header: list[str] | None = None) -> str:
    """A table as the parsers write it (see above): the header line and its rule when there is a header, then
    one line per row; rows shorter than the widest are padded with empty cells, rows without text dropped."""
    rows = [row for row in rows if any(_collapse(cell) for cell in row)]
    if header is not None and not any(_collapse(cell) for cell in header):
        header = None
    if header and not rows:  # a header without rows is a row of its own
        header, rows = None, [header]
    width = max([len(row) for row in rows] + [len(header) if header else 0], default=0)
    if not width:
        return ""
    lines = []
    if header:
        lines += [table_line(header + [""] * (width - len(header))), "|" + "---|" * width]
    lines += [table_line(row + [""] * (width - len(row))) for row in rows]
    return "\n".join(lines)


def _clean_section(section: Section) -> Section:
    """Normalise whitespace: paragraphs separated by exactly one blank line, lines inside kept."""
    text = remove_control_characters(section.text.replace("\r\n", "\n").replace("\r", "\n"))
    paragraphs = [
        "\n".join(line for line in (_collapse(raw) for raw in p.split("\n")) if line)
        for p in _BLANK_LINES.split(text)
    ]
    text = "\n\n".join(p for p in paragraphs if p)
    return Section(
        heading_path=[_collapse(h) for h in section.heading_path if _collapse(h)], text=text, page=section.page
    )


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE, whose BOM is its prefix
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _wide_encoding(data: bytes) -> str | None:
    """UTF-16 or UTF-32 without a byte-order mark, told by where its NUL bytes fall: ASCII text in UTF-16 LE has
    a NUL at every odd offset, in UTF-32 LE three of every four bytes are NUL."""
    sample = data[:4096]
    if len(sample) < 4 or b"\x00" not in sample:
        return None
    quarter = len(sample) // 4 * 4
    by_offset = [sample[i:quarter:4].count(0) / (quarter // 4) for i in range(4)]
    if by_offset[1] > 0.9 and by_offset[2] > 0.9 and by_offset[3] > 0.9:
        return "utf-32-le"
    if by_offset[0] > 0.9 and by_offset[1] > 0.9 and by_offset[2] > 0.9:
        return "utf-32-be"
    odd = (by_offset[1] + by_offset[3]) / 2
    even = (by_offset[0] + by_offset[2]) / 2
    if odd > 0.3 and odd > 4 * even:
        return "utf-16-le"
    if even > 0.3 and even > 4 * odd:
        return "utf-16-be"
    return None


def decode_text(data: bytes, filename: str = "the file") -> str:
    """The text of a text file, whatever its encoding: a byte-order mark first (UTF-8, UTF-16, UTF-32), then
    UTF-8, then UTF-16/32 without a mark (Notepad's "Unicode" is UTF-16 LE), then charset-normalizer's guess
    among the legacy encodings (Windows-1252, Latin-1, GB18030, Shift-JIS…). Bytes that are none of these are
    refused with what to do, never ingested as mojibake or with NUL bytes PostgreSQL refuses."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise ParseError(_undecodable(filename, f"it starts like {encoding} but is not")) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    wide = _wide_encoding(data)
    if wide:
        try:
            return data.decode(wide)
        except UnicodeDecodeError as exc:
            raise ParseError(_undecodable(filename, f"it looks like {wide} but is not")) from exc
    guess = charset_normalizer.from_bytes(data).best()
    if guess is None:
        raise ParseError(_undecodable(filename, "its bytes are not text in any encoding we recognise"))
    return str(guess)


def _undecodable(filename: str, why: str) -> str:
    return f"Could not read {filename} as text: {why}. Open it in an editor and save it as UTF-8."


@dataclass
class _SectionBuilder:
    """Collects paragraphs under the current heading path; a new heading closes the section."""

    sections: list[Section] = field(default_factory=list)
    path: list[tuple[int, str]] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)
    first_h1: str = ""

    def heading(self, level: int, text: str) -> None:
        text = _collapse(text)
        if not text:
            return
        self.flush()
        if level == 1 and not self.first_h1:
            self.first_h1 = text
        self.path = [(lvl, t) for lvl, t in self.path if lvl < level] + [(level, text)]

    def paragraph(self, text: str) -> None:
        if text and text.strip():
            self.paragraphs.append(text.strip())

    def flush(self) -> None:
        if self.paragraphs:
            self.sections.append(Section([t for _, t in self.path], "\n\n".join(self.paragraphs)))
        self.paragraphs = []


# --- plain text ---------------------------------------------------------------------


def _parse_txt(data: bytes, filename: str, limits: Limits) -> tuple[str, list[Section]]:
    return Path(filename).stem, [Section([], decode_text(data, filename))]


# --- Markdown -------------------------------------------------------------------------


_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_EMPHASIS_OPEN = {"em_open": "em_close", "strong_open": "strong_close", "s_open": "s_close"}


def _inline_text(token) -> str:
    """Plain text of an inline token: emphasis and link markup dropped, link text kept.

    Emphasis that opens inside a word ("7*7 and 8*8": CommonMark pairs the two asterisks) is kept as the
    literal characters it was written with: in a help article that is arithmetic, a SKU or a code, not style."""
    parts: list[str] = []
    literal: list[bool] = []  # per open emphasis: written back as its markup
    for child in token.children or []:
        if child.type in _EMPHASIS_OPEN:
            before = parts[-1][-1:] if parts and parts[-1] else ""
            literal.append(before.isalnum())
            if literal[-1]:
                parts.append(child.markup)
        elif child.type in _EMPHASIS_OPEN.values():
            if literal and literal.pop():
                parts.append(child.markup)
        elif child.type in {"text", "code_inline"}:
            parts.append(child.content)
        elif child.type == "html_inline":
            parts.append(" " if _HTML_BREAK.match(child.content) else "")  # "a<br>b" in a table cell
        elif child.type in {"softbreak", "hardbreak"}:
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


def _parse_markdown(data: bytes, filename: str, limits: Limits) -> tuple[str, list[Section]]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(decode_text(data, filename))
    builder = _SectionBuilder()
    list_depth = 0
    numbering: list[int | None] = []  # per open list: the next item's number, None for a bullet list
    row: list[str] | None = None
    table: list[list[str]] | None = None  # the rows of the open table; with ``header``, its head row
    header: list[str] | None = None
    in_head = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open":
            builder.heading(int(token.tag[1]), _inline_text(tokens[i + 1]))
            i += 3
            continue
        if token.type in {"bullet_list_open", "ordered_list_open"}:
            list_depth += 1
            # An ordered list keeps its numbers: the answerer quotes a procedure's steps in order.
            start = int(token.attrs.get("start", 1) or 1) if token.type == "ordered_list_open" else None
            numbering.append(start)
        elif token.type in {"bullet_list_close", "ordered_list_close"}:
            list_depth -= 1
            numbering.pop()
        elif token.type == "table_open":
            table, header = [], None
        elif token.type == "table_close" and table is not None:
            builder.paragraph(table_text(table, header))
            table = header = None
        elif token.type in {"thead_open", "thead_close"}:
            in_head = token.type == "thead_open"
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            if in_head and header is None:
                header = row
            elif table is not None:
                table.append(row)
            row = None
        elif token.type == "inline":
            text = _inline_text(token)
            if row is not None:
                row.append(_collapse(text))
            elif list_depth and numbering[-1] is not None:
                builder.paragraph(f"{numbering[-1]}. {text}")
                numbering[-1] += 1
            elif list_depth:
                builder.paragraph("- " + text)
            else:
                builder.paragraph(text)
        elif token.type in {"fence", "code_block"}:
            builder.paragraph(token.content)
        i += 1
    builder.flush()
    return builder.first_h1, builder.sections


# --- HTML ----------------------------------------------------------------------------

_HTML_DROP = {"script", "style", "nav", "noscript", "template", "svg", "form", "button", "iframe", "head"}
_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
# Inline styles that hide text from a reader: display:none, visibility:hidden, a zero font size, zero opacity.
_HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*(?:hidden|collapse)|font-size\s*:\s*0(?:\.0*)?(?:px|pt|em|rem|%)?\s*(?:;|!|$)"
    r"|opacity\s*:\s*0(?:\.0*)?\s*(?:;|!|$)",
    re.IGNORECASE,
)


def _hidden(el) -> bool:
    """An element a reader of the page never sees: ``hidden``, ``aria-hidden="true"`` or hiding inline styles.

    Its text is not ingested: what the page does not show must not reach an answer (or an LLM's prompt)."""
    attrib = el.attrib
    if "hidden" in attrib or attrib.get("aria-hidden", "").strip().lower() == "true":
        return True
    style = attrib.get("style")
    return bool(style and _HIDING_STYLE.search(style))


#: Elements that start a new line inside a table cell: their text is kept apart from their neighbours'.
_HTML_CELL_BREAKS = ("br", "p", "div", "li", "ul", "ol", "dl", "dt", "dd", "blockquote", "pre", *_HTML_HEADINGS)
#: A colspan or rowspan above this is taken as this (the HTML standard allows 1,000 and 65,534).
_HTML_MAX_SPAN = 64
#: A "table" wider than this is left to inscriptis as text: no reader compares so many columns, and spans that
#: multiply a row's cells must not multiply the memory its rows take.
_HTML_MAX_COLUMNS = 100


def _html_span(cell, attribute: str) -> int:
    try:
        return min(max(int(cell.get(attribute, "1").strip() or 1), 1), _HTML_MAX_SPAN)
    except ValueError:
        return 1


def _html_cell_text(cell) -> str:
    """A cell's text, whitespace collapsed; a line break or block inside it ("a<br>b", "<p>a</p><p>b</p>") is
    a space, not glued words."""
    for el in cell.iter(*_HTML_CELL_BREAKS):
        el.tail = " " + (el.tail or "")
        if el.tag != "br":
            el.text = " " + (el.text or "")
    return _collapse(cell.text_content())


def _html_table(table) -> str | None:
    """A data table as the parsers write tables (``table_text``), None for a table that only lays out the page
    (a single column, or holding another table or a heading): inscriptis renders that one as text.

    The header is the <thead> rows, else the rows at the top made only of <th>; several header rows are joined
    per column ("Price" over "Monthly" is "Price Monthly"). A cell spanning several columns repeats its text in
    each (every column keeps its value and its header), except a body cell spanning the whole row ("Large
    appliances" over a table's section), which is written once; a cell spanning several rows is repeated in each.
    """
    if any(True for _ in table.iterdescendants("table", *_HTML_HEADINGS)):
        return None
    grid: list[list[str]] = []
    spans: list[int] = []  # per row: the columns its first cell spans when it is the row's only cell, else 0
    in_thead: list[bool] = []
    all_th: list[bool] = []
    below: dict[int, tuple[str, int]] = {}  # column -> the text and rows left of a cell spanning rows

    def from_above(row: list[str], gap: str | None = None) -> bool:
        """Append the cell spanning down into the next column; with ``gap``, an empty one when none does."""
        if len(row) not in below and gap is None:
            return False
        text, left = below.pop(len(row), (gap or "", 1))
        row.append(text)
        if left > 1:
            below[len(row) - 1] = (text, left - 1)
        return True

    for tr in table.iter("tr"):
        cells = [c for c in tr if c.tag in {"td", "th"}]
        if not cells:
            continue
        row: list[str] = []
        for cell in cells:
            while from_above(row):
                pass
            text, columns, rows = _html_cell_text(cell), _html_span(cell, "colspan"), _html_span(cell, "rowspan")
            for _ in range(columns):
                if rows > 1:
                    below[len(row)] = (text, rows - 1)
                row.append(text)
            if len(row) > _HTML_MAX_COLUMNS:
                return None
        while below and len(row) <= max(below):
            from_above(row, gap="")
        grid.append(row)
        spans.append(_html_span(cells[0], "colspan") if len(cells) == 1 else 0)
        parent = tr.getparent()
        in_thead.append(parent is not None and parent.tag == "thead")
        all_th.append(all(c.tag == "th" for c in cells))
    width = max((len(row) for row in grid), default=0)
    if width < 2:
        return None
    # The header: the <thead> rows, else the leading rows of <th> only; at least one row is left for the body.
    count = sum(in_thead) if any(in_thead) else next((i for i, th in enumerate(all_th) if not th), 1)
    count = min(count, len(grid) - 1)
    header: list[str] | None = None
    if count > 0:
        header = []
        for column in range(width):
            names: list[str] = []
            for row in grid[:count]:
                name = row[column] if column < len(row) else ""
                if name and (not names or names[-1] != name):
                    names.append(name)
            header.append(" ".join(names))
    body = [
        row[:1] + [""] * (width - 1) if span == width else row
        for row, span in zip(grid[count:], spans[count:], strict=True)
    ]
    return table_text(body, header) or None


def _html_tables(root) -> dict[str, str]:
    """Replace each data table of the page by a paragraph holding a marker only; the markers' table texts.

    A marker is a word no page holds (a random nonce): inscriptis renders it where the table was, and
    ``_parse_html`` puts the table's lines in its place, so a table keeps its place among the paragraphs."""
    import secrets

    import lxml.html

    nonce = secrets.token_hex(8)
    found: dict[str, str] = {}
    for table in list(root.iter("table")):
        if table.getparent() is None or any(a.tag in _HTML_HEADINGS for a in table.iterancestors()):
            continue
        text = _html_table(table)
        if text is None:
            continue
        marker = f"table{nonce}n{len(found)}x"
        paragraph = lxml.html.Element("p")
        paragraph.text = marker
        paragraph.tail = table.tail
        table.tail = None
        table.getparent().replace(table, paragraph)
        found[marker] = text
    return found


def _parse_html(data: bytes, filename: str, limits: Limits) -> tuple[str, list[Section]]:
    """lxml (inscriptis' own parser) for structure, inscriptis for the text of each block.

    Inscriptis renders lists and inline markup the way a reader sees them; walking the tree ourselves only
    decides where headings cut sections. Data tables are written by ``_html_table`` (a row per line, each cell
    kept apart, the header first): inscriptis would render them as aligned text whose column boundaries are
    lost ("Limit Basic Plus Metal" above "ATM withdrawals per day €300 €600 €1,200").
    """
    import lxml.etree
    import lxml.html
    from inscriptis import get_text

    # UTF-16/32 pages are decoded first; other bytes go to lxml as they are, so that it honours <meta charset>.
    # NUL bytes are dropped before lxml would turn them into U+FFFD.
    wide = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _wide_encoding(data)
    source: str | bytes = decode_text(data, filename).replace("\x00", "") if wide else data.replace(b"\x00", b"")
    try:
        root = lxml.html.document_fromstring(source)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise ParseError(f"Could not read HTML {filename}: {exc}") from exc
    title_el = root.find(".//title")
    title = title_el.text_content() if title_el is not None else ""
    for el in list(root.iter(*_HTML_DROP)):
        el.drop_tree()
    for el in [el for el in root.iter() if isinstance(el.tag, str) and _hidden(el)]:
        if el.getparent() is not None:  # not inside one dropped already
            el.drop_tree()
    for comment in list(root.iter(lxml.etree.Comment)):
        comment.drop_tree()
    tables = _html_tables(root)
    markers = re.compile("|".join(map(re.escape, tables))) if tables else None
    builder = _SectionBuilder()
    body = root.find("body")

    def render(el) -> str:
        text = get_text(lxml.html.tostring(el, encoding="unicode", with_tail=False)).strip()
        return markers.sub(lambda m: f"\n\n{tables[m.group()]}\n\n", text) if markers else text

    def walk(el) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in _HTML_HEADINGS:
            builder.heading(_HTML_HEADINGS[tag], el.text_content())
            return
        if not any(child.tag in _HTML_HEADINGS for child in el.iter() if child is not el):
            builder.paragraph(render(el))
            return
        if el.text and el.text.strip():
            builder.paragraph(el.text)
        for child in el:
            walk(child)
            if child.tail and child.tail.strip():
                builder.paragraph(child.tail)

    walk(body if body is not None else root)
    builder.flush()
    return title or builder.first_h1, builder.sections


# --- PDF -----------------------------------------------------------------------------


def _pdf_outline(reader) -> dict[int, list[str]]:
    """Map page index -> heading path of the last bookmark starting on that page."""
    starts: dict[int, list[str]] = {}

    def visit(items, path: list[str]) -> None:
        last: list[str] = path
        for item in items:
            if isinstance(item, list):
                visit(item, last)
                continue
            last = path + [str(item.title)]
            try:
                page_index = reader.get_destination_page_number(item)
            except Exception:  # noqa: BLE001 - a broken bookmark must not stop the text
                continue
            if page_index is not None and page_index >= 0:
                starts[page_index] = last

    try:
        visit(reader.outline, [])
    except Exception:  # noqa: BLE001 - outlines are optional decoration
        return {}
    return starts


#: Table detection may take this share of INGEST_TIMEOUT_SECONDS; past it the remaining pages keep their plain
#: text, so that a long PDF with boxes on every page is still read in time (its tables then read as plain lines).
PDF_TABLE_TIME_SHARE = 0.4
#: Path operators of a page's content stream: a rectangle ("re") or a line segment ("l"). A ruled table is drawn
#: with several; a page with fewer (and no form XObject, "Do", which may hold them) is not searched for tables,
#: nor is one with more than a table of a thousand cells needs (a drawing, or a file made to make the search,
#: which compares every ruling line with every other, take hours).
_PDF_PATH_OPERATOR = re.compile(rb"\s(?:re|l|Do)(?=\s)")
_PDF_MIN_PATH_OPERATORS = 4
_PDF_MAX_PATH_OPERATORS = 4000
_PDF_BOLD_FONT = re.compile(r"bold|black|heavy|demi", re.IGNORECASE)
_PDF_WRAPPED_DASH = re.compile(r"(?<=\w)([-‐–])\n(?=\w)")


def _pdf_may_have_ruled_table(page) -> bool:
    """Cheap test before the costly table search: the page draws enough rectangles or lines to rule a table."""
    try:
        contents = page.get_contents()
        data = contents.get_data() if contents is not None else b""
    except Exception:  # noqa: BLE001 - a broken content stream has no table we could read either
        return False
    found = 0
    for _ in _PDF_PATH_OPERATOR.finditer(data):
        found += 1
        if found > _PDF_MAX_PATH_OPERATORS:
            return False
    return found >= _PDF_MIN_PATH_OPERATORS


def _pdf_cell(text: str | None) -> str:
    """A cell's text on one line: wrapped lines joined by a space, a word wrapped after its dash joined
    without one ("Monday–" / "Friday" is "Monday–Friday")."""
    return _collapse(_PDF_WRAPPED_DASH.sub(r"\1", text or "").replace("\n", " "))


def _pdf_fonts(page, bbox) -> list[str]:
    x0, top, x1, bottom = bbox
    return [
        char["fontname"]
        for char in page.chars
        if char["text"].strip()
        and x0 <= (char["x0"] + char["x1"]) / 2 <= x1
        and top <= (char["top"] + char["bottom"]) / 2 <= bottom
    ]


def _pdf_has_header(page, table, rows: list[list[str]]) -> bool:
    """A PDF does not say which row is a table's header. Its first row is taken for one when it is set in bold
    and the second is not (a <th> or a Word header row printed to PDF), or, in a table of three or more columns,
    when it holds no figure while every other row does ("Product group | Examples | Private use" above rows of
    product codes and years). Otherwise the table is read without a header."""
    first, second = (_pdf_fonts(page, row.bbox) for row in table.rows[:2])
    if first and second and all(_PDF_BOLD_FONT.search(f) for f in first):
        if not all(_PDF_BOLD_FONT.search(f) for f in second):
            return True
    digit = re.compile(r"\d")
    return (
        len(rows[0]) >= 3
        and all(rows[0])
        and not any(digit.search(cell) for cell in rows[0])
        and all(any(digit.search(cell) for cell in row) for row in rows[1:])
    )


def _pdf_table(page, table) -> str | None:
    """A ruled table found by pdfplumber as the parsers write tables (``table_text``), None when it is not a
    table of at least two rows and two columns with text (a box drawn around a paragraph)."""
    raw = table.extract()
    rows = [[_pdf_cell(cell) for cell in row] for row in raw]
    columns = [i for i in range(max((len(r) for r in rows), default=0)) if any(i < len(r) and r[i] for r in rows)]
    if len(rows) < 2 or len(columns) < 2:
        return None
    rows = [[row[i] if i < len(row) else "" for i in columns] for row in rows]
    if not _pdf_has_header(page, table, rows):
        return table_text(rows)
    header = rows[0]
    for i in range(1, len(header)):  # a header cell spanning columns (pdfplumber: None) names each of them
        if raw[0][columns[i]] is None:
            header[i] = header[i - 1]
    return table_text(rows[1:], header)


def _pdf_page_with_tables(page) -> str | None:
    """The page's text with each ruled table written as a table (a row per line, its header first) where it
    stands among the paragraphs; None when the page has no such table."""
    found = [(table, text) for table in page.find_tables() if (text := _pdf_table(page, table))]
    if not found:
        return None
    boxes = [table.bbox for table, _ in found]

    def middle(obj) -> tuple[float, float]:
        return (obj["x0"] + obj["x1"]) / 2, (obj["top"] + obj["bottom"]) / 2

    def outside_tables(obj) -> bool:
        if obj.get("object_type") != "char":
            return True
        x, y = middle(obj)
        return not any(x0 <= x <= x1 and top <= y <= bottom for x0, top, x1, bottom in boxes)

    rest = page.filter(outside_tables)
    parts: list[str] = []
    cursor = float("-inf")
    for table, text in sorted(found, key=lambda pair: pair[0].bbox[1]):
        top = table.bbox[1]
        # The text above this table (and beside the one before it); ``cursor`` and ``top`` bound the band.
        band = rest.filter(
            lambda obj, low=cursor, high=top: obj.get("object_type") != "char" or low <= middle(obj)[1] < high
        )
        parts += [band.extract_text(), text]
        cursor = top
    parts.append(rest.filter(lambda obj: obj.get("object_type") != "char" or middle(obj)[1] >= cursor).extract_text())
    return "\n\n".join(part for part in parts if part.strip())


def _pdf_tables(data: bytes, pages: list[int], deadline: float, limits: Limits, filename: str) -> dict[int, str]:
    """Page index -> the page's text with its ruled tables, for those of ``pages`` (0-based) that have one.

    pdfplumber (pdfminer.six) finds a table by the lines that rule it and cuts its cells by them, which the
    page's text alone cannot tell (its cells are only words on a line). Best effort: a page it cannot read, or
    reached after ``deadline``, keeps the plain text pypdf extracted."""
    import pdfplumber

    texts: dict[int, str] = {}
    try:
        pdf = pdfplumber.open(io.BytesIO(data), pages=[index + 1 for index in pages])
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - pypdf read it; the tables are a bonus
        return texts
    with pdf:
        for page in pdf.pages:
            if time.monotonic() > deadline:
                break
            try:
                text = _pdf_page_with_tables(page)
            except MemoryError:
                raise
            except Exception:  # noqa: BLE001 - see above
                text = None
            finally:
                page.close()
            if text is not None:
                limits.check_page_text(len(text), page.page_number, filename)
                texts[page.page_number - 1] = text
    return texts


def _parse_pdf(data: bytes, filename: str, limits: Limits) -> tuple[str, list[Section]]:
    """One Section per page; the PDF outline (bookmarks), if any, supplies heading paths. The page count is
    checked before any page is read, each page's text as it is extracted.

    pypdf reads the text. A page that draws enough lines to rule a table is searched for tables
    (``_pdf_tables``); where one is found, that page's text is pdfplumber's, with the table written as rows
    under their header instead of lines of words whose column boundaries are lost."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    deadline = time.monotonic() + limits.timeout_seconds * PDF_TABLE_TIME_SHARE
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"Could not read PDF {filename}: it is password-protected.")
        limits.check_pages(len(reader.pages), filename)
        outline = _pdf_outline(reader)
        sections: list[Section] = []
        heading: list[str] = []
        ruled: list[int] = []
        for index, page in enumerate(reader.pages):
            heading = outline.get(index, heading)
            text = page.extract_text() or ""
            limits.check_page_text(len(text), index + 1, filename)
            # pypdf ends every visual line with "\n"; a blank line marks a paragraph break.
            sections.append(Section(list(heading), text, page=index + 1))
            if text.strip() and _pdf_may_have_ruled_table(page):
                ruled.append(index)
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (ParseError, LimitExceeded):
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ParseError(f"Could not read PDF {filename}: {exc}") from exc
    if ruled:
        for index, text in _pdf_tables(data, ruled, deadline, limits, filename).items():
            sections[index].text = text
    if meta_title.strip().lower() in {"untitled", "about:blank"} or meta_title.startswith("file:"):
        meta_title = ""
    return meta_title, sections


# --- Word ----------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def _docx_blocks(document) -> Iterator[object]:
    """Paragraphs and tables in document order (python-docx lists them separately)."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in document.element.body.iterchildren():
        if child.tag.endswith("}p"):
            yield Paragraph(child, document)
        elif child.tag.endswith("}tbl"):
            yield Table(child, document)


def _docx_table(table) -> str:
    """A Word table as the parsers write tables (``table_text``), its first row the header (Word has no other
    mark of one that documents keep). python-docx repeats a merged cell in each column and row it covers; it is
    kept so (each column keeps its value), except a cell that spans a whole row, written once."""
    rows: list[list[str]] = []
    for row in table.rows:
        cells = row.cells
        texts = [_collapse(cell.text) for cell in cells]
        if len(cells) > 1 and all(cell._tc is cells[0]._tc for cell in cells):
            texts = texts[:1] + [""] * (len(texts) - 1)
        rows.append(texts)
    if max((len(row) for row in rows), default=0) < 2:  # a box around text, not a table
        return "\n\n".join(text for row in rows for text in row if text)
    return table_text(rows[1:], rows[0]) if len(rows) > 1 else table_text(rows)


def _parse_docx(data: bytes, filename: str, limits: Limits) -> tuple[str, list[Section]]:
    import zipfile

    import docx
    import lxml.etree
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    limits.check_zip(data, filename)  # from the zip's directory, before python-docx unpacks anything
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParseError(f"Could not read Word document {filename}: {exc or 'not a valid .docx file'}") from exc
    except lxml.etree.XMLSyntaxError as exc:  # broken XML, or libxml2 out of the child's memory (isolation.py)
        raise ParseError(
            f"Could not read Word document {filename}: its XML is broken or too large to read within "
            f"INGEST_MAX_MEMORY_MB ({exc})."
        ) from exc
    builder = _SectionBuilder()
    style_title = ""
    for block in _docx_blocks(document):
        if isinstance(block, Table):
            builder.paragraph(_docx_table(block))
            continue
        style = (block.style.name if block.style is not None else "") or ""
        match = _HEADING_STYLE.match(style.strip())
        if match:
            builder.heading(int(match.group(1)), block.text)
        elif style.strip().lower() == "title":
            style_title = style_title or _collapse(block.text)
        elif "list" in style.lower() and block.text.strip():
            builder.paragraph("- " + block.text)
        else:
            builder.paragraph(block.text)
    builder.flush()
    title = (document.core_properties.title or "").strip() or style_title or builder.first_h1
    return title, builder.sections


_PARSERS: dict[str, Callable[[bytes, str, Limits], tuple[str, list[Section]]]] = {
    ".txt": _parse_txt,
    ".md": _parse_markdown,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".pdf": _parse_pdf,
    ".docx": _parse_docx,
}
