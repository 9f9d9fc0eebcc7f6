"""Turn an uploaded file into titled, heading-structured text.

Every format yields the same shape: a title and a list of Sections, each the
text under one heading path (or one PDF page). Keeping the heading hierarchy is
what lets the chunker respect document structure and lets search weight
headings above body text.
"""

from __future__ import annotations

import io
import mimetypes
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


class UnsupportedFileType(ValueError):
    """The file's extension is not one we can parse."""


class ParseError(ValueError):
    """The file could not be read; the message is shown to the person who uploaded it."""


def mime_type_for(filename: str) -> str:
    """MIME type by extension; our own table first because `mimetypes` misses .md on many systems."""
    suffix = Path(filename).suffix.lower()
    return MIME_TYPES.get(suffix) or mimetypes.guess_type(filename)[0] or "application/octet-stream"


def parse_file(data: bytes, filename: str) -> ParsedDocument:
    """Parse ``data`` according to the extension of ``filename``."""
    suffix = Path(filename).suffix.lower()
    parser = _PARSERS.get(suffix)
    if parser is None:
        allowed = ", ".join(sorted(_PARSERS))
        raise UnsupportedFileType(f"Cannot read {suffix or 'extension-less'} files ({filename}); supported: {allowed}.")
    title, sections = parser(data, filename)
    sections = [s for s in (_clean_section(s) for s in sections) if s.text]
    if not sections:
        raise ParseError(f"No text found in {filename}; scanned PDFs need OCR.")
    return ParsedDocument(
        title=_collapse(title) or Path(filename).stem, sections=sections, mime_type=mime_type_for(filename)
    )


# --- helpers ----------------------------------------------------------------------

_SPACES = re.compile(r"[ \t\u00a0\u200b]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text or "").strip()


def _clean_section(section: Section) -> Section:
    """Normalise whitespace: paragraphs separated by exactly one blank line, lines inside kept."""
    paragraphs = [
        "\n".join(line for line in (_collapse(raw) for raw in p.split("\n")) if line)
        for p in _BLANK_LINES.split(section.text.replace("\r\n", "\n").replace("\r", "\n"))
    ]
    text = "\n\n".join(p for p in paragraphs if p)
    return Section(
        heading_path=[_collapse(h) for h in section.heading_path if _collapse(h)], text=text, page=section.page
    )


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) first; Windows-1252 as the common legacy fallback."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


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


def _parse_txt(data: bytes, filename: str) -> tuple[str, list[Section]]:
    return Path(filename).stem, [Section([], decode_text(data))]


# --- Markdown -------------------------------------------------------------------------


def _inline_text(token) -> str:
    """Plain text of an inline token: emphasis and link markup dropped, link text kept."""
    parts: list[str] = []
    for child in token.children or []:
        if child.type in {"text", "code_inline", "html_inline"}:
            parts.append(child.content if child.type != "html_inline" else "")
        elif child.type in {"softbreak", "hardbreak"}:
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


def _parse_markdown(data: bytes, filename: str) -> tuple[str, list[Section]]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(decode_text(data))
    builder = _SectionBuilder()
    list_depth = 0
    numbering: list[int | None] = []  # per open list: the next item's number, None for a bullet list
    row: list[str] | None = None
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
        elif token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            builder.paragraph(" | ".join(row))
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


def _parse_html(data: bytes, filename: str) -> tuple[str, list[Section]]:
    """lxml (inscriptis' own parser) for structure, inscriptis for the text of each block.

    Inscriptis renders lists, tables and inline markup the way a reader sees
    them; walking the tree ourselves only decides where headings cut sections.
    """
    import lxml.etree
    import lxml.html
    from inscriptis import get_text

    try:
        root = lxml.html.document_fromstring(data)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise ParseError(f"Could not read HTML {filename}: {exc}") from exc
    title_el = root.find(".//title")
    title = title_el.text_content() if title_el is not None else ""
    for el in list(root.iter(*_HTML_DROP)):
        el.drop_tree()
    for comment in list(root.iter(lxml.etree.Comment)):
        comment.drop_tree()
    builder = _SectionBuilder()
    body = root.find("body")

    def render(el) -> str:
        return get_text(lxml.html.tostring(el, encoding="unicode", with_tail=False)).strip()

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


def _parse_pdf(data: bytes, filename: str) -> tuple[str, list[Section]]:
    """One Section per page; the PDF outline (bookmarks), if any, supplies heading paths."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"Could not read PDF {filename}: it is password-protected.")
        outline = _pdf_outline(reader)
        sections: list[Section] = []
        heading: list[str] = []
        for index, page in enumerate(reader.pages):
            heading = outline.get(index, heading)
            text = page.extract_text() or ""
            # pypdf ends every visual line with "\n"; a blank line marks a paragraph break.
            sections.append(Section(list(heading), text, page=index + 1))
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except ParseError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ParseError(f"Could not read PDF {filename}: {exc}") from exc
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


def _parse_docx(data: bytes, filename: str) -> tuple[str, list[Section]]:
    import zipfile

    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ParseError(f"Could not read Word document {filename}: {exc or 'not a valid .docx file'}") from exc
    builder = _SectionBuilder()
    style_title = ""
    for block in _docx_blocks(document):
        if isinstance(block, Table):
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:  # merged cells repeat; keep each text once per row
                    text = _collapse(cell.text)
                    if text and text not in cells:
                        cells.append(text)
                builder.paragraph(" | ".join(cells))
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


_PARSERS: dict[str, Callable[[bytes, str], tuple[str, list[Section]]]] = {
    ".txt": _parse_txt,
    ".md": _parse_markdown,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".pdf": _parse_pdf,
    ".docx": _parse_docx,
}
