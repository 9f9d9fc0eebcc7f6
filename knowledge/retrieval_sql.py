"""The text of the one statement a search sends: knowledge/retrieval.py decides what to search, this writes the SQL.

Why a module of its own: the statement is long and changes for reasons of its own (a CTE, a planner setting, a
measured tsquery), while knowledge/retrieval.py decides what a search reads (the reader's knowledge bases, the
question's language and vector) and turns rows into passages. Here the query text stands in one place with the
bind parameters its ``%(name)s`` placeholders name, so changing one side never means reading the other.

The statement: a vector CTE and a full-text CTE of candidates, fused by reciprocal rank fusion (the formula:
knowledge/retrieval.py) and joined to the documents, sent in one round trip together with the ``SET LOCAL``
planner settings for the HNSW scan (``session_settings``).

Chinese, Japanese and Korean have no spaces between words and PostgreSQL no parser for them, so both sides of the
full-text match go through the SQL functions of migration 0002: chunks are indexed with their CJK runs as character
bigrams (``cjk_bigrams``), and a query's CJK bigrams are OR-ed (``cjk_websearch_to_tsquery``, which is plain
``websearch_to_tsquery`` for a query without CJK, so English search is unchanged). ts_headline runs over the bigram
text; ``retrieval.undo_cjk_bigrams`` turns the snippet back into the original characters.
"""

from __future__ import annotations

import json
from typing import Any

#: ts_headline options: plain text (no markup to escape downstream), a couple of short fragments.
HEADLINE_OPTIONS = 'MaxFragments=2, MaxWords=30, MinWords=12, FragmentDelimiter=" … ", StartSel="", StopSel=""'

# Each side orders and limits in an inner query (so the HNSW / GIN index drives it), then numbers
# its rows. With hnsw.iterative_scan = relaxed_order the index may return rows slightly out of
# order; row_number() OVER (ORDER BY distance) re-sorts the few candidates exactly.

_VECTOR_CTE = """
vector_hits AS (
    SELECT id, vector_score, row_number() OVER (ORDER BY vector_score DESC, id) AS vector_rank
    FROM (
        SELECT id, 1 - distance + COALESCE((%(shifts)s::jsonb ->> language)::float8, 0) AS vector_score
        FROM (
            (SELECT c.id, c.language, c.embedding <=> %(embedding)s::vector AS distance
             FROM knowledge_chunk c
             WHERE c.embedding IS NOT NULL {kb_filter}
             ORDER BY distance
             LIMIT %(candidates)s)
            {other_languages}
        ) AS nearest
    ) AS calibrated
)"""

#: The nearest passages in languages other than the question's, searched apart (knowledge/cross_lingual.py): a
#: question's own language is closer to it whatever the topic, so its passages alone could fill the candidates.
#: Only when the scope holds other languages (a one-time filter: no index scan at all otherwise).
_OTHER_LANGUAGES = """
            UNION
            (SELECT c.id, c.language, c.embedding <=> %(embedding)s::vector AS distance
             FROM knowledge_chunk c
             WHERE c.embedding IS NOT NULL {kb_filter} AND c.language <> %(language)s
                   AND (SELECT share FROM language_share) < 1
             ORDER BY distance
             LIMIT %(candidates)s)"""

#: The share of the scope's passages written in the question's language: what the lexical side can see. A
#: Chinese question's words match only Chinese passages, so its full-text ranks say nothing about the English
#: ones; in reciprocal rank fusion even a small weight on them lifts one Chinese article over every English one.
#: The full-text ranks count fully when the whole scope is in the question's language and not at all when half
#: of it or less is: ``lexical_weight = max(0, 2 * share - 1)`` (knowledge/cross_lingual.py). An unknown
#: language ("E42?") counts as seeing everything.
_SHARE_CTE = """
language_share AS (
    SELECT CASE WHEN %(language)s::text IS NULL THEN 1.0
                ELSE count(*) FILTER (WHERE c.language = %(language)s)::float8 / GREATEST(count(*), 1) END AS share
    FROM knowledge_chunk c
    WHERE TRUE {kb_filter}
), lexical AS (
    SELECT GREATEST(0.0, 2 * share - 1) AS weight FROM language_share
)"""

#: The full-text query: ``websearch_to_tsquery`` ANDs the question's terms. OR-ing them (ranked by ``ts_rank_cd``)
#: was measured: retrieval hit@1 0.70 -> 0.80 on the answer set's dev part but 24 -> 21 of 28 on the demo
#: query table (docs/demo_kb.md) with multilingual-e5 and 26 -> 24 with MiniLM, and no better answers; kept AND.
_TSQUERY = "cjk_websearch_to_tsquery('english', %(query)s)"

_KEYWORD_CTE = """
keyword_hits AS (
    SELECT id, keyword_score, row_number() OVER (ORDER BY keyword_score DESC, id) AS keyword_rank
    FROM (
        SELECT c.id, ts_rank_cd(c.search_vector, {tsquery}) AS keyword_score
        FROM knowledge_chunk c
        WHERE c.search_vector @@ {tsquery} {kb_filter}
        ORDER BY keyword_score DESC
        LIMIT %(candidates)s
    ) AS matching
)"""

_FUSED = {
    "hybrid": """
fused AS (
    SELECT COALESCE(v.id, kw.id) AS id, v.vector_score, v.vector_rank, kw.keyword_score, kw.keyword_rank,
           COALESCE(1.0 / (%(rrf_k)s + v.vector_rank), 0)
               + COALESCE(1.0 / (%(rrf_k)s + kw.keyword_rank), 0) * (SELECT weight FROM lexical) AS rrf_score
    FROM vector_hits v FULL OUTER JOIN keyword_hits kw ON kw.id = v.id
    ORDER BY rrf_score DESC, v.vector_rank NULLS LAST, kw.keyword_rank NULLS LAST
    LIMIT %(k)s
)""",
    "vector": """
fused AS (
    SELECT id, vector_score, vector_rank, NULL::real AS keyword_score, NULL::bigint AS keyword_rank,
           NULL::numeric AS rrf_score
    FROM vector_hits ORDER BY vector_rank LIMIT %(k)s
)""",
    "keyword": """
fused AS (
    SELECT id, NULL::double precision AS vector_score, NULL::bigint AS vector_rank, keyword_score, keyword_rank,
           NULL::numeric AS rrf_score
    FROM keyword_hits ORDER BY keyword_rank LIMIT %(k)s
)""",
}

_SELECT = """
SELECT f.id, c.document_id, d.title, d.original_filename, d.source_url, c.heading_path, c.page, c.text, c.language,
       CASE WHEN f.keyword_rank IS NOT NULL
            THEN ts_headline('english', cjk_bigrams(c.text), {tsquery},
                             %(headline)s)
       END AS headline,
       f.vector_score, f.keyword_score, f.rrf_score, f.vector_rank, f.keyword_rank, d.kind
FROM fused f
JOIN knowledge_chunk c ON c.id = f.id
JOIN knowledge_document d ON d.id = c.document_id
ORDER BY f.rrf_score DESC NULLS LAST, f.vector_rank NULLS LAST, f.keyword_rank NULLS LAST"""


def build_sql(mode: str, *, filtered: bool, several: bool = False, other_languages: bool = False) -> str:
    """The one statement for ``mode``; the KB filter is spliced in only when used (no `$1 IS NULL OR`).

    ``several``: ``%(kb_id)s`` is a list of knowledge-base ids (the ones a reader may see), not one id.
    ``other_languages``: the question's language is known, so passages in other languages are also searched apart.
    """
    kb_filter = ""
    if filtered:
        kb_filter = (
            "AND c.knowledge_base_id = ANY(%(kb_id)s::bigint[])" if several else "AND c.knowledge_base_id = %(kb_id)s"
        )
    ctes = [_SHARE_CTE.replace("{kb_filter}", kb_filter)]
    if mode in ("hybrid", "vector"):
        other = _OTHER_LANGUAGES.replace("{kb_filter}", kb_filter) if other_languages else ""
        ctes.append(_VECTOR_CTE.replace("{other_languages}", other).replace("{kb_filter}", kb_filter))
    if mode in ("hybrid", "keyword"):
        ctes.append(_KEYWORD_CTE.replace("{kb_filter}", kb_filter))
    ctes.append(_FUSED[mode])
    return ("WITH" + ",".join(ctes) + _SELECT).replace("{tsquery}", _TSQUERY)


def session_settings(ef_search: int, iterative_scan: str) -> list[str]:
    """The SET LOCAL statements; they cannot take bind parameters, so the values are validated here."""
    statements = [f"SET LOCAL hnsw.ef_search = {int(ef_search)}"]
    if iterative_scan:  # empty: leave it unset (pgvector < 0.8 does not know the setting)
        if iterative_scan not in ("off", "relaxed_order", "strict_order"):
            raise ValueError(f"hnsw.iterative_scan must be off, relaxed_order or strict_order, not {iterative_scan!r}")
        statements.append(f"SET LOCAL hnsw.iterative_scan = {iterative_scan}")
    return statements


def bind_params(
    query: str,
    embedding: list[float] | None,
    *,
    kb_id: int | list[int] | None,
    k: int,
    candidates: int,
    rrf_k: int,
    language: str | None,
    shifts: dict[str, float] | None,
) -> dict[str, Any]:
    """The values of the statement's ``%(name)s`` placeholders, encoded as the SQL casts them."""
    return {
        "query": query,
        "embedding": _vector_literal(embedding) if embedding is not None else None,
        "kb_id": kb_id,
        "k": k,
        "candidates": candidates,
        "rrf_k": rrf_k,
        "headline": HEADLINE_OPTIONS,
        "language": language,
        "shifts": json.dumps(shifts or {}),
    }


def _vector_literal(embedding: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in embedding) + "]"
