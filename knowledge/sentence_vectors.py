"""The quotable units of each chunk with their vectors, stored on the chunk (``Chunk.sentences`` & co.).

Why stored: scoring a passage's sentences against a question needs their vectors; embedding them per question
was most of an answer's CPU. They are computed once at ingestion (``for_drafts``), and a chunk whose stored
units are missing, stale (the splitting rules changed) or from another embedding model is filled on first use
(``for_chunks``) in one batched call for all such chunks of the question, then saved.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chatsite import metrics
from knowledge.embeddings import get_embedder
from knowledge.models import Chunk
from knowledge.sentences import Unit, units

logger = logging.getLogger(__name__)


@dataclass
class ChunkSentences:
    """A chunk's units and their L2-normalised vectors (``vectors[i]`` belongs to ``units[i]``)."""

    units: list[Unit]
    vectors: np.ndarray  # shape (len(units), dimensions), float32


def embedding_text(unit: Unit, heading_path: str) -> str:
    """What is embedded for a unit: the section it sits in, then the unit ("How to start a return: Sign in…")."""
    section = heading_path.rsplit(">", 1)[-1].strip() if heading_path else ""
    return f"{section}: {unit.text}" if section else unit.text


def pack(vectors: np.ndarray) -> bytes:
    return np.asarray(vectors, dtype=np.float32).tobytes()


def unpack(data: bytes | memoryview | None, count: int) -> np.ndarray | None:
    """The stored matrix, or None if it does not hold ``count`` rows of the current size."""
    if data is None:
        return None
    matrix = np.frombuffer(bytes(data), dtype=np.float32)
    dimensions = get_embedder().dimensions
    if count == 0 or matrix.size != count * dimensions:
        return None if count else np.zeros((0, dimensions), dtype=np.float32)
    return matrix.reshape(count, dimensions)


def embed_units(groups: Sequence[tuple[list[Unit], str]]) -> list[np.ndarray]:
    """Vectors for several chunks' units (each with its heading path) in one batched embedding call."""
    embedder = get_embedder()
    texts = [embedding_text(unit, heading) for found, heading in groups for unit in found]
    if texts:
        metrics.EMBEDDING_BATCH.labels(metrics.SENTENCES).observe(len(texts))
    flat = np.asarray(embedder.embed_documents(texts), dtype=np.float32) if texts else np.zeros((0, 0))
    matrices, start = [], 0
    for found, _ in groups:
        matrices.append(flat[start : start + len(found)].reshape(len(found), embedder.dimensions))
        start += len(found)
    return matrices


def for_drafts(drafts: Sequence) -> list[tuple[list[dict], bytes, str]]:
    """At ingestion: (sentences, sentence_vectors, sentence_model) for each chunk draft."""
    groups = [(units(d.text), d.heading_path) for d in drafts]
    name = get_embedder().name
    return [
        ([u.as_dict() for u in found], pack(matrix), name)
        for (found, _), matrix in zip(groups, embed_units(groups), strict=True)
    ]


def for_chunks(chunk_ids: Sequence[int]) -> dict[int, ChunkSentences]:
    """The units and vectors of these chunks, filling (and saving) what is missing or stale. Synchronous."""
    name = get_embedder().name
    rows = Chunk.objects.filter(pk__in=list(chunk_ids)).values_list(
        "pk", "text", "heading_path", "sentences", "sentence_vectors", "sentence_model"
    )
    found: dict[int, ChunkSentences] = {}
    missing: list[tuple[int, list[Unit], str]] = []
    for pk, text, heading, stored, data, model in rows:
        current = units(text)
        vectors = unpack(data, len(current)) if model == name else None
        if vectors is not None and [Unit.from_dict(u) for u in stored or []] == current:
            found[pk] = ChunkSentences(current, vectors)
        else:
            missing.append((pk, current, heading))
    if missing:
        matrices = embed_units([(current, heading) for _, current, heading in missing])
        for (pk, current, _), matrix in zip(missing, matrices, strict=True):
            found[pk] = ChunkSentences(current, matrix)
            Chunk.objects.filter(pk=pk).update(
                sentences=[u.as_dict() for u in current], sentence_vectors=pack(matrix), sentence_model=name
            )
        logger.info("embedded the sentences of %d chunks on first use", len(missing))
    return found
