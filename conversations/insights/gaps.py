"""Knowledge gaps grouped by what they ask: the questions the knowledge base did not answer (nothing found, or the
customer rated the answer 👎), so staff write one answer for twenty ways of asking the same thing.

The most recent ``GAP_LIMIT`` gaps of the period are read (one statement) and grouped in numpy by the cosine of their
stored question embeddings: each question's neighbours are those at least ``SIMILARITY`` close; the question with
the most neighbours still ungrouped leads a group of them, then the next, until none is left (greedy, so a group
is what is close to its leader, O(n²) for n ≤ ``GAP_LIMIT``: 2 000 gaps are a 2 000 × 2 000 product, ~30 ms).
A gap whose embedding could not be computed is grouped with the others of exactly the same normalised text.
Each group names the knowledge base most of its gaps came from, links to write the answer (the curated answer's
add page, its questions filled in) and to edit the article its answers cited most.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

import numpy as np
from django.db.models import BinaryField, F, Func
from django.urls import reverse

from conversations.insights.period import Period
from conversations.models import KnowledgeGap, Message
from knowledge.models import Document

#: Gaps read per page view: the most recent of the period (the page says so when there were more).
GAP_LIMIT = 2000
#: Questions at least this similar ask the same thing. Measured with multilingual-e5-small (the default model):
#: paraphrases and translations of a question are 0.86–0.98 apart, unrelated support questions 0.72–0.84; two related
#: questions in one language (shipping to Iceland, delivery time to Austria) 0.88 — such neighbours may share a group.
SIMILARITY = 0.86
#: Answers per group whose citations choose "Edit the article" (the most recent: enough to tell the usual article).
ARTICLE_SAMPLE = 50
#: Examples shown per language in a group, and questions put in the "Write the answer" link.
EXAMPLES_PER_LANGUAGE = 3
LINK_QUESTIONS = 10
CURATED_ANSWER_ADD = "/admin/knowledge/curatedanswer/add/"

_PUNCTUATION = re.compile(r"[\W_]+", re.UNICODE)


@dataclass
class Gap:
    """One gap as read for grouping."""

    answer_id: object
    knowledge_base_id: int
    reason: str
    question: str
    language: str
    embedding: np.ndarray | None


@dataclass
class GapGroup:
    """Gaps asking the same thing: how many, why, examples in each language, where to fix it."""

    count: int
    reasons: dict[str, int]
    examples: dict[str, list[str]]  # language ("" unknown) -> distinct questions, most recent first
    knowledge_base_id: int
    answer_ids: list = field(default_factory=list)
    write_url: str = ""
    article_url: str = ""
    article_title: str = ""
    knowledge_base_name: str = ""

    @property
    def title(self) -> str:
        """The group's most recent question, in the first language it was asked in."""
        return next(iter(self.examples.values()))[0]


@dataclass
class GapReport:
    groups: list[GapGroup]
    considered: int  # gaps read (at most GAP_LIMIT)
    total: int  # gaps in the period


def normalised(text: str) -> str:
    """The text a gap without an embedding is grouped by: case, accents' forms, punctuation and spacing ignored."""
    return " ".join(_PUNCTUATION.sub(" ", unicodedata.normalize("NFKC", text).casefold()).split())


def read_gaps(period: Period, limit: int = GAP_LIMIT) -> tuple[list[Gap], int]:
    """The period's most recent ``limit`` gaps, newest first, and how many the period has."""
    start, end = period.bounds
    rows = KnowledgeGap.objects.filter(created_at__gte=start, created_at__lt=end)
    if period.knowledge_base_id is not None:
        rows = rows.filter(knowledge_base_id=period.knowledge_base_id)
    if period.site_id is not None:
        rows = rows.filter(site_id=period.site_id)
    # The vectors in pgvector's binary form (vector_send: a 4-byte header, then big-endian float4s): half the bytes
    # of their text and no parsing; 2 000 of them as text took ~4× longer to fetch and parse.
    values = rows.annotate(vector=Func(F("embedding"), function="vector_send", output_field=BinaryField())).order_by(
        "-created_at", "-id"
    ).values_list("answer_id", "knowledge_base_id", "reason", "question", "language", "vector")[:limit]
    gaps = [Gap(a, kb, reason, q, lang, _vector(v)) for a, kb, reason, q, lang, v in values]
    total = len(gaps) if len(gaps) < limit else rows.count()
    return gaps, total


def _vector(sent: bytes | memoryview | None) -> np.ndarray | None:
    return None if sent is None else np.frombuffer(bytes(sent)[4:], dtype=">f4").astype(np.float32)


def cluster(vectors: np.ndarray, threshold: float = SIMILARITY) -> list[list[int]]:
    """Greedy grouping of ``vectors`` (rows) by cosine: lists of row indexes, largest group first (ties: the one
    whose leader comes first, i.e. the most recent)."""
    if len(vectors) == 0:
        return []
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1, norms)
    close = (unit @ unit.T) >= threshold
    np.fill_diagonal(close, True)
    free = np.ones(len(vectors), dtype=bool)
    groups = []
    for leader in sorted(range(len(vectors)), key=lambda i: (-int(close[i].sum()), i)):
        if not free[leader]:
            continue
        members = np.flatnonzero(close[leader] & free)
        free[members] = False
        groups.append([int(i) for i in members])
    groups.sort(key=lambda g: (-len(g), g[0]))
    return groups


def group_gaps(gaps: list[Gap], threshold: float = SIMILARITY) -> list[list[Gap]]:
    """Gaps grouped: by embedding where there is one, by normalised text otherwise; largest first."""
    embedded = [g for g in gaps if g.embedding is not None]
    vectors = np.stack([g.embedding for g in embedded]) if embedded else np.empty((0, 0))
    groups = [[embedded[i] for i in members] for members in cluster(vectors, threshold)]
    by_text: dict[str, list[Gap]] = {}
    for gap in gaps:
        if gap.embedding is None:
            by_text.setdefault(normalised(gap.question), []).append(gap)
    groups.extend(by_text.values())
    order = {id(g): n for n, g in enumerate(gaps)}  # newest first
    return sorted(groups, key=lambda members: (-len(members), min(order[id(g)] for g in members)))


def report(period: Period, limit: int = GAP_LIMIT, shown: int = 30) -> GapReport:
    """The period's gap groups (the ``shown`` largest), with their examples and links."""
    gaps, total = read_gaps(period, limit)
    groups = [_summary(members) for members in group_gaps(gaps)[:shown]]
    _link_articles(groups)
    return GapReport(groups, len(gaps), total)


def _summary(members: list[Gap]) -> GapGroup:
    examples: dict[str, list[str]] = {}
    seen: set[tuple[str, str]] = set()
    for gap in members:  # newest first
        key = (gap.language, normalised(gap.question))
        shown = examples.setdefault(gap.language, [])
        if key not in seen and len(shown) < EXAMPLES_PER_LANGUAGE:
            seen.add(key)
            shown.append(gap.question)
    kb = Counter(g.knowledge_base_id for g in members).most_common(1)[0][0]
    questions = [q for language in examples.values() for q in language][:LINK_QUESTIONS]
    return GapGroup(
        count=len(members),
        reasons=dict(Counter(g.reason for g in members)),
        examples=examples,
        knowledge_base_id=kb,
        answer_ids=[g.answer_id for g in members[:ARTICLE_SAMPLE]],
        write_url=f"{CURATED_ANSWER_ADD}?{urlencode({'knowledge_base': kb, 'questions': chr(10).join(questions)})}",
    )


def cited_documents(citations: list | None, sources: list | None) -> list[int]:
    """The documents an answer cited ([n] in its text); if it cited none, the documents of the sources it showed."""
    items = [s for s in sources or [] if isinstance(s, dict) and isinstance(s.get("document"), int)]
    cited = [s["document"] for s in items if s.get("n") in set(citations or [])]
    return cited or [s["document"] for s in items]


def _link_articles(groups: list[GapGroup]) -> None:
    """Each group's "Edit the article": the document its (most recent ``ARTICLE_SAMPLE``) answers cited most; two
    statements for all groups."""
    answer_ids = [a for g in groups for a in g.answer_ids]
    answers = dict(
        (pk, cited_documents(citations, sources))
        for pk, citations, sources in Message.objects.filter(pk__in=answer_ids).values_list("pk", "citations", "sources")
    )
    best = {}
    for n, group in enumerate(groups):
        counts = Counter(doc for a in group.answer_ids for doc in set(answers.get(a, [])))
        if counts:
            best[n] = counts.most_common(1)[0][0]
    titles = {
        pk: title or filename
        for pk, title, filename in Document.objects.filter(pk__in=set(best.values())).values_list(
            "pk", "title", "original_filename"
        )
    }
    for n, document in best.items():
        if document in titles:
            groups[n].article_url = reverse("admin:knowledge_document_change", args=[document])
            groups[n].article_title = titles[document]
