#!/usr/bin/env python
"""Ingestion throughput: chunks/s through parse -> chunk -> embed -> store, and the embedder's share.

    .venv/bin/python bench/ingest.py                 # the demo KB x 5 copies (~110 documents)
    .venv/bin/python bench/ingest.py --copies 1      # one pass over knowledge/demo_kb/

Each copy of every demo article gets a unique trailing marker so its checksum differs (otherwise
dedupe would skip it). Documents go through the same functions the worker runs
(knowledge.ingest.pipeline: add_document, read_source, prepare, store) into a throwaway knowledge
base on the configured database (DATABASE_URL, or the embedded PostgreSQL), which is deleted at the
end. The embedding model is loaded before the clock starts; its load time is reported separately.
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
os.environ["MEDIA_ROOT"] = tempfile.mkdtemp(prefix="bench-ingest-")  # uploaded copies never land in .data/


def unique_copy(data: bytes, suffix: str, copy: int) -> bytes:
    """Same content, different checksum; a marker each format ignores or treats as a tiny extra line."""
    if copy == 0:
        return data
    if suffix in {".md", ".html", ".htm"}:
        return data + f"\n<!-- bench copy {copy} -->\n".encode()
    if suffix == ".pdf":
        return data + f"\n% bench copy {copy}\n".encode()  # bytes after %%EOF: ignored by readers
    if suffix == ".docx":
        return data + b"\0" * copy  # trailing bytes after the zip's central directory: ignored
    return data + f"\n\n(copy {copy})\n".encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=5, help="How many times to ingest every demo article.")
    parser.add_argument("--source", type=Path, default=None, help="Folder to ingest (default: knowledge/demo_kb).")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from knowledge.embeddings import get_embedder
    from knowledge.ingest.pipeline import add_document, collect_files, prepare, read_source, store
    from knowledge.models import KnowledgeBase

    files = collect_files([args.source or settings.DEMO_KB_DIR])
    started = time.perf_counter()
    embedder = get_embedder()
    embedder.embed_documents(["warm-up"])
    load_s = time.perf_counter() - started

    kb = KnowledgeBase.objects.create(name=f"bench-ingest-{os.getpid()}")
    totals = {"parse_and_chunk": 0.0, "embed": 0.0, "store": 0.0}  # parse + chunk: the isolated child process
    chunks = documents = 0
    try:
        wall_started = time.perf_counter()
        for copy in range(args.copies):
            for path in files:
                data = unique_copy(path.read_bytes(), path.suffix.lower(), copy)
                document, _ = add_document(kb, filename=path.name, data=data)
                source, filename = read_source(document)
                prepared = prepare(source, filename)
                store_started = time.perf_counter()
                store(document, prepared)
                totals["store"] += time.perf_counter() - store_started
                for stage in ("parse_and_chunk", "embed"):
                    totals[stage] += prepared.timings[stage]
                chunks += len(prepared.drafts)
                documents += 1
        wall = time.perf_counter() - wall_started
    finally:
        # Raw deletes: only our rows, without collecting unrelated apps' relations.
        with connection.cursor() as cursor:
            for table in ("knowledge_chunk", "knowledge_document"):
                cursor.execute(f"DELETE FROM {table} WHERE knowledge_base_id = %s", [kb.pk])
            cursor.execute("DELETE FROM knowledge_knowledgebase WHERE id = %s", [kb.pk])

    pipeline_s = sum(totals.values())
    print(f"## Ingestion ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {embedder.name})\n")
    print(
        f"{documents} documents ({len(files)} files x {args.copies}), {chunks} chunks, "
        f"CHUNK_MAX_TOKENS={settings.CHUNK_MAX_TOKENS}, EMBEDDING_BATCH_SIZE={settings.EMBEDDING_BATCH_SIZE}; "
        f"model load {load_s:.1f} s (once per process, not counted).\n"
    )
    print("| stage | total s | ms / document | share |")
    print("|---|---:|---:|---:|")
    for stage, seconds in totals.items():
        print(f"| {stage} | {seconds:.2f} | {1000 * seconds / documents:.1f} | {100 * seconds / pipeline_s:.0f} % |")
    print(f"| **all** (wall, incl. upload bookkeeping) | {wall:.2f} | {1000 * wall / documents:.1f} | |\n")
    print(
        f"Throughput: **{chunks / wall:.1f} chunks/s** ({documents / wall:.1f} documents/s); "
        f"the embedder is **{100 * totals['embed'] / wall:.0f} %** of the wall time."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
