"""The other companies' help centres (../shared/answer-corpora, the ones bench/answers.py measures) for tests that
check a mechanism on articles the answerer was not written against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from knowledge.ingest import pipeline
from knowledge.models import KnowledgeBase

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "answer-corpora"


def corpus_file(corpus: str, name: str) -> Path:
    """One article of a company's help centre; a missing checkout fails loudly with the fix."""
    path = CORPORA / corpus / "kb" / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: these tests read the answer corpora bench/answers.py measures. Put the shared "
            f"checkout next to this one (../shared/answer-corpora/<company>/kb/, see ../shared/README.md)."
        )
    return path


def ingested(corpus: str, articles: list[str], kb_name: str) -> Iterator[KnowledgeBase]:
    """A knowledge base of ``articles`` ingested through the real path, deleted afterwards: the body of a
    module-scoped fixture (call it inside ``django_db_blocker.unblock()``)."""
    results = pipeline.ingest_path([corpus_file(corpus, name) for name in articles], kb_name)
    assert all(r.status in {"ok", "skipped"} for r in results), [(r.path, r.error) for r in results]
    kb = pipeline.get_or_create_knowledge_base(kb_name)
    yield kb
    kb.delete()
