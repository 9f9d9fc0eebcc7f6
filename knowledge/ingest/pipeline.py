"""From an uploaded file to searchable chunks: validate, store, parse, chunk, embed, swap in.

The write is the only step inside a transaction: old chunks are deleted and the
new ones inserted together, so readers see either the previous version or the
new one, never a half-ingested document. A failure anywhere records a clear
error on the document and leaves the previous chunks searchable.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.text import get_valid_filename

from chatsite import metrics
from knowledge import sentence_vectors
from knowledge.embeddings import get_embedder
from knowledge.ingest.chunking import ChunkDraft
from knowledge.ingest.isolation import parse_and_chunk
from knowledge.ingest.limits import Limits, human_size
from knowledge.ingest.parsers import ParsedDocument, mime_type_for
from knowledge.language import detect as detect_language
from knowledge.models import Chunk, Document, KnowledgeBase

logger = logging.getLogger(__name__)

# Namespace of the per-document advisory lock (first key of pg_advisory_lock(int, int)).
_LOCK_NAMESPACE = 0x6B62  # "kb"
PASTED_TEXT_FILENAME = "pasted.txt"
#: What the parsers and the chunker store for a file: bump when parsers or chunking change what is stored.
#: Ingestion skips a file whose checksum a knowledge base already holds, so a changed parser is only seen in a
#: new knowledge base (bench/answers.py names its own with this number) or after "Re-index".
#: 2: tables as Markdown rows under their header (HTML, PDF, Markdown, Word), cut between rows, header repeated.
PARSING_VERSION = 2


class ValidationError(ValueError):
    """An upload we refuse; the message is shown to the person who sent it."""


@dataclass
class IngestResult:
    path: Path
    document: Document | None
    status: str  # "ok" | "skipped" | "failed"
    error: str = ""
    created: bool = False


@dataclass
class PreparedDocument:
    """Everything ingestion computes before touching the database."""

    parsed: ParsedDocument
    drafts: list[ChunkDraft]
    embeddings: list[list[float]] = field(default_factory=list)
    # per draft: sentence_vectors.for_drafts(); empty = filled on first use
    sentences: list[tuple[list[dict], bytes | None, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


def get_or_create_knowledge_base(name: str) -> KnowledgeBase:
    name = name.strip() or settings.DEFAULT_KNOWLEDGE_BASE
    kb = KnowledgeBase.objects.filter(name=name).first()
    if kb is None:
        try:
            with transaction.atomic():
                kb = KnowledgeBase.objects.create(name=name)
        except IntegrityError:  # created concurrently by another process
            kb = KnowledgeBase.objects.get(name=name)
    return kb


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_upload(filename: str, data: bytes) -> None:
    """Refuse what we cannot or will not ingest, before anything is stored."""
    suffix = Path(filename).suffix.lower()
    allowed = [ext.lower() for ext in settings.UPLOAD_ALLOWED_EXTENSIONS]
    if suffix not in allowed:
        kind = f"a {suffix} file" if suffix else "a file without an extension"
        raise ValidationError(f"“{filename}” is {kind}; allowed types are {', '.join(allowed)}.")
    if not data:
        raise ValidationError(f"“{filename}” is empty.")
    if len(data) > settings.UPLOAD_MAX_BYTES:
        raise ValidationError(
            f"“{filename}” is {human_size(len(data))}; the limit is {human_size(settings.UPLOAD_MAX_BYTES)}."
        )


def _find_duplicate(kb: KnowledgeBase, digest: str) -> Document | None:
    return Document.objects.filter(knowledge_base=kb, checksum=digest).first()


def _add(
    kb: KnowledgeBase, *, filename: str, data: bytes, store_file: bool, uploaded_by, **fields
) -> tuple[Document, bool]:
    """Validate, dedupe by checksum, then insert (or return the twin a concurrent upload inserted first)."""
    validate_upload(filename, data)
    digest = checksum(data)
    existing = _find_duplicate(kb, digest)
    if existing is not None:
        return existing, False
    document = Document(
        knowledge_base=kb,
        mime_type=mime_type_for(filename),
        size_bytes=len(data),
        checksum=digest,
        uploaded_by=uploaded_by,
        status=Document.Status.PENDING,
        **fields,
    )
    try:
        with transaction.atomic():
            if store_file:
                document.file.save(get_valid_filename(filename) or "upload", ContentFile(data), save=False)
            document.save()
    except IntegrityError:
        if document.file:
            document.file.delete(save=False)
        existing = _find_duplicate(kb, digest)
        if existing is None:
            raise
        return existing, False
    return document, True


def add_document(
    kb: KnowledgeBase, *, filename: str, data: bytes, uploaded_by=None, title: str = "", source_url: str = ""
) -> tuple[Document, bool]:
    """Store an uploaded file as a pending Document; the same content twice returns the first one."""
    filename = Path(filename).name
    return _add(
        kb,
        filename=filename,
        data=data,
        store_file=True,
        uploaded_by=uploaded_by,
        title=title.strip(),
        original_filename=filename,
        source_url=source_url,
    )


def add_text(
    kb: KnowledgeBase, *, title: str, text: str, source_url: str = "", uploaded_by=None
) -> tuple[Document, bool]:
    """Store pasted text as a pending Document (ingested like a .txt file)."""
    text = text.strip()
    return _add(
        kb,
        filename=PASTED_TEXT_FILENAME,
        data=text.encode("utf-8"),
        store_file=False,
        uploaded_by=uploaded_by,
        title=title.strip(),
        text=text,
        source_url=source_url,
    )


# --- ingestion ---------------------------------------------------------------------


def read_source(document: Document) -> tuple[bytes, str]:
    """The document's bytes and the file name that decides its parser."""
    if document.file:
        with document.file.open("rb") as handle:
            return handle.read(), document.original_filename or Path(document.file.name).name
    return document.text.encode("utf-8"), PASTED_TEXT_FILENAME


def embedding_input(title: str, heading_path: str, text: str) -> str:
    """What the embedder sees: the heading (or title) as context, then the passage.

    A passage like "Click Return next to the item" means little alone; with
    "Returns > How to return an item" in front it lands near the questions it answers.
    """
    context = heading_path or title
    return f"{context}\n\n{text}" if context else text


def embed_drafts(title: str, drafts: list[ChunkDraft]) -> list[list[float]]:
    """Embed in batches of EMBEDDING_BATCH_SIZE so memory stays flat on long documents."""
    embedder = get_embedder()
    inputs = [embedding_input(title, d.heading_path, d.text) for d in drafts]
    batch = max(1, settings.EMBEDDING_BATCH_SIZE)
    vectors: list[list[float]] = []
    for start in range(0, len(inputs), batch):
        metrics.EMBEDDING_BATCH.labels(metrics.PASSAGES).observe(len(inputs[start : start + batch]))
        vectors.extend(embedder.embed_documents(inputs[start : start + batch]))
    return vectors


def prepare(data: bytes, filename: str) -> PreparedDocument:
    """Parse, chunk and embed: the slow, database-free part of ingestion. Parsing and chunking run in a child
    process bounded in memory and time (``knowledge.ingest.isolation``); only its drafts come back."""
    started = time.perf_counter()
    parsed, drafts = parse_and_chunk(
        data, filename, Limits.from_settings(), settings.CHUNK_MAX_TOKENS, settings.CHUNK_OVERLAP_TOKENS
    )
    chunked_at = parsed_at = time.perf_counter()
    embeddings = embed_drafts(parsed.title, drafts)
    embedded_at = time.perf_counter()
    sentences = sentence_vectors.for_drafts(drafts)  # what the extractive answerer quotes, embedded once
    sentences_at = time.perf_counter()
    return PreparedDocument(
        parsed,
        drafts,
        embeddings,
        sentences,
        timings={
            "parse_and_chunk": parsed_at - started,
            "embed": embedded_at - chunked_at,
            "embed_sentences": sentences_at - embedded_at,
        },
    )


def build_chunks(document: Document, prepared: PreparedDocument) -> list[Chunk]:
    max_heading = Chunk._meta.get_field("heading_path").max_length
    # A chunk's language from its own text; a table or a list of codes says too little: then the document's.
    whole = detect_language(" ".join(d.text for d in prepared.drafts)[:20000]) or ""
    return [
        Chunk(
            document=document,
            knowledge_base_id=document.knowledge_base_id,
            position=draft.position,
            text=draft.text,
            heading_path=draft.heading_path[:max_heading],
            page=draft.page,
            token_count=draft.token_count,
            language=detect_language(draft.text) or whole,
            embedding=vector,
            sentences=sentences,
            sentence_vectors=packed,
            sentence_model=model,
        )
        for draft, vector, (sentences, packed, model) in zip(
            prepared.drafts, prepared.embeddings, prepared.sentences or [([], None, "")] * len(prepared.drafts),
            strict=True,
        )
    ]


def store(document: Document, prepared: PreparedDocument) -> Document:
    """Swap the document's chunks for the new ones in ONE transaction and mark it ready."""
    max_title = Document._meta.get_field("title").max_length
    with transaction.atomic():
        Chunk.objects.filter(document=document).delete()
        Chunk.objects.bulk_create(build_chunks(document, prepared), batch_size=500)
        document.status = Document.Status.READY
        document.error = ""
        document.chunk_count = len(prepared.drafts)
        document.ingested_at = timezone.now()
        document.title = document.title or prepared.parsed.title[:max_title]
        if not document.mime_type:
            document.mime_type = prepared.parsed.mime_type
        document.save(
            update_fields=["status", "error", "chunk_count", "ingested_at", "title", "mime_type", "updated_at"]
        )
    return document


class _DocumentLock:
    """Session advisory lock per document: two workers never ingest the same document at once.

    The second one waits and then simply redoes the (idempotent) work. A killed
    worker's lock dies with its database connection.
    """

    def __init__(self, document_id: int) -> None:
        self.key = (_LOCK_NAMESPACE, int(document_id) % 2**31)

    def __enter__(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", self.key)

    def __exit__(self, *exc_info) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", self.key)

    def held_elsewhere(self) -> bool:
        """Whether another session holds the lock: some process is ingesting the document right now."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key)
            if not cursor.fetchone()[0]:
                return True
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", self.key)
        return False


def ingestion_running(document_id: int) -> bool:
    """Whether a live process (a worker, `manage.py ingest`) is ingesting the document now."""
    return _DocumentLock(document_id).held_elsewhere()


def run_ingestion(document: Document) -> Document:
    """Ingest and raise on failure (after recording it on the document). The queue task uses this."""
    with _DocumentLock(document.pk):
        document.set_status(Document.Status.PROCESSING)
        try:
            data, filename = read_source(document)
            prepared = prepare(data, filename)
            return store(document, prepared)
        except Exception as exc:
            message = str(exc) or exc.__class__.__name__
            logger.warning("Ingestion of document %s (%s) failed: %s", document.pk, document, message)
            document.set_status(Document.Status.FAILED, message)
            raise


def ingest_document(document: Document) -> Document:
    """Synchronous ingestion that never raises: the outcome is on ``document.status``/``error``."""
    try:
        run_ingestion(document)
    except Exception:  # noqa: BLE001 - recorded on the document by run_ingestion
        logger.debug("ingest_document(%s) failed", document.pk, exc_info=True)
    return document


# --- files and folders ------------------------------------------------------------------


def collect_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their allowed files, sorted."""
    allowed = {ext.lower() for ext in settings.UPLOAD_ALLOWED_EXTENSIONS}
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in allowed and not p.name.startswith(".")
                )
            )
        else:
            files.append(path)
    return files


def ingest_path(paths: list[Path], kb_name: str, *, force: bool = False) -> list[IngestResult]:
    """Synchronously ingest files and folders into the named knowledge base (created if missing).

    Content already ingested is skipped unless ``force``; a document that failed
    before is retried.
    """
    kb = get_or_create_knowledge_base(kb_name)
    results: list[IngestResult] = []
    for path in collect_files(paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            results.append(IngestResult(path, None, "failed", f"Could not read {path}: {exc.strerror or exc}"))
            continue
        try:
            document, created = add_document(kb, filename=path.name, data=data)
        except ValidationError as exc:
            results.append(IngestResult(path, None, "failed", str(exc)))
            continue
        if not created and document.status == Document.Status.READY and not force:
            results.append(IngestResult(path, document, "skipped", "", created=False))
            continue
        ingest_document(document)
        if document.status == Document.Status.READY:
            results.append(IngestResult(path, document, "ok", "", created))
        else:
            results.append(IngestResult(path, document, "failed", document.error, created))
    return results
