#!/usr/bin/env python
"""Answer quality: the question sets of four companies' help centres asked through the real answer pipeline.

    .venv/bin/python bench/answers.py                              # the demo set, both parts, the configured generator
    .venv/bin/python bench/answers.py --corpus all                 # the demo set and every ../shared/answer-corpora/
    .venv/bin/python bench/answers.py --corpus all --part dev --failures    # what the tuning parts get wrong
    .venv/bin/python bench/answers.py --corpus skyvale,kestrel --part check # some corpora, the held-back part
    EMBEDDING_BACKEND=local .venv/bin/python bench/answers.py      # another embedding model
    ANSWER_GENERATOR=openai LLM_BASE_URL=... LLM_MODEL=... .venv/bin/python bench/answers.py

**Corpora** (bench/answer_questions.py): ``demo`` is knowledge/demo_kb/ with bench/answer_set/; every folder of
``<checkout>/../shared/answer-corpora/`` with ``kb/`` and ``questions.json`` is another company (``--corpus all``
runs them all and stops with a clear message if that folder is missing). Each corpus is ingested once per embedding
model and parsing version into a knowledge base of its own ("Answers bench <corpus> (<model>, parsing
<PARSING_VERSION>)"; the demo's is "Answers bench (<model>, parsing <PARSING_VERSION>)") on the configured database
(DATABASE_URL or the embedded PostgreSQL), so companies, models and parsers never mix; checksums skip what is
already there (``knowledge.ingest.pipeline.PARSING_VERSION`` changes with what parsing produces, so a parser change
gets freshly ingested knowledge bases). Each question is asked with ``knowledge.answering.answer()``:
retrieval on that database, the configured generator, and for follow-ups the conversation so far (the earlier
questions are asked and answered for real first).

**Parts.** The demo set comes split in ``dev.json`` and ``check.json``; every other corpus is split in code by the
same rule (``answer_questions.split_parts``: grouped by kind and language, sorted by id, every third held back).
Dev is what the answerer may be tuned on; check is only run to report, never to tune (``--failures`` lists dev
only). ``--part`` chooses dev, check or all (both, reported separately).

**Figures** (bench/answer_report.py ``summarise()``; the judges are bench/answer_scoring.py, which defines each
precisely; tests/test_answer_quality.py uses the same functions). Per corpus and part, and overall per part: fact
accuracy (the answer matches the question's regex and is not a refusal) by kind, by language, on first turns and
after other questions (follow-ups and new topics), for non-English questions and for questions about an article in
another language than the rest of its knowledge base; off-topic questions declined; answerable questions wrongly
declined; readability (answers with a glued table header, with more than one table row where one value was asked,
or citing more than two articles); fragment rate (a sentence cut mid-way); citation precision (each [n] cites a
passage that holds the sentence's words); language match (the answer's own words, what it does not quote, are in
the question's language); retrieval hit@1; CPU ms per answer (process CPU, all threads) and first-token p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.answer_questions import DEMO, PARTS, Corpus, Question, select_corpora  # noqa: E402
from bench.answer_report import COLUMNS, HEADLINE, by_kind, by_language, failures, summarise, table  # noqa: E402
from bench.answer_scoring import Outcome, detect_language, score  # noqa: E402

# --- asking -----------------------------------------------------------------------------------------------


async def ask(question: str, kb: Any, history: list[dict]) -> tuple[Any, list[dict], list[str], float]:
    """(final event, sources with file names, passage texts, CPU ms) for one question through the pipeline."""
    from knowledge.answering import FinalEvent, SourcesEvent, answer

    final, sources = None, []
    started = time.process_time()
    async for event in answer(question, kb=kb, history=history):
        if isinstance(event, SourcesEvent):
            sources = list(event.items)
        elif isinstance(event, FinalEvent):
            final = event
    cpu_ms = (time.process_time() - started) * 1000
    assert final is not None, f"no final event for {question!r}"
    passages = await _passage_texts(final)
    for item, passage in zip(sources, final.trace.get("passages", []), strict=False):
        item["source"] = passage.get("source") or item.get("title")
    return final, sources, passages, cpu_ms


async def _passage_texts(final: Any) -> list[str]:
    """The retrieved chunks' texts (the trace names them by id), to check what each [n] cites."""
    from channels.db import database_sync_to_async

    from knowledge.models import Chunk

    ids = [p["chunk_id"] for p in final.trace.get("passages", [])]

    def load() -> list[str]:
        by_id = dict(Chunk.objects.filter(pk__in=ids).values_list("pk", "text"))
        return [by_id.get(i, "") for i in ids]

    return await database_sync_to_async(load)()


async def evaluate(questions: list[Question], kb: Any, other_language: frozenset[str] = frozenset()) -> list[Outcome]:
    """Ask every question (its history first, answered for real) and score the last answer.

    ``other_language``: the knowledge base's articles written in another language than most of it (see
    ``other_language_articles``), to report the questions about them apart.
    """
    outcomes = []
    for question in questions:
        history: list[dict] = []
        for earlier in question.history:
            final, *_ = await ask(earlier, kb, history)
            history += [{"role": "user", "text": earlier}, {"role": "assistant", "text": final.text}]
        final, sources, passages, cpu_ms = await ask(question.question, kb, history)
        outcome = score(question, final, sources, passages, cpu_ms)
        outcome.about_other_language = bool(set(question.sources) & other_language)
        outcomes.append(outcome)
    return outcomes


# --- the knowledge bases ----------------------------------------------------------------------------------


def bench_knowledge_base(corpus: Corpus) -> Any:
    """The corpus's articles embedded by the configured model, ingested on first use (checksums skip the rest)."""
    from knowledge.embeddings import get_embedder
    from knowledge.ingest.pipeline import PARSING_VERSION, ingest_path
    from knowledge.models import KnowledgeBase

    label = "Answers bench" if corpus.name == DEMO else f"Answers bench {corpus.name}"
    name = f"{label} ({get_embedder().name}, parsing {PARSING_VERSION})"[:200]
    results = ingest_path([corpus.articles], name)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(f"Ingesting {corpus.name} failed: {[(str(r.path), r.error) for r in failed]}")
    return KnowledgeBase.objects.get(name=name)


def other_language_articles(kb: Any) -> frozenset[str]:
    """The documents (by source name) whose text is in another language than most of the knowledge base's.

    Found from the ingested text, never from a list of names, so a new corpus's odd one out is found too.
    """
    from knowledge.models import Chunk

    texts: dict[str, list[str]] = {}
    for chunk in Chunk.objects.filter(knowledge_base=kb).select_related("document").order_by("document_id", "pk"):
        texts.setdefault(chunk.document.source, []).append(chunk.text)
    languages = {source: detect_language(" ".join(parts)[:20000]) for source, parts in texts.items()}
    if not languages:
        return frozenset()
    majority = Counter(languages.values()).most_common(1)[0][0]
    return frozenset(source for source, lang in languages.items() if lang != majority)


# --- the command ------------------------------------------------------------------------------------------


def _compile_translations() -> None:
    """Compile locale/*.po as `make run` does: without the .mo files (not in git) every refusal and lead-in
    comes out in English, and the language figures measure a fresh checkout instead of the product."""
    from django.core.management import CommandError, call_command

    try:
        call_command("compilemessages", ignore_patterns=[".venv", ".data"], verbosity=0)
    except CommandError as exc:
        raise SystemExit(f"Compiling the translations failed ({exc}); GNU gettext's msgfmt is needed.") from exc


Run = tuple[str, str, list[Outcome], dict[str, Any]]  # corpus, part, outcomes, summary


def _pooled(runs: list[Run], part: str) -> list[Outcome]:
    return [o for _, p, outcomes, _ in runs if p == part for o in outcomes]


def _report(runs: list[Run], args: argparse.Namespace) -> None:
    """Print the tables: per corpus and part, overall per part when several corpora ran, breakdowns, failures."""
    several = len({corpus for corpus, *_ in runs}) > 1
    overall = [{"corpus": "**all**", "part": part, **summarise(_pooled(runs, part))}
               for part in PARTS if several and _pooled(runs, part)]  # fmt: skip
    rows = [summary for *_, summary in runs] + overall
    print(table(rows, HEADLINE))
    print("\nAll figures:\n")
    print(table(rows, [("corpus", "corpus"), *COLUMNS]))
    if several or args.kinds:
        groups = {f"{corpus} {part}": outcomes for corpus, part, outcomes, _ in runs}
        groups |= {f"all {row['part']}": _pooled(runs, row["part"]) for row in overall}
        print(f"\nRight answers by kind (off-topic: declined):\n\n{by_kind(groups)}")
        print(f"\nFacts by language (answerable questions):\n\n{by_language(groups)}")
    if args.failures:
        for corpus, part, outcomes, _ in runs:
            if part == "dev":
                print(f"\n{corpus} {part} failures:\n{failures(outcomes)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=DEMO,
                        help="demo (default), all (the demo and every ../shared/answer-corpora/ corpus), "
                             "or comma-separated names.")  # fmt: skip
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all", help="dev, check or all (both).")
    parser.add_argument("--failures", action="store_true", help="List what the dev parts get wrong.")
    parser.add_argument(
        "--kinds", action="store_true", help="Right answers per kind and language (always printed for several corpora)."
    )
    parser.add_argument("--only", default="", help="Comma-separated question ids (debugging one question).")
    parser.add_argument("--json", type=Path, help="Also write the outcomes and summaries here.")
    args = parser.parse_args()

    corpora = select_corpora(args.corpus)  # before Django starts: a missing folder fails at once
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["ANSWER_WORDS_PER_SECOND"] = "0"  # measure the answerer, not the typing pace
    os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="bench-answers-"))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from knowledge.answering import get_generator
    from knowledge.embeddings import get_embedder

    call_command("migrate", verbosity=0)  # the configured database, as `make run` leaves it
    _compile_translations()
    parts = PARTS if args.part == "all" else (args.part,)
    only = {i for i in args.only.split(",") if i}
    runs: list[Run] = []
    for corpus in corpora:
        started = time.perf_counter()
        kb = bench_knowledge_base(corpus)
        other_language = other_language_articles(kb)
        print(f"{corpus.name}: knowledge base ready in {time.perf_counter() - started:.0f} s"
              f"{f', other-language articles {sorted(other_language)}' if other_language else ''}",
              file=sys.stderr)  # fmt: skip
        for part in parts:
            questions = [q for q in corpus.questions((part,)) if not only or q.id in only]
            if not questions:
                continue
            started = time.perf_counter()
            outcomes = asyncio.run(evaluate(questions, kb, other_language))
            summary = {"corpus": corpus.name, "part": part, **summarise(outcomes),
                       "wall_s": round(time.perf_counter() - started, 1)}  # fmt: skip
            runs.append((corpus.name, part, outcomes, summary))

    load = os.getloadavg()
    print(
        f"generator {get_generator().name}, embedding {get_embedder().name} ({settings.EMBEDDING_BACKEND}), "
        f"{platform.node()} {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    _report(runs, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "corpus": corpus,
                        "part": part,
                        "summary": summary,
                        "outcomes": [
                            {
                                "id": o.question.id,
                                "correct": o.correct,
                                "text": o.text,
                                "fragments": o.fragments,
                                "glued": o.glued,
                                "rows": o.rows,
                                "articles": o.articles,
                                "retrieved": o.retrieved,
                                "searched_as": o.searched_as,
                                "language": o.language,
                                "cpu_ms": o.cpu_ms,
                                "kind": o.question.kind,
                                "lang": o.question.lang,
                                **o.extra,
                            }
                            for o in outcomes
                        ],
                    }
                    for corpus, part, outcomes, summary in runs
                ],  # fmt: skip
                ensure_ascii=False,
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
