"""Background ingestion on procrastinate, a durable queue kept in PostgreSQL.

Why procrastinate: jobs live in the same database as the documents (no extra
service to run or lose), it has a Django integration with migrations and a
`manage.py procrastinate worker` command, and workers send heartbeats so a job
whose worker died can be detected and retried.

A document ends ``ready`` or ``failed`` with its reason, never stuck:

1. ``ingest_document_task`` retries transient failures (the database unreachable,
   the embedding endpoint, storage) with exponential backoff, at most
   ``INGEST_MAX_ATTEMPTS`` runs; a fault of the document itself (a bad or hostile
   file, an encoding, a limit: ``DocumentError``, and content PostgreSQL refuses)
   fails it at once, for good, with the reason on the document.
2. ``retry_stalled_jobs`` runs every PROCRASTINATE_STALLED_CHECK_SECONDS on any
   worker and puts back to "todo" every job whose worker has not sent a
   heartbeat for PROCRASTINATE_STALLED_AFTER_SECONDS (killed, OOM, power loss):
   the official procrastinate recipe for stalled jobs. A run that killed its
   worker counts as an attempt: after the last one the job and its document are
   failed ("the ingestion worker stopped N times…") instead of killing the next
   worker. It lives on the "maintenance" queue: a worker started with `--queues`
   must include it.
3. ``recover_stuck_documents`` (same schedule) finds documents left ``pending`` or
   ``processing`` by a process that died without a job to retry (``manage.py
   ingest``, a lost enqueue): no waiting or running job, nobody holding the
   document's ingestion lock. They are queued again.
4. Ingestion is idempotent: it replaces all chunks of the document in one
   transaction under a per-document advisory lock, so running it twice (a retry
   racing a slow original) is harmless.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from procrastinate import RetryStrategy
from procrastinate.contrib.django import app
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Status

from knowledge.embeddings import EmbeddingError
from knowledge.ingest import pipeline
from knowledge.models import Document

logger = logging.getLogger(__name__)

INGEST_QUEUE = "ingest"
MAINTENANCE_QUEUE = "maintenance"
INGEST_TASK = "knowledge.ingest_document"
#: Runs of one ingestion job at most, whether a run failed transiently or killed its worker.
INGEST_MAX_ATTEMPTS = 4

#: Failures worth another run: the database or the embedding endpoint unreachable, storage briefly failing.
#: Everything else — DocumentError (the file), DataError (content PostgreSQL refuses) — fails the document at once.
TRANSIENT_ERRORS = (EmbeddingError, OperationalError, InterfaceError, OSError, TimeoutError)


@app.task(
    name=INGEST_TASK,
    queue=INGEST_QUEUE,
    retry=RetryStrategy(max_attempts=INGEST_MAX_ATTEMPTS - 1, exponential_wait=5, retry_exceptions=TRANSIENT_ERRORS),
)
def ingest_document_task(document_id: int) -> None:
    """Parse, chunk, embed and store one document. Safe to run any number of times."""
    document = Document.objects.filter(pk=document_id).first()
    if document is None:
        logger.info("Document %s was deleted before ingestion; nothing to do.", document_id)
        return
    try:
        pipeline.run_ingestion(document)
    except TRANSIENT_ERRORS:
        raise  # procrastinate retries with backoff; the error is already on the document
    except Exception:  # noqa: BLE001 - permanent (bad file): recorded on the document, retrying will not help
        logger.info("Document %s failed permanently: %s", document_id, document.error)


def enqueue_ingestion(document: Document) -> None:
    """Ingest in the background on the durable queue, once the surrounding transaction commits."""
    document.set_status(Document.Status.PENDING)
    transaction.on_commit(lambda: defer_ingestion(document.pk))


def defer_ingestion(document_id: int) -> None:
    """Queue ingestion; a job for this document that is still waiting is not queued twice."""
    try:
        # A savepoint: the refused duplicate must not abort a surrounding transaction.
        with transaction.atomic():
            ingest_document_task.configure(queueing_lock=f"ingest-document-{document_id}").defer(
                document_id=document_id
            )
    except AlreadyEnqueued:
        logger.info("Ingestion of document %s is already queued.", document_id)


# --- no document stuck ---------------------------------------------------------------------------------------
def has_live_job(document_id: int) -> bool:
    """Whether an ingestion job for the document waits or runs."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE task_name = %s AND status IN ('todo', 'doing') "
            "AND args->>'document_id' = %s)",
            [INGEST_TASK, str(document_id)],
        )
        return cursor.fetchone()[0]


def is_stuck(document: Document) -> bool:
    """Pending or processing, yet nothing will ever finish it: no job waits or runs for it, and no process
    holds its ingestion lock (a process that died released it with its connection)."""
    if document.status not in {Document.Status.PENDING, Document.Status.PROCESSING}:
        return False
    return not has_live_job(document.pk) and not pipeline.ingestion_running(document.pk)


def recover(document: Document) -> None:
    """Queue a stuck (or failed) document again."""
    logger.warning("Document %s (%s) was left %s by a process that stopped; queueing it again.",
                   document.pk, document, document.status)  # fmt: skip
    document.set_status(Document.Status.PENDING)
    defer_ingestion(document.pk)


def fail_document(document_id: int, reason: str) -> None:
    Document.objects.filter(pk=document_id).update(
        status=Document.Status.FAILED, error=reason, updated_at=timezone.now()
    )


def _stalled_runs_exhausted(document_id: int, runs: int) -> None:
    fail_document(
        document_id,
        f"The ingestion worker stopped {runs} times while reading this document (killed, or out of memory), so it "
        f"was not tried again. Check the file; upload it again or press Re-index to retry.",
    )


@app.periodic(cron=f"* * * * * */{settings.PROCRASTINATE_STALLED_CHECK_SECONDS}", periodic_id="stalled")
@app.task(
    name="knowledge.retry_stalled_jobs", queue=MAINTENANCE_QUEUE, queueing_lock="retry_stalled_jobs", pass_context=True
)
async def retry_stalled_jobs(context, timestamp: int) -> None:
    """Requeue jobs whose worker stopped sending heartbeats (it crashed or was killed); an ingestion job whose
    runs are used up is failed with its document instead."""
    manager = context.app.job_manager
    stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=settings.PROCRASTINATE_STALLED_AFTER_SECONDS)
    for job in stalled:
        runs = job.attempts + 1  # this run included: retry_job counts it
        if job.task_name == INGEST_TASK and runs >= INGEST_MAX_ATTEMPTS:
            logger.error("Job %s (%s) stalled on its run %d of %d; failing it and its document.",
                         job.id, job.task_name, runs, INGEST_MAX_ATTEMPTS)  # fmt: skip
            await manager.finish_job(job, status=Status.FAILED, delete_job=False)
            await sync_to_async(_stalled_runs_exhausted)(job.task_kwargs["document_id"], runs)
            continue
        logger.warning("Retrying job %s (%s): its worker stopped sending heartbeats.", job.id, job.task_name)
        await manager.retry_job(job)


@app.periodic(cron=f"* * * * * */{settings.PROCRASTINATE_STALLED_CHECK_SECONDS}", periodic_id="stuck-documents")
@app.task(name="knowledge.recover_stuck_documents", queue=MAINTENANCE_QUEUE, queueing_lock="recover_stuck_documents")
def recover_stuck_documents(timestamp: int) -> int:
    """Queue again every document left pending or processing by a process that died; returns how many. Only
    documents untouched for PROCRASTINATE_STALLED_AFTER_SECONDS: a fresh upload's job is deferred on commit."""
    quiet_since = timezone.now() - timedelta(seconds=settings.PROCRASTINATE_STALLED_AFTER_SECONDS)
    candidates = Document.objects.filter(
        status__in=[Document.Status.PENDING, Document.Status.PROCESSING], updated_at__lt=quiet_since
    )
    recovered = 0
    for document in candidates:
        if is_stuck(document):
            recover(document)
            recovered += 1
    return recovered
