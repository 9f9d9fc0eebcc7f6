"""`manage.py search "query" [--kb NAME] [--k 5] [--mode hybrid|vector|keyword] [--json]`.

What the assistant would find for a question, for operators and scripts (``--json``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge import retrieval
from knowledge.visibility import EVERYTHING


def result_as_json(result: retrieval.SearchResult) -> dict[str, Any]:
    """The stable JSON shape scripts rely on: {"query", "mode", "results": [...], "timings"}."""
    return {
        "query": result.query,
        "mode": result.mode,
        "results": [
            {
                "rank": n,
                "chunk_id": p.chunk_id,
                "document": {"id": p.document_id, "title": p.title, "source": p.source},
                "heading": p.heading,
                "page": p.page,
                "text": p.text,
                "snippet": p.snippet,
                "url": p.url,
                "scores": {"vector": p.vector_score, "keyword": p.keyword_score, "rrf": p.rrf_score},
                "ranks": {"vector": p.vector_rank, "keyword": p.keyword_rank},
            }
            for n, p in enumerate(result.passages, start=1)
        ],
        "timings": result.timings,
    }


def _fmt(score: float | None, rank: int | None = None) -> str:
    if score is None:
        return "-"
    return f"{score:.4f}" + (f" (#{rank})" if rank is not None else "")


class Command(BaseCommand):
    help = "Search the knowledge base the way the assistant does (hybrid by default) and show the ranking."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("query", help="the question or words to search for")
        parser.add_argument("--kb", help="knowledge base name (default: all knowledge bases)")
        parser.add_argument("--k", type=int, default=None, help="how many passages (default: RETRIEVAL_TOP_K)")
        parser.add_argument("--mode", choices=retrieval.MODES, default="hybrid")
        parser.add_argument("--json", action="store_true", help='print {"results": [...]} as JSON')

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = retrieval.search(
                options["query"], kb=options["kb"], k=options["k"], mode=options["mode"], reader=EVERYTHING
            )  # an operator's tool: every knowledge base, whatever its visibility
        except retrieval.UnknownKnowledgeBase as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result_as_json(result), ensure_ascii=False, indent=2))
            return
        if not result.passages:
            self.stdout.write(f"No passages found for {result.query!r} ({result.mode}).")
        for n, p in enumerate(result.passages, start=1):
            where = " › ".join(part for part in [p.heading, f"page {p.page}" if p.page else ""] if part)
            self.stdout.write(f"{n}. {p.title} [{p.source}]" + (f" — {where}" if where else ""))
            self.stdout.write(
                f"   rrf {_fmt(p.rrf_score)}  vector {_fmt(p.vector_score, p.vector_rank)}  "
                f"keyword {_fmt(p.keyword_score, p.keyword_rank)}"
            )
            self.stdout.write(f"   {p.snippet}")
        t = result.timings
        self.stdout.write(
            f"({t['embed_ms']:.1f} ms embedding, {t['db_ms']:.1f} ms database, {t['total_ms']:.1f} ms total)"
        )
