"""Small PDF files written by hand, byte by byte: the one PDF writer of the tests.

Used by tests/hostile_files.py (a page tree that shares its nodes) and tests/test_table_ingestion.py (a page with a
table). Why by hand: the tests need exact page contents and PDF structures no PDF library would write.
"""

from __future__ import annotations

import io


def stream(data: bytes) -> bytes:
    """A stream object's body: ``data`` with its ``/Length``."""
    return b"<< /Length " + str(len(data)).encode() + b" >>\nstream\n" + data + b"\nendstream"


def pdf(objects: list[bytes]) -> bytes:
    """A PDF 1.4 file of ``objects`` (object 1 is the catalog; a body refers to object n as ``n 0 R``), with its
    cross-reference table and trailer."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{index} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()
