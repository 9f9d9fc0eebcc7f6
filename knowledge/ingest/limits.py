"""What one document may cost to ingest, and the checks made before the work starts.

A help-centre article is a few kilobytes of text. A hostile or broken file can be a few kilobytes that unpack
to gigabytes (a zip bomb in a .docx), a page tree of 50 000 pages, or one unbroken "word" of ten megabytes. Two
lines of defence, so that one file cannot take the ingestion worker (or the machine) down:

1. **Before the work**, from what the file says about itself: a .docx's zip directory (total unpacked size, the
   compression ratio of its large members) before anything is unpacked, a PDF's page count before any page is
   read, the size of text formats. Past a limit the document fails at once with a reason staff can act on.
2. **While it runs**: parsing and chunking happen in a child process with an address-space limit and a wall
   clock (``knowledge.ingest.isolation``), and the chunk count has a ceiling, so a file the checks above cannot
   see through still fails with its reason instead of ballooning.

The numbers are settings (``INGEST_*``, README and docs/security.md); ``Limits`` carries them into the child
process, which has no Django settings of its own.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import asdict, dataclass

from django.conf import settings

from knowledge.ingest.errors import LimitExceeded, ParseError

#: A zip member smaller than this unpacked is never refused for its compression ratio: small XML parts of a
#: .docx legitimately compress 100-fold, and a small one cannot hurt.
RATIO_CHECK_MIN_BYTES = 1024 * 1024

#: The formats whose size in bytes is the size of the text to parse.
TEXT_SUFFIXES = frozenset({".txt", ".md", ".html", ".htm"})


def human_size(size: int) -> str:
    """1.1 GB, 3.4 MB, 12 KB: sizes as staff read them."""
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{max(1, round(size / 1024))} KB"


@dataclass(frozen=True)
class Limits:
    """The ingestion limits of one run (``from_settings``), passed to the isolated parser as a dict."""

    max_unpacked_bytes: int
    max_compression_ratio: int
    max_text_bytes: int
    max_pages: int
    max_page_chars: int
    max_chunks: int
    max_memory_mb: int
    timeout_seconds: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_unpacked_bytes=settings.INGEST_MAX_UNPACKED_BYTES,
            max_compression_ratio=settings.INGEST_MAX_COMPRESSION_RATIO,
            max_text_bytes=settings.INGEST_MAX_TEXT_BYTES,
            max_pages=settings.INGEST_MAX_PAGES,
            max_page_chars=settings.INGEST_MAX_PAGE_CHARS,
            max_chunks=settings.INGEST_MAX_CHUNKS,
            max_memory_mb=settings.INGEST_MAX_MEMORY_MB,
            timeout_seconds=settings.INGEST_TIMEOUT_SECONDS,
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    # --- checks before the work ------------------------------------------------------------------------------
    def check_text_size(self, size: int, filename: str) -> None:
        if size > self.max_text_bytes:
            raise LimitExceeded(
                f"“{filename}” is {human_size(size)} of text, over the {human_size(self.max_text_bytes)} limit for "
                f"text, Markdown and HTML (INGEST_MAX_TEXT_BYTES); split it into smaller articles."
            )

    def check_zip(self, data: bytes, filename: str) -> None:
        """A zip container (.docx) from its central directory, before any member is unpacked.

        The sizes the directory declares bound what ``zipfile`` will produce (it stops at the declared size and
        fails the CRC check on a member that lies), so checking them is checking the work."""
        try:
            members = zipfile.ZipFile(io.BytesIO(data)).infolist()
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise ParseError(f"Could not read Word document {filename}: {exc or 'not a valid .docx file'}") from exc
        unpacked = sum(member.file_size for member in members)
        if unpacked > self.max_unpacked_bytes:
            raise LimitExceeded(
                f"“{filename}” unpacks to {human_size(unpacked)}, over the {human_size(self.max_unpacked_bytes)} "
                f"limit (INGEST_MAX_UNPACKED_BYTES)."
            )
        for member in members:
            if member.file_size < RATIO_CHECK_MIN_BYTES:
                continue
            ratio = member.file_size / max(1, member.compress_size)
            if ratio > self.max_compression_ratio:
                raise LimitExceeded(
                    f"“{filename}”: its part {member.filename} unpacks {ratio:.0f} times its packed size "
                    f"({human_size(member.compress_size)} to {human_size(member.file_size)}), over the "
                    f"{self.max_compression_ratio}× limit (INGEST_MAX_COMPRESSION_RATIO); a real document does "
                    f"not compress like that."
                )

    def check_pages(self, pages: int, filename: str) -> None:
        if pages > self.max_pages:
            raise LimitExceeded(
                f"“{filename}” has {pages:,} pages, over the {self.max_pages:,}-page limit (INGEST_MAX_PAGES)."
            )

    def check_page_text(self, chars: int, page: int, filename: str) -> None:
        if chars > self.max_page_chars:
            raise LimitExceeded(
                f"“{filename}”: page {page} has {chars:,} characters of text, over the {self.max_page_chars:,} "
                f"limit per page (INGEST_MAX_PAGE_CHARS)."
            )

    def check_chunks(self, chunks: int, filename: str) -> None:
        if chunks > self.max_chunks:
            raise LimitExceeded(
                f"“{filename}” makes {chunks:,} passages, over the {self.max_chunks:,} limit per document "
                f"(INGEST_MAX_CHUNKS); split it into smaller documents."
            )
