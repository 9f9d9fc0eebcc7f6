"""Hostile and broken documents, built in memory (small on disk, or not on disk at all).

Shared by the tests (tests/test_hostile_documents.py) and the benchmark (bench/hostile_files.py), so both
measure the same files: what an attacker or a careless staff member uploads.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from tests import pdf_files

SAMPLES = Path(__file__).parent / "samples"
_PARAGRAPH = b"<w:p><w:r><w:t>aaaaaaaaaa aaaaaaaaaa</w:t></w:r></w:p>"


def docx_bomb(unpacked_bytes: int) -> bytes:
    """A real .docx (tests/samples/warranty.docx) whose ``word/document.xml`` unpacks to ``unpacked_bytes`` of
    repeated paragraphs: 1.1 GB packs into ~3.4 MB. Streamed into the zip, never held in memory whole."""
    source = zipfile.ZipFile(SAMPLES / "warranty.docx")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in source.infolist():
            if item.filename != "word/document.xml":
                archive.writestr(item, source.read(item))
                continue
            head, tail = source.read(item).split(b"<w:body>", 1)
            block = _PARAGRAPH * 10_000
            with archive.open("word/document.xml", "w", force_zip64=True) as member:
                member.write(head + b"<w:body>")
                for _ in range(max(1, unpacked_bytes // len(block))):
                    member.write(block)
                member.write(tail)
    return out.getvalue()


def markdown_emphasis(size: int) -> bytes:
    """``*a *a *a …``: every marker is an emphasis delimiter the Markdown parser keeps a token for."""
    return b"*a " * (size // 3)


def one_word(size: int) -> bytes:
    """One unbroken word of ``size`` letters: no space to split at."""
    return b"a" * size


def pdf_page_tree(fan_out: int = 15, depth: int = 4) -> bytes:
    """A ~1 KB PDF whose page tree shares its nodes: each level's /Kids lists the next level's one node
    ``fan_out`` times, so ``fan_out ** depth`` pages (50 625) point at one page object."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    for level in range(depth):
        number = 2 + level
        child = number + 1
        kids = b" ".join([f"{child} 0 R".encode()] * fan_out)
        count = fan_out ** (depth - level)
        parent = b"" if level == 0 else f" /Parent {number - 1} 0 R".encode()
        objects.append(b"<< /Type /Pages /Kids [" + kids + b"] /Count " + str(count).encode() + parent + b" >>")
    page = 2 + depth
    content = page + 1
    font = page + 2
    objects.append(
        f"<< /Type /Page /Parent {page - 1} 0 R /MediaBox [0 0 200 200] /Contents {content} 0 R "
        f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
    )
    objects.append(pdf_files.stream(b"BT /F1 12 Tf 20 100 Td (Shared page) Tj ET"))
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return pdf_files.pdf(objects)
