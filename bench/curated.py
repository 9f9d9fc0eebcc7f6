#!/usr/bin/env python
"""Curated answers on a help centre: do they fix the questions they were written for, and break nothing else?

    .venv/bin/python bench/curated.py                      # kestrel (default)
    .venv/bin/python bench/curated.py --corpus skyvale --json /tmp/curated.json

What a support team does, measured (docs/benchmarks.md "Curated answers"):

1. The company's articles (``../shared/answer-corpora/<corpus>/``) are ingested into a knowledge base of this
   bench's own ("Curated bench <corpus> (...)"), so the answers bench's knowledge bases never hold a curated answer;
   curated answers left there by an earlier run are deleted first.
2. The whole question set is asked (bench/answers.py ``evaluate``: conversations for follow-ups, the same judges).
3. Every first-turn answerable question the answerer gets wrong is a *miss*. For each, a curated answer is written
   as staff would after reading the article: the question as its one question, and as its answer the article's own
   sentence (one or two of the question's source articles' quotable units, ``knowledge.sentences``) that states the
   expected fact, i.e. matches the question's regex. A miss with no such sentence is skipped (counted).
4. The whole set is asked again, and the paraphrases of each curated question (bench/curated_paraphrases.json:
   2-3 per question, written as a customer would ask it in other words, never seen by the curated answer) before
   and after. Reported: misses fixed; paraphrases right before and after; questions right before and wrong after
   (*broken*), and answers whose text changed among the questions no curated answer was written for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.answer_questions import Corpus, Question, select_corpora  # noqa: E402
from bench.answers import evaluate  # noqa: E402

PARAPHRASES = Path(__file__).resolve().parent / "curated_paraphrases.json"


def bench_knowledge_base(corpus: Corpus) -> Any:
    """The corpus's articles in this bench's own knowledge base, without any curated answer yet."""
    from knowledge.embeddings import get_embedder
    from knowledge.ingest.pipeline import PARSING_VERSION, ingest_path
    from knowledge.models import CuratedAnswer, KnowledgeBase

    name = f"Curated bench {corpus.name} ({get_embedder().name}, parsing {PARSING_VERSION})"[:200]
    results = ingest_path([corpus.articles], name)
    if failed := [r for r in results if r.status == "failed"]:
        raise SystemExit(f"Ingesting {corpus.name} failed: {[(str(r.path), r.error) for r in failed]}")
    kb = KnowledgeBase.objects.get(name=name)
    for curated in CuratedAnswer.objects.filter(knowledge_base=kb):
        curated.delete()
    return kb


def fact_sentence(question: Question, kb: Any) -> str | None:
    """The source articles' own words that state the expected fact: one unit matching the question's regex, else
    two units together (a question over two articles); None when the articles have no such sentence."""
    from knowledge.models import Chunk
    from knowledge.sentences import units

    pattern = re.compile(question.expect or r"(?!)", re.IGNORECASE | re.DOTALL)
    chunks = Chunk.objects.filter(knowledge_base=kb, document__original_filename__in=question.sources)
    found: list[str] = []
    for chunk in chunks.order_by("document_id", "position"):
        found += [u.text for u in units(chunk.text) if u.text not in found]
    for text in found:
        if pattern.search(text):
            return text
    for i, first in enumerate(found):
        for second in found[i + 1 :]:
            if pattern.search(f"{first} {second}"):
                return f"{first} {second}"
    return None


def write_curated(misses: list[Question], texts: dict[str, str], kb: Any) -> None:
    """A curated answer per miss that has a fact sentence (``texts``: question id -> the answer), saved as staff
    save one (the save indexes it)."""
    from knowledge.models import CuratedAnswer

    for question in misses:
        if question.id in texts:
            CuratedAnswer.objects.create(knowledge_base=kb, questions=question.question, answer=texts[question.id])


def paraphrases_of(corpus: str, questions: list[Question]) -> list[Question]:
    """The paraphrases written for these questions, as questions with the original's regex and an id of their own."""
    written = json.loads(PARAPHRASES.read_text(encoding="utf-8")).get(corpus, {})
    return [
        replace(question, id=f"{question.id}~{i}", question=text)
        for question in questions
        for i, text in enumerate(written.get(question.id, []), start=1)
    ]


def _ratio(part: int, whole: int) -> str:
    return f"{part}/{whole}" if whole else "–"


def measure(corpus: Corpus, kb: Any) -> dict[str, Any]:
    """Steps 2-4 of the module docstring over ``kb``; the figures and the per-question detail."""
    questions = corpus.questions()
    before = {o.question.id: o for o in asyncio.run(evaluate(questions, kb))}
    misses = [q for q in questions if not q.history and not q.decline and not before[q.id].fact_ok]
    written = {q.id: text for q in misses if (text := fact_sentence(q, kb)) is not None}
    curated = [q for q in misses if q.id in written]
    paraphrases = paraphrases_of(corpus.name, curated)
    paraphrased_before = {o.question.id: o for o in asyncio.run(evaluate(paraphrases, kb))}
    started = time.perf_counter()
    write_curated(misses, written, kb)
    write_s = time.perf_counter() - started
    after = {o.question.id: o for o in asyncio.run(evaluate(questions, kb))}
    paraphrased_after = {o.question.id: o for o in asyncio.run(evaluate(paraphrases, kb))}
    others = [q for q in questions if q.id not in written]
    broken = [q.id for q in others if before[q.id].correct and not after[q.id].correct]
    mended = [q.id for q in others if not before[q.id].correct and after[q.id].correct]
    changed = [q.id for q in others if before[q.id].text != after[q.id].text]
    return {
        "corpus": corpus.name,
        "questions": len(questions),
        "right_before": sum(o.correct for o in before.values()),
        "right_after": sum(o.correct for o in after.values()),
        "misses": len(misses),
        "curated": len(curated),
        "fixed": sum(after[q.id].fact_ok for q in curated),
        "paraphrases": len(paraphrases),
        "paraphrases_right_before": sum(o.fact_ok for o in paraphrased_before.values()),
        "paraphrases_right_after": sum(o.fact_ok for o in paraphrased_after.values()),
        "others": len(others),
        "broken": broken,
        "mended": mended,
        "changed": changed,
        "write_ms_per_answer": round(1000 * write_s / max(1, len(curated)), 1),
        "detail": {
            q.id: {
                "question": q.question,
                "curated": written[q.id],
                "after": after[q.id].text,
                "paraphrases": {
                    p.question: paraphrased_after[p.id].fact_ok for p in paraphrases if p.id.startswith(f"{q.id}~")
                },
            }  # fmt: skip
            for q in curated
        },
    }


def report(figures: dict[str, Any]) -> str:
    """The Markdown lines docs/benchmarks.md quotes."""
    f = figures
    return "\n".join(
        [
            f"| {f['corpus']} | {_ratio(f['fixed'], f['curated'])} | "
            f"{_ratio(f['paraphrases_right_before'], f['paraphrases'])} → "
            f"{_ratio(f['paraphrases_right_after'], f['paraphrases'])} | "
            f"{len(f['broken'])} of {f['others']} | {len(f['changed'])} | "
            f"{_ratio(f['right_before'], f['questions'])} → {_ratio(f['right_after'], f['questions'])} |",
        ]
    )


HEADER = (
    "| corpus | misses fixed | paraphrases right (before → after) | others broken | others' text changed | "
    "whole set right (before → after) |\n|---|---|---|---|---|---|"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="kestrel", help="One or more (comma-separated) of ../shared's corpora.")
    parser.add_argument("--json", type=Path, help="Also write the figures and each curated question's detail here.")
    args = parser.parse_args()
    corpora = select_corpora(args.corpus)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["ANSWER_WORDS_PER_SECOND"] = "0"
    os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="bench-curated-"))
    import django

    django.setup()
    from django.core.management import call_command

    from bench.answers import _compile_translations

    call_command("migrate", verbosity=0)
    _compile_translations()
    results = [measure(corpus, bench_knowledge_base(corpus)) for corpus in corpora]
    print(HEADER)
    for figures in results:
        print(report(figures))
    for figures in results:
        print(f"\n{figures['corpus']}: broken {figures['broken']}, mended {figures['mended']}, "
              f"changed {figures['changed']}, {figures['write_ms_per_answer']} ms to save one")  # fmt: skip
        for qid, detail in figures["detail"].items():
            print(f"  {qid}: {detail['question']!r} -> {detail['curated'][:90]!r}")
            for text, ok in detail["paraphrases"].items():
                print(f"      {'✓' if ok else '✗'} {text}")
    if args.json:
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
