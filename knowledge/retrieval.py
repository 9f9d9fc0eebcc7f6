"""Finding the passages that answer a question: hybrid (vector + full-text) search over chunks.

Why hybrid: embeddings find paraphrases that share no words with the article ("my parcel never
came" -> "late deliveries"), while PostgreSQL full-text search finds exact tokens embeddings blur
(product codes like ``NW-4410``, error codes like ``E42``). Both candidate lists (top
``RETRIEVAL_CANDIDATES`` each) are fused by reciprocal rank fusion, which needs no score
calibration between cosine similarities and ``ts_rank_cd`` values:

    rrf(chunk) = sum over the lists the chunk is in of 1 / (RETRIEVAL_RRF_K + rank)

The database part is one SQL statement (two CTEs + fusion + the join to documents) sent in one
round trip; its text is written in knowledge/retrieval_sql.py. This module decides what a search
reads (the reader's knowledge bases, the question's language and vector), sends the statement, and
turns its rows into passages (``undo_cjk_bigrams``: a CJK snippet back in its own characters).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse

from chatsite import metrics
from knowledge import cross_lingual
from knowledge.embeddings import get_embedder
from knowledge.inference import aquery_vector, query_vector
from knowledge.language import detect as detect_language
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.retrieval_sql import bind_params, build_sql, session_settings
from knowledge.sentences import LIST_MARKER
from knowledge.visibility import EVERYTHING, Reader, visible_knowledge_bases

MODES = ("hybrid", "vector", "keyword")
SNIPPET_CHARS = 200
_BIGRAM_JOINT = re.compile("\x1f.", re.S)  # see undo_cjk_bigrams


class UnknownKnowledgeBase(LookupError):
    """The named knowledge base does not exist; ``available`` lists the ones that do."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        listing = ", ".join(repr(n) for n in available) or "none yet"
        super().__init__(f"No knowledge base named {name!r}. Existing knowledge bases: {listing}.")


@dataclass
class Passage:
    """One retrieved chunk with what a citation needs and why it ranked where it did."""

    chunk_id: int
    document_id: int
    title: str
    source: str
    heading: str
    page: int | None
    text: str
    language: str  # Chunk.language: "" when it could not be told
    snippet: str
    url: str
    vector_score: float | None  # cosine similarity on the question's language's scale (knowledge/cross_lingual.py)
    keyword_score: float | None  # ts_rank_cd
    score: float  # what the ranking used: rrf (hybrid), similarity (vector), ts_rank_cd (keyword)
    vector_rank: int | None
    keyword_rank: int | None
    rrf_score: float | None = None
    kind: str = Document.Kind.FILE  # Document.kind: "curated" for an answer the support team wrote (knowledge/curated/)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    query: str
    mode: str
    passages: list[Passage]
    timings: dict[str, float] = field(default_factory=dict)  # embed_ms, db_ms, total_ms


# --- Public API -----------------------------------------------------------------------------------


def validate_query(query: str, mode: str) -> str:
    """The stripped query; ValueError with a message a user can act on otherwise."""
    if mode not in MODES:
        raise ValueError(f"Unknown search mode {mode!r}; use one of: {', '.join(MODES)}.")
    if not isinstance(query, str) or not query.strip():
        raise ValueError("The search query is empty: type a few words to search for.")
    return query.strip()


def resolve_knowledge_base(kb: KnowledgeBase | int | str | None, reader: Reader = EVERYTHING) -> int | None:
    """A KnowledgeBase, its id, its name (or slug), or None for all knowledge bases -> its id.

    A name ``reader`` may not see is unknown, exactly like one that does not exist (the error lists only the
    knowledge bases the reader may see); ``search_scope`` is what restricts a search to what the reader may see.
    """
    if kb is None:
        return None
    if isinstance(kb, KnowledgeBase):
        return kb.pk
    if isinstance(kb, int):
        return kb
    visible = visible_knowledge_bases(reader)
    found = visible.filter(name=kb).values_list("pk", flat=True).first()
    if found is None:
        found = visible.filter(slug=kb).values_list("pk", flat=True).first()
    if found is None:
        raise UnknownKnowledgeBase(kb, list(visible.values_list("name", flat=True)))
    return found


def search_scope(kb: KnowledgeBase | int | str | None, reader: Reader = None) -> int | list[int] | None:
    """Which knowledge bases a search of ``kb`` by ``reader`` reads (knowledge/visibility.py decides).

    None: all of them (only for ``EVERYTHING``); an id: that one; a list: the reader's visible ones (``kb=None``)
    — or ``[]`` when ``kb`` is one the reader may not see, whatever id, name or object it was named by: such a
    search returns no passages at all.
    """
    kb_id = resolve_knowledge_base(kb, reader)
    if reader is EVERYTHING:
        return kb_id
    visible = visible_knowledge_bases(reader)
    if kb_id is None:
        return list(visible.values_list("pk", flat=True))
    return kb_id if visible.filter(pk=kb_id).exists() else []


def embed_query(query: str) -> tuple[list[float], float]:
    """The query embedding and the milliseconds it took (not counting a first-use model load).

    Remembered per process (``inference.query_vector``): the extractive answerer scores sentences against the
    same vector right after retrieval, and customers ask the same questions.
    """
    get_embedder()  # a first-use model load is not query time
    started = time.perf_counter()
    vector = query_vector(query)
    return vector, (time.perf_counter() - started) * 1000


def fetch_passages(
    query: str,
    embedding: list[float] | None,
    *,
    kb_id: int | list[int] | None,
    k: int,
    mode: str = "hybrid",
    candidates: int | None = None,
    ef_search: int | None = None,
    iterative_scan: str | None = None,
    language: str | None = None,
    shifts: dict[str, float] | None = None,
) -> tuple[list[Passage], float]:
    """The database half of a search (one round trip); returns passages and db milliseconds.

    ``kb_id``: one knowledge base, a list of them (``search_scope``: an empty list finds nothing), or None for all.
    ``language`` and ``shifts``: the question's language and ``cross_lingual.shifts`` (None: not corrected).
    Public so bench/retrieval.py can time the database apart from the embedder.
    """
    if mode != "keyword" and embedding is None:
        raise ValueError(f"mode {mode!r} needs the query embedding")
    if isinstance(kb_id, list) and not kb_id:
        return [], 0.0  # no knowledge base this reader may see: nothing to search
    params = bind_params(
        query,
        embedding,
        kb_id=kb_id,
        k=int(k),
        candidates=max(int(candidates or settings.RETRIEVAL_CANDIDATES), int(k)),
        rrf_k=int(settings.RETRIEVAL_RRF_K),
        language=language,
        shifts=shifts,
    )
    prelude = session_settings(
        ef_search or settings.HNSW_EF_SEARCH,
        settings.HNSW_ITERATIVE_SCAN if iterative_scan is None else iterative_scan,
    )
    sql = build_sql(mode, filtered=kb_id is not None, several=isinstance(kb_id, list), other_languages=bool(language))
    started = time.perf_counter()
    # SET LOCAL only lasts until the end of the transaction, so the settings never leak into other
    # queries on a reused connection. savepoint=False: a read needs no savepoint round trip.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if isinstance(cursor.cursor, psycopg.ClientCursor):
            # Django's default client-side binding sends the text as one simple-protocol message:
            # the two SETs and the SELECT travel together; skip to the SELECT's result set.
            cursor.execute("; ".join([*prelude, sql]), params)
            for _ in prelude:
                cursor.nextset()
        else:  # server-side binding (OPTIONS server_side_binding=True) allows one statement per execute
            for statement in prelude:
                cursor.execute(statement)
            cursor.execute(sql, params)
        rows = cursor.fetchall()
    db_ms = (time.perf_counter() - started) * 1000
    return [_passage(row, mode) for row in rows], db_ms


def scoped_passages(
    query: str, embedding: list[float] | None, *, kb: KnowledgeBase | int | str | None, reader: Reader, k: int,
    mode: str,
) -> tuple[list[Passage], float]:
    """``search_scope`` then ``fetch_passages``, in one transaction: the visibility check rides along with the
    search instead of costing an answer a transaction of its own (the budget is five; docs/benchmarks.md). With a
    savepoint when nested (tests, callers' transactions): an unknown knowledge base's error must not doom theirs."""
    with transaction.atomic():
        kb_id = search_scope(kb, reader)
        language = detect_language(query)
        shifts = cross_lingual.shifts(embedding) if embedding is not None else None
        return fetch_passages(query, embedding, kb_id=kb_id, k=k, mode=mode, language=language, shifts=shifts)


def search(
    query: str,
    *,
    kb: KnowledgeBase | int | str | None = None,
    k: int | None = None,
    mode: str = "hybrid",
    reader: Reader = None,
) -> SearchResult:
    """The top ``k`` passages for ``query`` in ``kb`` (a KnowledgeBase, its id or name, or None for all).

    Only knowledge bases ``reader`` may see are searched (knowledge/visibility.py): a user, a user id, None for an
    anonymous visitor (the default: public knowledge bases only), ``EVERYTHING`` for operators' tools.
    """
    started = time.perf_counter()
    query = validate_query(query, mode)
    k = _top_k(k)
    embedding, embed_ms = embed_query(query) if mode != "keyword" else (None, 0.0)
    passages, db_ms = scoped_passages(query, embedding, kb=kb, reader=reader, k=k, mode=mode)
    return SearchResult(query, mode, passages, _timings(started, embed_ms, db_ms))


async def asearch(
    query: str,
    *,
    kb: KnowledgeBase | int | str | None = None,
    k: int | None = None,
    mode: str = "hybrid",
    reader: Reader = None,
    requester: str | None = None,
) -> SearchResult:
    """``search`` for async callers (consumers, the answering pipeline); ``reader`` as for ``search``.

    ``requester`` is whose turn the query embedding waits for (the customer asking: ``inference.QueryBatcher``
    serves customers in turn); None: a turn of its own.

    The two halves run in different places on purpose. Database work goes through Channels'
    ``database_sync_to_async``: thread-sensitive (Django connections are per thread and the ORM
    is only guaranteed safe there) and it closes stale connections around the call, which a
    long-lived Daphne process needs. The query embedding touches no database and is CPU-bound,
    so it runs in the default thread pool (``thread_sensitive=False``) instead of holding the
    single shared sync thread that every other consumer's database call queues behind.
    """
    started = time.perf_counter()
    query = validate_query(query, mode)
    k = _top_k(k)
    embed_ms = 0.0
    embedding = None
    if mode != "keyword":
        await sync_to_async(get_embedder, thread_sensitive=False)()  # a first-use model load is not query time
        embed_started = time.perf_counter()
        embedding = await aquery_vector(query, requester)  # the embedding thread, in the requester's turn
        embed_ms = (time.perf_counter() - embed_started) * 1000
    passages, db_ms = await database_sync_to_async(scoped_passages)(
        query, embedding, kb=kb, reader=reader, k=k, mode=mode
    )
    result = SearchResult(query, mode, passages, _timings(started, embed_ms, db_ms))
    metrics.RETRIEVAL.observe(result.timings["total_ms"] / 1000)
    if mode != "keyword":
        metrics.QUERY_EMBEDDING.observe(embed_ms / 1000)
    return result


# --- helpers --------------------------------------------------------------------------------------


def _top_k(k: int | None) -> int:
    k = settings.RETRIEVAL_TOP_K if k is None else int(k)
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}.")
    return k


def _timings(started: float, embed_ms: float, db_ms: float) -> dict[str, float]:
    total = (time.perf_counter() - started) * 1000
    return {"embed_ms": round(embed_ms, 2), "db_ms": round(db_ms, 2), "total_ms": round(total, 2)}


def undo_cjk_bigrams(text: str) -> str:
    """The original text of (a ts_headline of) ``cjk_bigrams(text)``: 退货␟货政␟政策 -> 退货政策.

    Each bigram after a U+001F separator (␟) repeats the last character before it, so dropping the
    separator with the character that follows it restores the run; U+001E only marks runs. Text
    without CJK has neither and comes back unchanged.
    """
    return _BIGRAM_JOINT.sub("", text).replace("\x1e", "")


def _plain(text: str) -> str:
    """One line of text without list markers ("1. ", "- "): a snippet reads like the document page, which shows
    lists as lists."""
    return " ".join(" ".join(LIST_MARKER.sub("", line) for line in text.split("\n")).split())


def _lead_snippet(text: str) -> str:
    """The first ~SNIPPET_CHARS characters of ``_plain(text)``, cut at a word boundary."""
    text = _plain(text)
    if len(text) <= SNIPPET_CHARS:
        return text
    cut = text.rfind(" ", 0, SNIPPET_CHARS)
    return text[: cut if cut > SNIPPET_CHARS // 2 else SNIPPET_CHARS].rstrip(" ,;:.") + " …"


def _passage(row: tuple, mode: str) -> Passage:
    (chunk_id, document_id, title, filename, source_url, heading, page, text, language, headline,
     vector_score, keyword_score, rrf_score, vector_rank, keyword_rank, kind) = row  # fmt: skip
    # An unsaved Document lends its naming rules (title fallback, `source`) without a query.
    document = Document(pk=document_id, title=title, original_filename=filename, source_url=source_url)
    vector_score = float(vector_score) if vector_score is not None else None
    keyword_score = float(keyword_score) if keyword_score is not None else None
    rrf_score = float(rrf_score) if rrf_score is not None else None
    score = {"hybrid": rrf_score, "vector": vector_score, "keyword": keyword_score}[mode]
    return Passage(
        chunk_id=chunk_id,
        document_id=document_id,
        title=str(document),
        source=document.source,
        heading=heading,
        page=page,
        text=text,
        language=language or "",
        snippet=_plain(undo_cjk_bigrams(headline)) if headline else _lead_snippet(text),
        url=reverse("knowledge:document", args=[document_id]) + f"#chunk-{chunk_id}",
        vector_score=vector_score,
        keyword_score=keyword_score,
        score=score if score is not None else 0.0,
        vector_rank=vector_rank,
        keyword_rank=keyword_rank,
        rrf_score=rrf_score,
        kind=kind or Document.Kind.FILE,
    )


def document_passages(document_ids: list[int], exclude: set[int]) -> list[Passage]:
    """The other chunks of these documents as passages (not ranked: scores None/0), in document order.

    Why: a help article is a handful of chunks and retrieval returns only some; the sentence that answers may sit
    in a sibling of the chunk that matched (the extractive answerer reads the whole of the best documents).
    """
    rows = (
        Chunk.objects.filter(document_id__in=document_ids, document__status=Document.Status.READY)
        .exclude(pk__in=exclude)
        .order_by("document_id", "position")
        .values_list("pk", "document_id", "document__title", "document__original_filename",
                     "document__source_url", "heading_path", "page", "text", "language", "document__kind")  # fmt: skip
    )
    order = {pk: i for i, pk in enumerate(document_ids)}
    found = [_passage((*row[:-1], None, None, None, None, None, None, row[-1]), "vector") for row in rows]
    return sorted(found, key=lambda p: order[p.document_id])
