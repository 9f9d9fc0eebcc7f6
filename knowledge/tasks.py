"""Background ingestion on procrastinate, a durable queue kept in PostgreSQL.

Why procrastinate: jobs live in the same database as the documents (no extra
service to run or lose), it has a Django integration with migrations and a
`manage.py procrastinate worker` command, and workers send heartbeats so a job
whose worker died can be detected and retried.

Crash safety, three layers:
1. ``retry_stalled_jobs`` runs every PROCRASTINATE_STALLED_CHECK_SECONDS on any
   worker and puts back to "todo" every job whose worker has not sent a
   heartbeat for PROCRASTINATE_STALLED_AFTER_SECONDS (killed, OOM, power loss):
   the official procrastinate recipe for stalled jobs. It lives on the
   "maintenance" queue: a worker started with `--queues` must include it.
2. ``ingest_document_task`` retries transient failures (database, embedding
   endpoint, storage) with exponential backoff; a bad file fails once, for good,
   with the reason on the document.
3. Ingestion is idempotent: it replaces all chunks of the document in one
   transaction under a per-document advisory lock, so running it twice (a retry
   racing a slow original) is harmless.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError, transaction
from procrastinate import RetryStrategy
from procrastinate.contrib.django import app
from procrastinate.exceptions import AlreadyEnqueued

from knowledge.embeddings import EmbeddingError
from knowledge.models import Document

logger = logging.getLogger(__name__)

INGEST_QUEUE = "ingest"
MAINTENANCE_QUEUE = "maintenance"

TRANSIENT_ERRORS = {EmbeddingError, DatabaseError, OSError, TimeoutError}


@app.task(
    name="knowledge.ingest_document",
    queue=INGEST_QUEUE,
    retry=RetryStrategy(max_attempts=4, exponential_wait=5, retry_exceptions=TRANSIENT_ERRORS),
)
def ingest_document_task(document_id: int) -> None:
    """Parse, chunk, embed and store one document. Safe to run any number of times."""
    from knowledge.ingest.pipeline import run_ingestion
    document = Document.objects.filter(pk=document_id).first()
    if document is None:
        logger.info("Document %s was deleted before ingestion; nothing to do.", document_id)
        return
    try:
        run_ingestion(document)
    except tuple(TRANSIENT_ERRORS):
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


@app.periodic(cron=f"* * * * * */{settings.PROCRASTINATE_STALLED_CHECK_SECONDS}", periodic_id="stalled")
@app.task(
    name="knowledge.retry_stalled_jobs", queue=MAINTENANCE_QUEUE, queueing_lock="retry_stalled_jobs", pass_context=True
)
async def retry_stalled_jobs(context, timestamp: int) -> None:
    """Requeue jobs whose worker stopped sending heartbeats (it crashed or was killed)."""
    manager = context.app.job_manager
    stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=settings.PROCRASTINATE_STALLED_AFTER_SECONDS)
    for job in stalled:
        logger.warning("Retrying job %s (%s): its worker stopped sending heartbeats.", job.id, job.task_name)
        await manager.retry_job(job)
