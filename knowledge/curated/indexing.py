"""A curated answer into its knowledge base and out of it, synchronously, at every save.

Why synchronous: staff who edit an answer expect the next customer to get the new text, so there is no queue
between the save and the index. The work is small (one chunk, a few question lines to embed: one embedding call).

The curated answer becomes a ``Document`` of kind ``curated`` with ONE chunk: its text is the answer (what the
answerer quotes), its heading the questions (so full-text search matches their words, weight A), its embedding the
questions and the answer together (so a question worded like one of them lands near it). The question lines are
also embedded one by one, as passages, on the ``CuratedAnswer`` (``question_vectors``): the answerer compares a
question with each of them on its own similarity scale (knowledge/answering/curated.py).
"""

from __future__ import annotations

import hashlib

import numpy as np
from django.db import transaction
from django.utils import timezone

from knowledge import sentence_vectors
from knowledge.embeddings import get_embedder
from knowledge.ingest.chunking import ChunkDraft
from knowledge.language import detect as detect_language
from knowledge.models import Chunk, CuratedAnswer, Document

#: The document's title in the admin's document list; customers see ``answering.curated.LABEL``, translated.
TITLE_PREFIX = "Answer from the support team"
_HEADING_SEPARATOR = " / "


def checksum_of(curated: CuratedAnswer) -> str:
    """Stable across edits (one document per curated answer) and never a file's SHA-256 of its content."""
    return hashlib.sha256(f"curated-answer:{curated.pk}".encode()).hexdigest()


def language_of(curated: CuratedAnswer) -> str:
    """The answer's language (what the customer reads), else its questions'; "" when neither can be told."""
    return detect_language(curated.answer) or detect_language(" ".join(curated.question_lines())) or ""


def index(curated: CuratedAnswer) -> Document | None:
    """Put ``curated`` in its knowledge base as it is now (replacing what was indexed), or take it out when it is
    inactive or has no question or answer. Returns its document (None when taken out)."""
    questions = curated.question_lines()
    answer = curated.answer.strip()
    if not (curated.active and questions and answer):
        remove(curated)
        return None
    embedder = get_embedder()
    heading = _HEADING_SEPARATOR.join(questions)[: Chunk._meta.get_field("heading_path").max_length]
    draft = ChunkDraft(position=0, text=answer, heading_path=heading, page=None, token_count=len(answer.split()))
    # One embedding call: the chunk (questions, then the answer) and each question line as a passage.
    vectors = embedder.embed_documents(["\n".join(questions) + "\n\n" + answer, *questions])
    [(units, packed, model)] = sentence_vectors.for_drafts([draft])
    language = language_of(curated)
    title = f"{TITLE_PREFIX}: {questions[0]}"[: Document._meta.get_field("title").max_length]
    with transaction.atomic():
        document = Document.objects.filter(pk=curated.document_id).first() if curated.document_id else None
        if document is None:
            document = Document(kind=Document.Kind.CURATED, checksum=checksum_of(curated), mime_type="text/markdown")
        document.knowledge_base_id = curated.knowledge_base_id
        document.title, document.text = title, answer
        document.size_bytes = len(answer.encode())
        document.status, document.error, document.chunk_count = Document.Status.READY, "", 1
        document.ingested_at = timezone.now()
        document.uploaded_by_id = curated.updated_by_id or curated.created_by_id
        document.save()
        Chunk.objects.filter(document=document).delete()
        Chunk.objects.create(
            document=document, knowledge_base_id=curated.knowledge_base_id, position=0, text=answer,
            heading_path=heading, token_count=draft.token_count, language=language, embedding=vectors[0],
            sentences=units, sentence_vectors=packed, sentence_model=model,
        )  # fmt: skip
        CuratedAnswer.objects.filter(pk=curated.pk).update(
            document=document,
            question_vectors=np.asarray(vectors[1:], dtype=np.float32).tobytes(),
            question_model=embedder.name,
        )
    curated.document = document
    return document


def remove(curated: CuratedAnswer) -> None:
    """Take ``curated`` out of the knowledge base: its document and chunk are deleted (it stays in the admin)."""
    if curated.document_id:
        Document.objects.filter(pk=curated.document_id, kind=Document.Kind.CURATED).delete()
        CuratedAnswer.objects.filter(pk=curated.pk).update(document=None)
        curated.document = None


def on_save(sender, instance: CuratedAnswer, raw: bool = False, **kwargs) -> None:
    """post_save: every save, from the admin or from code, re-indexes (fixtures loaded raw are left alone)."""
    if not raw:
        index(instance)


def on_delete(sender, instance: CuratedAnswer, **kwargs) -> None:
    """post_delete: the curated answer's document goes with it."""
    if instance.document_id:
        Document.objects.filter(pk=instance.document_id, kind=Document.Kind.CURATED).delete()
