"""`manage.py reembed`: rebuild every chunk's embedding with the current embedding model.

Run after changing EMBEDDING_BACKEND / EMBEDDING_MODEL. If the new model's
vector size (EMBEDDING_DIMENSIONS) differs from the column's, the column type
is changed and the HNSW index rebuilt in the SAME transaction as the new
vectors, so search never sees a half-converted table; the schema still matches
migration 0001, whose column size follows the setting.
"""

from __future__ import annotations

import re
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from knowledge import sentence_vectors
from knowledge.embeddings import get_embedder
from knowledge.ingest.pipeline import embedding_input
from knowledge.models import Chunk
from knowledge.sentences import units

HNSW_INDEX_NAME = "chunk_embedding_hnsw"


def embedding_column_dimensions() -> int | None:
    """The size declared on the embedding column in the database (None if unsized)."""
    table = Chunk._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname = 'embedding'",
            [table],
        )
        (type_name,) = cursor.fetchone()
    match = re.search(r"\((\d+)\)", type_name)
    return int(match.group(1)) if match else None


def _hnsw_index():
    return next(index for index in Chunk._meta.indexes if index.name == HNSW_INDEX_NAME)


def resize_embedding_column(dimensions: int) -> None:
    """Drop the HNSW index, retype the column (vectors cleared), and leave the index to be rebuilt."""
    table = connection.ops.quote_name(Chunk._meta.db_table)
    with connection.cursor() as cursor:
        # Deferred foreign-key checks queued earlier in this transaction would block ALTER TABLE.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with connection.schema_editor(atomic=False) as editor:
        editor.remove_index(Chunk, _hnsw_index())
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector({int(dimensions)}) USING NULL")


def create_hnsw_index() -> None:
    with connection.schema_editor(atomic=False) as editor:
        editor.add_index(Chunk, _hnsw_index())


class Command(BaseCommand):
    help = "Re-embed every chunk with the current embedder (and resize the vector column if the model changed)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Chunks read and written per batch.")

    def handle(self, *args, batch_size: int, **options) -> None:
        started = time.perf_counter()
        embedder = get_embedder()
        target = settings.EMBEDDING_DIMENSIONS
        current = embedding_column_dimensions()
        resize = current != target
        total = Chunk.objects.count()
        self.stdout.write(f"Re-embedding {total} chunks with {embedder.name} ({target} dimensions).")
        if resize:
            # One transaction: other sessions keep searching the old vectors until it commits.
            with transaction.atomic():
                resize_embedding_column(target)
                done = self._reembed(embedder, batch_size)
                create_hnsw_index()
            self.stdout.write(
                f"Changed the embedding column from vector({current}) to vector({target}) "
                f"and rebuilt the {HNSW_INDEX_NAME} index."
            )
        else:
            done = self._reembed(embedder, batch_size)
        self.stdout.write(f"Re-embedded {done} chunks in {time.perf_counter() - started:.1f} s.")

    def _reembed(self, embedder, batch_size: int) -> int:
        """Keyset pagination by id so batches stay cheap on large tables."""
        done = 0
        last_id = 0
        while True:
            batch = list(
                Chunk.objects.filter(id__gt=last_id)
                .select_related("document")
                .only("id", "text", "heading_path", "document__title")
                .order_by("id")[:batch_size]
            )
            if not batch:
                return done
            inputs = [embedding_input(c.document.title, c.heading_path, c.text) for c in batch]
            vectors = []
            step = max(1, settings.EMBEDDING_BATCH_SIZE)
            for start in range(0, len(inputs), step):
                vectors.extend(embedder.embed_documents(inputs[start : start + step]))
            found = [units(c.text) for c in batch]  # and the units the extractive answerer quotes
            matrices = sentence_vectors.embed_units([(f, c.heading_path) for f, c in zip(found, batch, strict=True)])
            for chunk, vector, quoted, matrix in zip(batch, vectors, found, matrices, strict=True):
                chunk.embedding = vector
                chunk.sentences = [u.as_dict() for u in quoted]
                chunk.sentence_vectors = sentence_vectors.pack(matrix)
                chunk.sentence_model = embedder.name
            with transaction.atomic():
                Chunk.objects.bulk_update(batch, ["embedding", "sentences", "sentence_vectors", "sentence_model"])
            done += len(batch)
            last_id = batch[-1].id
            self.stdout.write(f"  {done} chunks", ending="\r")
