"""Parsing and chunking in a child process that cannot take the ingestion worker down with it.

A file the checks of ``knowledge.ingest.limits`` cannot see through — XML that expands inside the parser, a
Markdown file whose emphasis markers make millions of tokens, a PDF whose content streams loop — used to grow the
worker past 6 GB until the kernel killed something (perhaps Daphne or PostgreSQL), and the stalled-job check then
ran it again. Here the parser runs as ``python -m knowledge.ingest.isolation`` with

* an address-space limit (``RLIMIT_AS``, ``INGEST_MAX_MEMORY_MB``): past it an allocation fails, Python raises
  ``MemoryError`` (or the child dies), and the document fails with "needs more than N MB";
* a wall clock (``INGEST_TIMEOUT_SECONDS``): the child is killed and the document fails with "took longer than";
* the same CPU-time limit as a backstop (``RLIMIT_CPU``) should the parent itself be stopped.

The child needs no Django: it gets the file, its name and the limits on stdin (one JSON line, then the bytes)
and answers one JSON object on stdout: the title, the MIME type and the chunk drafts, or ``error``. Starting it
costs ~0.3 s per document, against seconds of embedding. Only the drafts come back, never the parsed sections.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from knowledge.ingest.chunking import ChunkDraft, chunk_sections
from knowledge.ingest.errors import DocumentError, LimitExceeded, ParseError
from knowledge.ingest.limits import Limits, human_size
from knowledge.ingest.parsers import ParsedDocument, parse_file

ROOT = Path(__file__).resolve().parent.parent.parent


def parse_and_chunk(
    data: bytes, filename: str, limits: Limits, max_tokens: int, overlap_tokens: int
) -> tuple[ParsedDocument, list[ChunkDraft]]:
    """The document's title and MIME type (``sections`` left empty) and its chunk drafts, computed in a child
    process within ``limits``; raises ``DocumentError`` with the reason staff read when the file is over a limit,
    unreadable, or makes the child run out of memory or time."""
    header = {"filename": filename, "limits": limits.as_dict(), "max_tokens": max_tokens, "overlap": overlap_tokens}
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "knowledge.ingest.isolation"],
            input=json.dumps(header).encode() + b"\n" + data,
            capture_output=True,
            timeout=limits.timeout_seconds,
            cwd=ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LimitExceeded(
            f"Reading “{filename}” took longer than {limits.timeout_seconds} s (INGEST_TIMEOUT_SECONDS) and was "
            f"stopped; a document this slow to read is broken or hostile."
        ) from exc
    if completed.returncode != 0 or not completed.stdout:
        raise _died(filename, len(data), completed, limits)
    try:
        answer = json.loads(completed.stdout)
    except ValueError as exc:
        raise ParseError(f"Could not read {filename}: the reader's answer was cut short.") from exc
    if "error" in answer:
        kind = LimitExceeded if answer.get("limit") else ParseError
        raise kind(answer["error"])
    parsed = ParsedDocument(title=answer["title"], sections=[], mime_type=answer["mime_type"])
    return parsed, [ChunkDraft(**draft) for draft in answer["drafts"]]


def _died(filename: str, size: int, completed: subprocess.CompletedProcess, limits: Limits) -> DocumentError:
    """Why the child ended without an answer: a signal (the kernel's, the CPU limit's) or an uncaught error."""
    code = completed.returncode
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        return LimitExceeded(
            f"Reading “{filename}” was stopped ({name}): it needs more than {limits.max_memory_mb} MB of memory "
            f"(INGEST_MAX_MEMORY_MB) or {limits.timeout_seconds} s (INGEST_TIMEOUT_SECONDS)."
        )
    stderr = completed.stderr.decode("utf-8", "replace")
    if "MemoryError" in stderr:  # out of memory where the child could not even answer
        return LimitExceeded(_out_of_memory(filename, size, limits))
    last = stderr.strip().splitlines()[-1:] or ["no output"]
    return ParseError(f"Could not read {filename}: the reader failed ({last[0][:300]}).")


# --- the child ------------------------------------------------------------------------------------------------
def _limit_self(limits: Limits) -> None:
    memory = limits.max_memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = limits.timeout_seconds + 5
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))


def _work(header: dict, data: bytes) -> dict:
    limits = Limits(**header["limits"])
    filename = header["filename"]
    parsed = parse_file(data, filename, limits)
    drafts = chunk_sections(parsed.sections, header["max_tokens"], header["overlap"])
    limits.check_chunks(len(drafts), filename)
    return {"title": parsed.title, "mime_type": parsed.mime_type, "drafts": [asdict(d) for d in drafts]}


def main() -> int:
    stream = sys.stdin.buffer
    header = json.loads(stream.readline())
    limits = Limits(**header["limits"])
    _limit_self(limits)
    data = stream.read()
    size = len(data)
    answer: dict | None = None
    try:
        answer = _work(header, data)
    except LimitExceeded as exc:
        answer = {"error": str(exc), "limit": True}
    except DocumentError as exc:
        answer = {"error": str(exc)}
    except MemoryError:
        pass  # answered below, once the handler has let go of the parser's frames and their memory
    except RecursionError:
        answer = {"error": f"Could not read {header['filename']}: it is nested too deeply.", "limit": True}
    if answer is None:
        answer = {"error": _out_of_memory(header["filename"], size, limits), "limit": True}
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown: after a MemoryError it only adds noise


def _out_of_memory(filename: str, size: int, limits: Limits) -> str:
    return (
        f"Reading “{filename}” ({human_size(size)}) needs more than {limits.max_memory_mb} MB of memory "
        f"(INGEST_MAX_MEMORY_MB): it expands far beyond its size when read."
    )


if __name__ == "__main__":
    sys.exit(main())
