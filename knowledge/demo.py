"""The demo knowledge base that ships in knowledge/demo_kb/ (a fictional retailer's help centre)."""

from __future__ import annotations

from django.conf import settings

from knowledge.ingest.pipeline import IngestResult, get_or_create_knowledge_base, ingest_path
from knowledge.models import KnowledgeBase


def load_demo_knowledge_base(name: str | None = None) -> tuple[KnowledgeBase, list[IngestResult]]:
    """Ingest the demo articles into ``name`` unless it already holds documents.

    Returns the knowledge base and the per-file results ([] when it was already loaded),
    so a second ``make run`` is fast and never duplicates anything.
    """
    name = name or settings.DEFAULT_KNOWLEDGE_BASE
    kb = get_or_create_knowledge_base(name)
    if kb.documents.exists():
        return kb, []
    return kb, ingest_path([settings.DEMO_KB_DIR], name)
