#!/usr/bin/env python
"""Peak memory and time of reading each hostile file, before (in the worker's own process, no limits), with the
isolated reader alone (knowledge/ingest/isolation.py: memory and time bounded, the checks before the work off),
and after (both: what ingestion does now).

    .venv/bin/python bench/hostile_files.py                    # every file, both ways
    .venv/bin/python bench/hostile_files.py --before-cap-mb 4096
    .venv/bin/python bench/hostile_files.py --files tree.pdf notepad.txt

Each measurement is its own process (``--one NAME --mode before|after``), so its peak resident memory (read
with wait4, the largest process of its tree: the reader child included) is that file's alone. "Before" parses
and chunks with every ingestion limit off, as the worker did; it runs under an address-space cap
(``--before-cap-mb``) so that the machine survives it: a file that hits the cap is reported as "> cap".
The files are those of the tests (tests/hostile_files.py). Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
MB = 1024 * 1024
MODES = ("before", "isolated", "after")


def files() -> dict:
    from tests import hostile_files

    return {
        "bomb.docx": lambda: hostile_files.docx_bomb(1100 * MB),
        "emphasis.md": lambda: hostile_files.markdown_emphasis(9 * MB + 400 * 1024),
        "word.txt": lambda: hostile_files.one_word(10 * MB),
        "tree.pdf": hostile_files.pdf_page_tree,
        "notepad.txt": lambda: ("Returns are free within 30 days.\r\n" * 200).encode("utf-16"),
    }


def one(name: str, mode: str) -> str:
    """Read one file one way: "<seconds>|<the outcome in a few words>" (the file is built before the clock)."""
    import django

    django.setup()
    from knowledge.ingest.limits import Limits

    data = files()[name]()
    limits = Limits.from_settings()
    started = time.monotonic()
    return f"{_read(name, mode, data, limits)}|{time.monotonic() - started:.1f}"


def _read(name: str, mode: str, data: bytes, limits) -> str:
    from django.conf import settings

    from knowledge.ingest.chunking import chunk_sections
    from knowledge.ingest.errors import DocumentError
    from knowledge.ingest.isolation import parse_and_chunk
    from knowledge.ingest.parsers import parse_file

    off = replace(limits, max_unpacked_bytes=2**62, max_compression_ratio=2**62, max_text_bytes=2**62,
                  max_pages=2**62, max_page_chars=2**62, max_chunks=2**62)  # fmt: skip
    try:
        if mode == "before":
            parsed = parse_file(data, name, off)
            drafts = chunk_sections(parsed.sections, settings.CHUNK_MAX_TOKENS, settings.CHUNK_OVERLAP_TOKENS)
        else:
            checked = limits if mode == "after" else off  # "isolated": the child's memory and time limits only
            _, drafts = parse_and_chunk(data, name, checked, settings.CHUNK_MAX_TOKENS, settings.CHUNK_OVERLAP_TOKENS)
        return f"{len(drafts):,} passages, {max(len(d.text) for d in drafts):,} characters in the longest"
    except DocumentError as exc:
        return f"failed: {str(exc)[:90]}"
    except MemoryError:
        return "MemoryError"


def measure(name: str, mode: str, cap_mb: int) -> tuple[float, float, str]:
    """(seconds, peak MB, outcome) of one file read one way, in a process of its own."""

    def cap() -> None:
        if mode == "before":
            resource.setrlimit(resource.RLIMIT_AS, (cap_mb * MB, cap_mb * MB))

    child = subprocess.Popen(
        [sys.executable, __file__, "--one", name, "--mode", mode],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=cap, cwd=ROOT,
    )  # fmt: skip
    output = child.stdout.read().decode().strip()
    _, status, usage = os.wait4(child.pid, 0)
    peak = usage.ru_maxrss / 1024
    outcome, _, seconds = (output.splitlines()[-1] if output else "").rpartition("|")
    if os.waitstatus_to_exitcode(status) != 0 or outcome.endswith("MemoryError"):
        outcome = f"stopped at the {cap_mb} MB cap" if mode == "before" else f"exit {status}"
    return float(seconds or "nan"), peak, outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one")
    parser.add_argument("--mode", choices=MODES)
    parser.add_argument("--before-cap-mb", type=int, default=4096)
    parser.add_argument("--files", nargs="+", choices=sorted(files()), help="Only these files (default: all).")
    args = parser.parse_args()
    if args.one:
        print(one(args.one, args.mode))
        return 0
    print("| file | size | " + " | ".join(f"{m}: s | {m}: peak MB | {m}" for m in MODES) + " |")
    print("|---|---:|" + "---:|---:|---|" * len(MODES))
    for name, build in files().items():
        if args.files and name not in args.files:
            continue
        size = len(build())
        row = [name, f"{size / MB:.2f} MB" if size >= MB else f"{size / 1024:.1f} KB"]
        for mode in MODES:
            seconds, peak, outcome = measure(name, mode, args.before_cap_mb)
            row += [f"{seconds:.1f}", f"{peak:.0f}", outcome]
        print("| " + " | ".join(row) + " |", flush=True)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
