"""The durable queue: a job whose worker is killed mid-task is retried by another worker, never lost.

Real parts only: `manage.py procrastinate worker` subprocesses against the test database, SIGKILL,
and PostgreSQL advisory locks. The test holds the per-document ingestion lock so the first worker
is provably *inside* the task (blocked waiting for the lock) when it is killed.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from knowledge import tasks
from knowledge.ingest import pipeline
from knowledge.models import Document

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).parent / "samples"


def database_url() -> str:
    """libpq URL of the test database (the embedded server's host is a unix-socket directory)."""
    params = conninfo()
    auth = f"{quote(params.get('user') or '', safe='')}:{quote(params.get('password') or '', safe='')}"
    host, port, name = params.get("host") or "localhost", params.get("port"), params["dbname"]
    if host.startswith("/"):
        return f"postgresql://{auth}@/{name}?host={quote(host, safe='/')}" + (f"&port={port}" if port else "")
    return f"postgresql://{auth}@{host}:{port or 5432}/{name}"


def conninfo() -> dict:
    params = connection.get_connection_params()
    return {k: v for k, v in params.items() if k in {"dbname", "user", "password", "host", "port"}}


def start_worker(log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        # Small thresholds so the test takes seconds, not minutes.
        "PROCRASTINATE_HEARTBEAT_SECONDS": "0.5",
        "PROCRASTINATE_STALLED_AFTER_SECONDS": "3",
        "PROCRASTINATE_STALLED_CHECK_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    env.pop("TEST_DATABASE_NAME", None)
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "manage.py", "procrastinate", "worker"],
        cwd=ROOT,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )


def stop(workers: list[subprocess.Popen]) -> None:
    """SIGTERM each worker still running (a graceful stop), SIGKILL one that does not stop within 20 s."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def wait_for(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    pytest.fail(f"Timed out after {timeout:.0f}s waiting for {what}. Worker log tail:\n{tail}")


def query_one(sql: str, params=()):
    with psycopg.connect(**conninfo(), autocommit=True) as conn:
        return conn.execute(sql, params).fetchone()


def ingestion_job(document_id: int):
    return query_one(
        "SELECT id, status, attempts FROM procrastinate_jobs WHERE task_name = 'knowledge.ingest_document' "
        "AND (args->>'document_id')::bigint = %s ORDER BY id DESC LIMIT 1",
        (document_id,),
    )


def worker_waits_on_document_lock(document_id: int) -> bool:
    row = query_one(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s AND objid = %s",
        (pipeline._LOCK_NAMESPACE, document_id),
    )
    return row[0] > 0


@pytest.mark.slow
def test_job_of_a_killed_worker_is_retried_and_completes(transactional_db, tmp_path):
    kb = pipeline.get_or_create_knowledge_base("Queue test")
    document, _ = pipeline.add_document(kb, filename="returns.md", data=(SAMPLES / "returns.md").read_bytes())
    log = tmp_path / "worker.log"

    blocker = psycopg.connect(**conninfo(), autocommit=True)
    workers: list[subprocess.Popen] = []
    try:
        blocker.execute("SELECT pg_advisory_lock(%s, %s)", (pipeline._LOCK_NAMESPACE, document.pk))
        tasks.enqueue_ingestion(document)  # autocommit: deferred at once
        job_id, status, attempts = ingestion_job(document.pk)
        assert (status, attempts) == ("todo", 0)

        workers.append(start_worker(log))
        wait_for(lambda: worker_waits_on_document_lock(document.pk), 90, "the worker to start the job", log)
        assert ingestion_job(document.pk)[1] == "doing"

        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        blocker.close()  # nobody holds the lock now; the job sits in "doing" with a dead worker
        assert ingestion_job(document.pk)[:2] == (job_id, "doing")

        workers.append(start_worker(log))
        wait_for(
            lambda: Document.objects.filter(pk=document.pk, status=Document.Status.READY).exists(),
            180,
            "the retried job to ingest the document",
            log,
        )
        wait_for(lambda: ingestion_job(document.pk)[1] == "succeeded", 30, "the job to be marked succeeded", log)
    finally:
        blocker.close()
        stop(workers)

    same_job, status, attempts = ingestion_job(document.pk)
    # The same job (not lost, not duplicated), run twice: killed once, then succeeded (finishing counts too).
    assert (same_job, status, attempts) == (job_id, "succeeded", 2)
    document.refresh_from_db()
    assert document.chunk_count == document.chunks.count() == 4
    assert log.read_text(errors="replace").count(f"Retrying job {job_id} ") == 1


def test_enqueue_defers_one_job_per_waiting_document(db, django_capture_on_commit_callbacks):
    kb = pipeline.get_or_create_knowledge_base("Queue test")
    document, _ = pipeline.add_document(kb, filename="contact.txt", data=(SAMPLES / "contact.txt").read_bytes())
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        tasks.enqueue_ingestion(document)
        assert ingestion_job(document.pk) is None  # nothing is queued before the commit (seen from outside)
    assert len(callbacks) == 1
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT queue_name, status FROM procrastinate_jobs WHERE (args->>'document_id')::bigint = %s",
            [document.pk],
        )
        assert cursor.fetchall() == [("ingest", "todo")]
    with django_capture_on_commit_callbacks(execute=True):
        tasks.enqueue_ingestion(document)  # clicked "re-index" twice: still one waiting job
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE (args->>'document_id')::bigint = %s", [document.pk]
        )
        assert cursor.fetchone()[0] == 1
    document.refresh_from_db()
    assert document.status == Document.Status.PENDING


def test_demo_kb_fixture_in_a_transactional_test(transactional_db, demo_kb):
    """The shared fixture restores the demo KB after transactional tests flushed it."""
    documents = demo_kb.documents.all()
    assert documents.count() >= 15
    assert not documents.exclude(status=Document.Status.READY).exists()
    assert all(d.chunk_count == d.chunks.count() > 0 for d in documents)
    assert documents.filter(mime_type="application/pdf").exists()


def test_supervised_worker_is_started_again_when_it_exits(transactional_db, tmp_path):
    """`manage.py supervise_worker` (what `make run` starts): a worker that dies (here SIGKILL; in production a
    database outage) is started again; SIGTERM stops the worker and the supervisor."""
    log = tmp_path / "supervisor.log"
    env = {**os.environ, "DATABASE_URL": database_url(), "MEDIA_ROOT": str(settings.MEDIA_ROOT)}
    env.pop("TEST_DATABASE_NAME", None)
    supervisor = subprocess.Popen(
        [sys.executable, "manage.py", "supervise_worker", "--restart-delay", "0.2"],
        cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )

    def worker_pids() -> list[int]:
        return [int(pid) for pid in re.findall(r"started the worker \(pid (\d+)\)", log.read_text())]

    try:
        wait_for(lambda: len(worker_pids()) == 1, 60, "the supervisor to start a worker", log)
        first = worker_pids()[0]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(worker_pids()) == 2, 60, "the supervisor to start the worker again", log)
        second = worker_pids()[1]
        assert second != first and "exited with status -9" in log.read_text()
        os.kill(second, 0)  # alive
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(timeout=30)
    assert supervisor.returncode == 0
    assert not pid_alive(second)  # the supervisor stopped its worker and waited for it


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_job_that_kills_its_worker_on_its_last_run_fails_with_its_document(transactional_db, tmp_path):
    """No retry loop: the stalled-job check counts a run that killed its worker as an attempt, and after the last
    one (INGEST_MAX_ATTEMPTS) fails the job and the document, with a reason staff can read."""
    kb = pipeline.get_or_create_knowledge_base("Queue test")
    document, _ = pipeline.add_document(kb, filename="returns.md", data=(SAMPLES / "returns.md").read_bytes())
    log = tmp_path / "worker.log"
    blocker = psycopg.connect(**conninfo(), autocommit=True)
    workers: list[subprocess.Popen] = []
    try:
        blocker.execute("SELECT pg_advisory_lock(%s, %s)", (pipeline._LOCK_NAMESPACE, document.pk))
        tasks.enqueue_ingestion(document)
        job_id = ingestion_job(document.pk)[0]
        # Three runs already ended (killed or failed transiently): this is the last one.
        query_one(
            "UPDATE procrastinate_jobs SET attempts = %s WHERE id = %s RETURNING id", (tasks.INGEST_MAX_ATTEMPTS - 1, job_id)
        )
        workers.append(start_worker(log))
        wait_for(lambda: worker_waits_on_document_lock(document.pk), 90, "the worker to start the job", log)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=10)
        blocker.close()

        workers.append(start_worker(log))
        wait_for(lambda: ingestion_job(document.pk)[1] == "failed", 60, "the stalled job to be failed", log)
        wait_for(
            lambda: Document.objects.filter(pk=document.pk, status=Document.Status.FAILED).exists(),
            10, "the document to be failed", log,
        )  # fmt: skip
        time.sleep(3)  # a stalled check or two later: still failed, never run again
    finally:
        blocker.close()
        stop(workers)

    assert ingestion_job(document.pk)[:2] == (job_id, "failed")
    document.refresh_from_db()
    assert document.status == Document.Status.FAILED
    assert f"stopped {tasks.INGEST_MAX_ATTEMPTS} times" in document.error
    assert f"Retrying job {job_id} " not in log.read_text(errors="replace")
    assert document.chunks.count() == 0
