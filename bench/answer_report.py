"""The figures bench/answers.py prints: summaries of scored answers and their tables.

``summarise()`` turns a list of outcomes (one corpus and part, or several pooled) into ratios; the tables lay them
out per corpus and part with an overall row. tests/test_answer_quality.py holds the demo set at thresholds on the
same ``summarise()``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from bench.answer_scoring import Outcome

#: Kinds in the order the question sets' READMEs list them; a kind not listed here follows in name order.
KINDS = ("fact", "procedure", "yesno", "table", "error_code", "multi_article", "follow_up", "standalone_after",
         "off_topic")  # fmt: skip
LANGUAGES = ("en", "zh", "de", "fr", "es")


def _ratio(hits: int, total: int) -> float | None:
    return hits / total if total else None


def summarise(outcomes: list[Outcome]) -> dict[str, Any]:
    """The headline figures of a list of outcomes (ratios in 0..1, None where nothing was measured).

    *first-turn facts*: answerable questions asked at the start of a conversation (every kind but follow-ups,
    new topics after another and off-topic); *follow-ups*: questions asked after others in the same conversation
    (follow-ups and new topics alike), right if the fact is there or an off-topic one is declined; *non-English*
    and *other-language article*: answerable questions in a language other than English, and about an article
    written in another language than most of its knowledge base; *readable*: answers (not refusals) that pass
    all three readability checks of bench/answer_scoring.py.
    """
    facts = [o for o in outcomes if not o.question.decline]
    declines = [o for o in outcomes if o.question.decline]
    answered = [o for o in outcomes if not o.declined]
    first_turn = [o for o in facts if not o.question.history]
    later = [o for o in outcomes if o.question.history]
    zh = [o for o in facts if o.question.lang == "zh"]
    other = [o for o in facts if o.question.lang not in ("en", "zh")]
    non_english = [o for o in facts if o.question.lang != "en"]
    foreign = [o for o in facts if o.about_other_language]
    pairs = sum(o.cited_pairs for o in outcomes)
    with_sources = [o for o in facts if o.question.sources]
    return {
        "questions": len(outcomes),
        "answerable": len(facts),
        "fact_accuracy": _ratio(sum(o.fact_ok for o in facts), len(facts)),
        "fact_accuracy_en": _ratio(
            sum(o.fact_ok for o in facts if o.question.lang == "en"), sum(o.question.lang == "en" for o in facts)
        ),  # fmt: skip
        "fact_accuracy_zh": _ratio(sum(o.fact_ok for o in zh), len(zh)),
        "fact_accuracy_de_fr_es": _ratio(sum(o.fact_ok for o in other), len(other)),
        "first_turn_facts": _ratio(sum(o.fact_ok for o in first_turn), len(first_turn)),
        "follow_ups": _ratio(sum(o.correct for o in later), len(later)),
        "non_english": _ratio(sum(o.fact_ok for o in non_english), len(non_english)),
        "other_language_article": _ratio(sum(o.fact_ok for o in foreign), len(foreign)),
        "decline_accuracy": _ratio(sum(o.declined for o in declines), len(declines)),
        "false_declines": sum(o.declined for o in facts),
        "false_decline_rate": _ratio(sum(o.declined for o in facts), len(facts)),
        "fragment_rate": _ratio(sum(bool(o.fragments) for o in answered), len(answered)),
        "glued_headers": sum(bool(o.glued) for o in answered),
        "extra_rows": sum(o.extra_rows for o in answered),
        "table_questions": sum(o.question.kind == "table" for o in outcomes),
        "over_two_articles": sum(o.articles > 2 for o in answered),
        "readable": _ratio(sum(not o.unreadable for o in answered), len(answered)),
        "citation_precision": _ratio(sum(o.supported_pairs for o in outcomes), pairs),
        "language_match": _ratio(sum(o.language_ok for o in outcomes), len(outcomes)),
        "retrieval_hit1": _ratio(sum(o.first_source in o.question.sources for o in with_sources), len(with_sources)),
        "cpu_ms_p50": statistics.median(o.cpu_ms for o in outcomes) if outcomes else None,
        "cpu_ms_mean": statistics.fmean(o.cpu_ms for o in outcomes) if outcomes else None,
        "first_token_ms_p50": statistics.median(o.first_token_ms for o in outcomes) if outcomes else None,
    }


#: The figures issue 18 sets goals on, one row per corpus and part.
HEADLINE = [
    ("corpus", "corpus"), ("part", "part"), ("questions", "n"), ("first_turn_facts", "first-turn facts"),
    ("follow_ups", "follow-ups"), ("decline_accuracy", "off-topic declined"),
    ("false_declines", "answerable declined"), ("non_english", "non-English"),
    ("other_language_article", "other-language article"), ("glued_headers", "glued headers"),
    ("extra_rows", "extra rows"), ("over_two_articles", "> 2 articles"), ("readable", "readable"),
    ("citation_precision", "citation prec."), ("cpu_ms_p50", "CPU ms p50"), ("first_token_ms_p50", "first token p50 ms"),
]  # fmt: skip
#: The harness's original columns (docs/benchmarks.md's earlier tables).
COLUMNS = [
    ("part", "part"), ("questions", "n"), ("fact_accuracy", "fact"), ("fact_accuracy_en", "fact en"),
    ("fact_accuracy_zh", "fact zh"), ("fact_accuracy_de_fr_es", "fact de/fr/es"), ("decline_accuracy", "decline"),
    ("false_declines", "false declines"), ("fragment_rate", "fragments"), ("citation_precision", "citation prec."),
    ("language_match", "language"), ("retrieval_hit1", "retrieval hit@1"), ("cpu_ms_p50", "CPU ms p50"),
    ("cpu_ms_mean", "CPU ms mean"), ("first_token_ms_p50", "first token p50 ms"),
]  # fmt: skip


def _cell(key: str, value: Any, row: dict[str, Any]) -> str:
    if value is None:
        return "–"
    if key == "false_declines" and "answerable" in row:
        return f"{value}/{row['answerable']}"
    if key == "extra_rows" and "table_questions" in row:
        return f"{value}/{row['table_questions']}"
    if key.endswith("_ms_p50") or key.endswith("_ms_mean"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]] = COLUMNS) -> str:
    """A markdown table of summaries, one row each."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(key, row.get(key), row) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


def _breakdown(groups: dict[str, list[Outcome]], title: str, keys: list[str],
               key_of: Callable[[Outcome], str | None], right: Callable[[Outcome], bool]) -> str:  # fmt: skip
    """Right of asked per ``key_of`` value (rows) in each group of outcomes (columns): "7/9"."""
    lines = [f"| {title} | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for key in keys:
        cells = []
        for outcomes in groups.values():
            asked = [o for o in outcomes if key_of(o) == key]
            cells.append(f"{sum(right(o) for o in asked)}/{len(asked)}" if asked else "–")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_kind(groups: dict[str, list[Outcome]]) -> str:
    """Right answers per kind of question (off-topic: declined), one column per group."""
    seen = {o.question.kind for outcomes in groups.values() for o in outcomes}
    kinds = [k for k in KINDS if k in seen] + sorted(seen - set(KINDS))
    return _breakdown(groups, "kind", kinds, lambda o: o.question.kind, lambda o: o.correct)


def by_language(groups: dict[str, list[Outcome]]) -> str:
    """The fact in the answer, per language of the answerable questions, one column per group."""
    seen = {o.question.lang for outcomes in groups.values() for o in outcomes}
    languages = [lang for lang in LANGUAGES if lang in seen] + sorted(seen - set(LANGUAGES))
    return _breakdown(groups, "language", languages,
                      lambda o: None if o.question.decline else o.question.lang, lambda o: o.fact_ok)  # fmt: skip


def failures(outcomes: list[Outcome]) -> str:
    """What each wrong, cut, unreadable or wrong-language answer was, to read while tuning (dev parts only)."""
    out = []
    for o in outcomes:
        if o.correct and not o.fragments and o.language_ok and not o.unreadable:
            continue
        q = o.question
        why = "not declined" if q.decline and not o.declined else ("declined" if o.declined else "fact missing")
        if o.correct:
            problems = ["fragment"] if o.fragments else []
            problems += [f"language {o.language}"] if not o.language_ok else []
            why = ", ".join(problems + o.unreadable)
        elif o.unreadable:
            why += ", " + ", ".join(o.unreadable)
        out.append(
            f"- {q.corpus}/{q.id} [{q.kind}/{q.lang}] {why}: {q.question!r} (history {list(q.history)})\n"
            f"  expect {q.expect!r} from {list(q.sources)}; retrieved {o.retrieved[:3]}; searched as {o.searched_as!r}\n"
            f"  answer: {' '.join(o.text.split())[:400]!r}\n"
            + (f"  fragments: {o.fragments}\n" if o.fragments else "")
            + (f"  glued: {o.glued}\n" if o.glued else "")
        )
    return "\n".join(out) or "(none)"
