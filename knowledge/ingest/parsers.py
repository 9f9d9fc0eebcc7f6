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
        elif child.type in {"text", "code_inline", "html_inline"}:
            parts.append(child.content if child.type != "html_inline" else "")
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


def _parse_html(data: bytes, filename: str, limits: Limits) -> tuple[str, list[Section]]:
    """lxml (inscriptis' own parser) for structure, inscriptis for the text of each block.

    Inscriptis renders lists, tables and inline markup the way a reader sees
    them; walking the tree ourselves only decides where headings cut sections.
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


def _parse_pdf(data: bytes, filename: str, limits: Limits) -> tuple[str, list[Section]]:
    """One Section per page; the PDF outline (bookmarks), if any, supplies heading paths. The page count is
    checked before any page is read, each page's text as it is extracted."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ParseError(f"Could not read PDF {filename}: it is password-protected.")
        limits.check_pages(len(reader.pages), filename)
        outline = _pdf_outline(reader)
        sections: list[Section] = []
        heading: list[str] = []
        for index, page in enumerate(reader.pages):
            heading = outline.get(index, heading)
            text = page.extract_text() or ""
            limits.check_page_text(len(text), index + 1, filename)
            # pypdf ends every visual line with "\n"; a blank line marks a paragraph break.
            sections.append(Section(list(heading), text, page=index + 1))
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except (ParseError, LimitExceeded):
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


_PARSERS: dict[str, Callable[[bytes, str, Limits], tuple[str, list[Section]]]] = {
    ".txt": _parse_txt,
    ".md": _parse_markdown,
    ".html": _parse_html,
    ".htm": _parse_html,
    ".pdf": _parse_pdf,
    ".docx": _parse_docx,
}
