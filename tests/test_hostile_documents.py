"""One file cannot take the service down: hostile and broken documents end ``failed`` with their reason, within
a bounded time and memory, never stuck and never retried in a loop; documents in any text encoding are read.

The files are built here (tests/hostile_files.py), small on disk: a .docx bomb, a huge Markdown emphasis file, a
10 MB one-word text, a 50 000-page PDF page tree, UTF-16 and NUL bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from knowledge import tasks
from knowledge.admin_forms import _queued
from knowledge.ingest import pipeline
from knowledge.models import Document
from tests import hostile_files
from tests.test_queue import conninfo, database_url

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
pytestmark = pytest.mark.django_db


@pytest.fixture
def kb():
    return pipeline.get_or_create_knowledge_base("Hostile documents")


def ingest(kb, filename: str, data: bytes) -> tuple[Document, float]:
    document, created = pipeline.add_document(kb, filename=filename, data=data)
    assert created
    started = time.monotonic()
    pipeline.ingest_document(document)
    document.refresh_from_db()
    return document, time.monotonic() - started


def test_a_docx_bomb_fails_from_its_zip_directory_before_anything_is_unpacked(kb):
    document, took = ingest(kb, "bomb.docx", hostile_files.docx_bomb(300 * MB))
    assert document.status == Document.Status.FAILED
    assert "unpacks to 300.5 MB, over the 100.0 MB limit (INGEST_MAX_UNPACKED_BYTES)" in document.error
    assert document.chunks.count() == 0
    assert took < 30


def test_a_docx_part_that_unpacks_a_thousandfold_fails_on_its_ratio(kb, settings):
    settings.INGEST_MAX_UNPACKED_BYTES = 1024 * MB
    document, _ = ingest(kb, "ratio.docx", hostile_files.docx_bomb(50 * MB))
    assert document.status == Document.Status.FAILED
    assert "word/document.xml unpacks" in document.error and "INGEST_MAX_COMPRESSION_RATIO" in document.error


def test_a_markdown_file_over_the_text_limit_fails_at_once(kb):
    document, took = ingest(kb, "emphasis.md", hostile_files.markdown_emphasis(9 * MB))
    assert document.status == Document.Status.FAILED
    assert "is 9.0 MB of text, over the 2.0 MB limit" in document.error and "INGEST_MAX_TEXT_BYTES" in document.error
    assert took < 30


def test_a_file_that_balloons_while_parsed_fails_on_the_readers_memory_limit(kb, settings):
    """Past the size check (raised here), the Markdown parser's tokens for `*a *a …` would take ~2.6 GB: the
    child process reading it hits its address-space limit and the document fails with that reason."""
    settings.INGEST_MAX_TEXT_BYTES = 50 * MB
    settings.INGEST_MAX_MEMORY_MB = 300
    document, took = ingest(kb, "emphasis.md", hostile_files.markdown_emphasis(6 * MB))
    assert document.status == Document.Status.FAILED
    assert "needs more than 300 MB of memory (INGEST_MAX_MEMORY_MB)" in document.error
    assert took < 60


def test_a_reader_that_takes_too_long_is_stopped(kb, settings):
    settings.INGEST_MAX_TEXT_BYTES = 50 * MB
    settings.INGEST_TIMEOUT_SECONDS = 1
    document, took = ingest(kb, "emphasis.md", hostile_files.markdown_emphasis(6 * MB))
    assert document.status == Document.Status.FAILED
    assert "took longer than 1 s (INGEST_TIMEOUT_SECONDS)" in document.error
    assert took < 10


def test_a_ten_megabyte_word_is_split_and_fails_on_the_passage_ceiling(kb, settings):
    settings.INGEST_MAX_TEXT_BYTES = 50 * MB
    document, took = ingest(kb, "word.txt", hostile_files.one_word(10 * MB))
    assert document.status == Document.Status.FAILED
    assert "makes 16,384 passages, over the 5,000 limit per document (INGEST_MAX_CHUNKS)" in document.error
    assert took < 60


def test_a_shared_page_tree_of_50_625_pages_fails_on_the_page_limit(kb):
    data = hostile_files.pdf_page_tree()
    assert len(data) < 2000
    document, took = ingest(kb, "tree.pdf", data)
    assert document.status == Document.Status.FAILED
    assert "has 50,625 pages, over the 2,000-page limit (INGEST_MAX_PAGES)" in document.error
    assert took < 30


def test_utf16_text_and_nul_bytes_are_ingested_as_text(kb):
    notepad, _ = ingest(kb, "notepad.txt", "Opening hours: 9–17, Saturday closed.\r\nCafé corner".encode("utf-16"))
    nul, _ = ingest(kb, "nul.txt", b"Delivery takes\x00 two days.\x00\x01 Returns are free.")
    assert (notepad.status, nul.status) == (Document.Status.READY, Document.Status.READY)
    assert notepad.chunks.get().text == "Opening hours: 9–17, Saturday closed.\nCafé corner"
    assert nul.chunks.get().text == "Delivery takes two days. Returns are free."


def test_an_undecodable_file_fails_once_with_what_to_do(kb):
    document, _ = pipeline.add_document(kb, filename="binary.txt", data=bytes(range(256)) * 64)
    tasks.ingest_document_task(document.pk)  # returns: a document error is not retried
    document.refresh_from_db()
    assert document.status == Document.Status.FAILED
    assert "save it as UTF-8" in document.error


def run_ingest_command(folder: Path, kb_name: str, **env: str) -> tuple[int, str, float, float]:
    """`manage.py ingest <folder>` as a real process: its exit code, output, seconds, and the peak resident memory
    of its largest process (itself or a reader child: wait4's ru_maxrss, in MB)."""
    env = {**os.environ, "DATABASE_URL": database_url(), "MEDIA_ROOT": str(settings.MEDIA_ROOT), **env}
    env.pop("TEST_DATABASE_NAME", None)
    started = time.monotonic()
    command = subprocess.Popen(
        [sys.executable, "manage.py", "ingest", str(folder), "--kb", kb_name],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = command.stdout.read().decode()
    _, status, usage = os.wait4(command.pid, 0)
    return os.waitstatus_to_exitcode(status), output, time.monotonic() - started, usage.ru_maxrss / 1024


@pytest.mark.slow
def test_the_ingest_command_reads_every_hostile_file_within_its_memory_bound(transactional_db, tmp_path):
    """`manage.py ingest` on all the hostile files at once, as a real process: each fails with its reason (the
    encodings are ingested), and no process of the tree grows past the bound docs/security.md states: the worker's
    own size (measured here on a harmless file: Django and the embedding model, which differ by backend) or
    INGEST_MAX_MEMORY_MB (400 here) for its reader, whichever is larger."""
    harmless, hostile = tmp_path / "harmless", tmp_path / "hostile"
    harmless.mkdir()
    hostile.mkdir()
    (harmless / "hours.txt").write_bytes(b"We are open from 9 to 17 on weekdays.")
    files = {
        "bomb.docx": hostile_files.docx_bomb(1100 * MB),
        "emphasis.md": hostile_files.markdown_emphasis(9 * MB),
        "word.txt": hostile_files.one_word(10 * MB),
        "tree.pdf": hostile_files.pdf_page_tree(),
        "notepad.txt": "Returns are free within 30 days.".encode("utf-16"),
    }
    for name, data in files.items():
        (hostile / name).write_bytes(data)
    limits = {"INGEST_MAX_TEXT_BYTES": str(50 * MB), "INGEST_MAX_MEMORY_MB": "400"}  # the bombs reach the parser

    code, output, _, worker_mb = run_ingest_command(harmless, "Harmless", **limits)
    assert code == 0, output
    code, output, took, peak_mb = run_ingest_command(hostile, "Hostile", **limits)

    assert code == 1, output
    assert "INGEST_MAX_UNPACKED_BYTES" in output and "INGEST_MAX_MEMORY_MB" in output, output
    assert "INGEST_MAX_CHUNKS" in output and "INGEST_MAX_PAGES" in output, output
    assert Document.objects.get(original_filename="notepad.txt").status == Document.Status.READY
    bound = max(worker_mb, 400) * 1.1 + 50  # allocator slack over the larger of the two
    assert peak_mb < bound, f"peak {peak_mb:.0f} MB; the worker alone {worker_mb:.0f} MB, the reader's limit 400 MB"
    assert took < 240, output
    print(f"peak {peak_mb:.0f} MB in {took:.1f} s; the worker alone {worker_mb:.0f} MB")


# --- never stuck --------------------------------------------------------------------------------------------
def job_status(document_id: int) -> str | None:
    """The status of the document's latest ingestion job, read in the test's own transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT status FROM procrastinate_jobs WHERE task_name = %s AND args->>'document_id' = %s "
            "ORDER BY id DESC LIMIT 1",
            [tasks.INGEST_TASK, str(document_id)],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def leave_stuck(document: Document, status: str = Document.Status.PROCESSING) -> None:
    """What a process that died mid-ingestion leaves: the status, untouched for longer than the stalled delay."""
    long_ago = timezone.now() - timedelta(seconds=settings.PROCRASTINATE_STALLED_AFTER_SECONDS + 5)
    Document.objects.filter(pk=document.pk).update(status=status, updated_at=long_ago)
    document.refresh_from_db()


def test_a_document_left_processing_by_a_dead_process_is_queued_again(kb):
    document, _ = pipeline.add_document(kb, filename="a.txt", data=b"Returns are free within 30 days.")
    leave_stuck(document)
    assert tasks.is_stuck(document)
    assert tasks.recover_stuck_documents(0) == 1
    document.refresh_from_db()
    assert document.status == Document.Status.PENDING
    assert job_status(document.pk) == "todo"
    assert not tasks.is_stuck(document)  # its job waits now
    assert tasks.recover_stuck_documents(0) == 0


def test_a_document_being_ingested_by_a_live_process_is_not_stuck(kb):
    document, _ = pipeline.add_document(kb, filename="b.txt", data=b"Delivery takes two days.")
    leave_stuck(document)
    with psycopg.connect(**conninfo(), autocommit=True) as other_process:
        other_process.execute("SELECT pg_advisory_lock(%s, %s)", (pipeline._LOCK_NAMESPACE, document.pk))
        assert not tasks.is_stuck(document)
        assert tasks.recover_stuck_documents(0) == 0


def test_uploading_a_stuck_file_again_indexes_it_again(kb, django_capture_on_commit_callbacks):
    data = b"Opening hours are 9 to 17."
    document, _ = pipeline.add_document(kb, filename="c.txt", data=data)
    leave_stuck(document, Document.Status.PENDING)
    again, created = pipeline.add_document(kb, filename="c.txt", data=data)
    assert (again.pk, created) == (document.pk, False)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = _queued(again, created, "c.txt")
    assert "stopped unfinished; indexing it again" in outcome.message
    assert job_status(document.pk) == "todo"
