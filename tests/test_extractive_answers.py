"""The offline answerer answers: whole units, the asked fact, steps in order, table rows with their header,
stored sentence vectors, nothing-found done right, and the customer's language.

The demo knowledge base (``demo_kb``) is asked through ``knowledge.answering.answer`` with the default embedding
model; the question-set figures are held by tests/test_answer_quality.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.utils import translation

from knowledge import sentence_vectors
from knowledge.answering import FinalEvent, SourcesEvent, StatusEvent, answer
from knowledge.answering.scoring import Question, terms
from knowledge.embeddings import get_embedder
from knowledge.language import detect
from knowledge.models import Chunk
from knowledge.sentences import ITEM, ROW, SENTENCE, STEP, units

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(question: str, kb, history=None, language=None) -> tuple[FinalEvent, list, list[str]]:
    events = [e async for e in answer(question, kb=kb, history=history or [], language=language)]
    sources = next(e for e in events if isinstance(e, SourcesEvent)).items
    statuses = [e.text for e in events if isinstance(e, StatusEvent)]
    return events[-1], sources, statuses


@pytest.fixture(autouse=True)
def no_pace(settings):
    settings.ANSWER_GENERATOR = "extractive"
    settings.ANSWER_WORDS_PER_SECOND = 0


# --- units --------------------------------------------------------------------------------------------------


def test_units_are_whole_sentences_steps_and_table_rows_with_their_header():
    text = (
        "## How to start a return\n\n"
        "1. Sign in.\n2. Choose the order and click **Return an item**.\n3. Print the label.\n\n"
        "| Payment method | Refund arrives |\n|---|---|\n| PayPal | within 24 hours |\n\n"
        "We answer every day.\n\nChannel | Hours\n\nLive chat | every day, 7:00–22:00\n\n"
        "and then the refund is sent. Returns are free within Germany and Austria."
    )
    found = units(text)
    kinds = [(u.kind, u.text) for u in found]
    assert (STEP, "Sign in.") in kinds and (STEP, "Print the label.") in kinds
    steps = [u for u in found if u.kind == STEP]
    assert len({u.block for u in steps}) == 1, "one procedure is one block"
    assert (ROW, "Payment method: PayPal — Refund arrives: within 24 hours.") in kinds
    assert (ROW, "Channel: Live chat — Hours: every day, 7:00–22:00.") in kinds
    assert (SENTENCE, "Returns are free within Germany and Austria.") in kinds
    assert not any("How to start a return" == u.text for u in found), "a heading is never an answer"
    assert not any(u.text.startswith("and then") for u in found), "a piece of a sentence is never quoted"


def test_a_pdf_table_row_without_separators_is_a_row_without_a_glued_header():
    """A table the PDF parser could not find keeps no cell separators: its rows are still rows, but its header
    line ("Service Price") is not glued in front of them, where the reader would have to guess which name is
    whose (knowledge/ingest/parsers.py writes the tables it finds as rows with their header)."""
    text = "Service Price\nDelivery to the room of your choice 39.00\nIntegrated (built-in) dishwasher installation 169.00\n"
    rows = [u for u in units(text) if u.kind == ROW]
    assert [r.text for r in rows] == [
        "Delivery to the room of your choice 39.00.",
        "Integrated (built-in) dishwasher installation 169.00.",
    ]


def test_list_items_that_are_not_steps_are_items():
    assert {u.kind for u in units("- Visa and Mastercard cards.\n- PayPal, including pay later.")} == {ITEM}


# --- what a question asks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "intent"),
    [
        ("how much is express delivery?", "price"),
        ("寄到意大利运费多少钱？", "price"),
        ("Was kostet Expressversand?", "price"),
        ("how long does a refund take?", "duration"),
        ("退款要几天？", "duration"),
        ("¿Cuánto tiempo tarda el reembolso?", "duration"),
        ("until when is the pickup desk open?", "time"),
        ("how do I return an item?", "steps"),
        ("我怎么退货？", "steps"),
    ],
)
def test_the_kind_of_fact_a_question_asks_is_recognised_in_several_languages(question, intent):
    assert intent in Question.of(question, [0.0]).intents


def test_question_terms_are_stemmed_content_words_and_cjk_bigrams():
    assert terms("How do I return my items?") == {"return", "item"}
    assert {"退货", "政策"} <= terms("退货政策")


@pytest.mark.parametrize(
    ("text", "language"),
    [("我怎么退货？", "zh-hans"), ("Wie lange dauert die Rückerstattung bei mir?", "de"),
     ("Comment je peux retourner un article ?", "fr"), ("¿Cómo puedo devolver un artículo?", "es"),
     ("How do I return an item?", "en"), ("E42", None)],  # fmt: skip
)
def test_the_question_language_is_detected(text, language):
    assert detect(text) == language


# --- stored sentence vectors --------------------------------------------------------------------------------


def test_ingestion_stores_each_chunks_units_and_their_vectors(demo_kb):
    chunk = Chunk.objects.filter(knowledge_base=demo_kb).exclude(sentences=[]).first()
    assert chunk is not None and chunk.sentence_model == get_embedder().name
    stored = sentence_vectors.for_chunks([chunk.pk])[chunk.pk]
    assert [u.as_dict() for u in stored.units] == chunk.sentences
    assert stored.vectors.shape == (len(chunk.sentences), get_embedder().dimensions)
    assert np.allclose(np.linalg.norm(stored.vectors, axis=1), 1.0, atol=1e-3)


def test_missing_or_stale_sentence_vectors_are_filled_on_first_use_and_saved(demo_kb):
    chunk = Chunk.objects.filter(knowledge_base=demo_kb).exclude(sentences=[]).first()
    expected = sentence_vectors.for_chunks([chunk.pk])[chunk.pk].vectors
    Chunk.objects.filter(pk=chunk.pk).update(sentences=[], sentence_vectors=None, sentence_model="")
    filled = sentence_vectors.for_chunks([chunk.pk])[chunk.pk]
    assert np.allclose(filled.vectors, expected, atol=1e-5)
    chunk.refresh_from_db()
    assert chunk.sentence_model == get_embedder().name and chunk.sentences
    Chunk.objects.filter(pk=chunk.pk).update(sentence_model="another-model")  # vectors of another model
    sentence_vectors.for_chunks([chunk.pk])
    chunk.refresh_from_db()
    assert chunk.sentence_model == get_embedder().name


# --- answers ------------------------------------------------------------------------------------------------


async def test_the_asked_price_is_in_the_answer_and_no_sentence_is_cut(demo_kb):
    final, sources, _ = await ask("how much does express delivery cost?", demo_kb)
    assert re.search(r"(?<![\d.])9[.,]95", final.text), final.text
    assert not re.search(r"\b(?:or|and|the|to)\s*\[\d+\]", final.text), "a sentence cut before its end"
    assert final.citations and all(1 <= n <= len(sources) for n in final.citations)


async def test_a_procedure_keeps_its_steps_in_order(demo_kb):
    final, _, _ = await ask("how do I return an item?", demo_kb)
    steps = re.findall(r"^(\d+)\. (.*)$", final.text, re.MULTILINE)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 3, final.text
    assert "My account > Orders" in steps[0][1] or "Sign in" in steps[0][1], final.text
    assert final.html.count("<li>") == len(steps)


async def test_a_heading_alone_is_never_the_answer(demo_kb):
    final, _, _ = await ask("what does the warranty cover?", demo_kb)
    body = final.text.split("\n\n", 1)[-1]
    assert not re.fullmatch(r"[^.]*does not cover[^.]*\[\d+\]\.?", body.strip()), final.text
    assert len(body.split()) > 8, final.text


async def test_a_sibling_chunk_of_the_best_document_is_read_and_cited(demo_kb):
    final, sources, _ = await ask("I forgot my password", demo_kb)
    assert re.search(r"reset link|link", final.text, re.IGNORECASE), final.text
    assert all(1 <= n <= len(sources) for n in final.citations)
    cited = {sources[n - 1]["title"] for n in final.citations}
    assert any("password" in title.lower() for title in cited), cited


async def test_nothing_found_shows_no_sources_offers_a_person_in_the_question_language(demo_kb, settings):
    final, sources, statuses = await ask("What is the boiling point of liquid nitrogen on Jupiter?", demo_kb)
    assert final.offer_handoff is True and sources == [] and final.citations == []
    assert "talk to a person" in final.text
    assert final.trace["answer"]["reason"] == "below threshold"
    settings.ANSWER_MIN_SIMILARITY = settings.ANSWER_MIN_SIMILARITY_CROSS_LINGUAL = 1.01  # nothing is enough
    final, sources, statuses = await ask("木星上液氮的沸点是多少？", demo_kb)
    assert final.offer_handoff and sources == []
    with translation.override("zh-hans"):
        assert final.text == translation.gettext(
            "I couldn't find anything about that in the knowledge base. Would you like to talk to a person?"
        )
    assert re.search(r"[\u4e00-\u9fff]", final.text) and re.search(r"[\u4e00-\u9fff]", statuses[0])


async def test_the_answer_lead_in_and_status_lines_follow_the_question_language(demo_kb):
    final, _, statuses = await ask("Wie kann ich einen Artikel zurückgeben?", demo_kb)
    assert final.trace["language"] == "de"
    assert statuses[0] == "Suche in der Wissensdatenbank…"
    if not final.offer_handoff:
        assert final.text.startswith("Das steht dazu in der Wissensdatenbank:")


async def test_a_bare_code_falls_back_to_the_clients_language(demo_kb):
    final, _, statuses = await ask("E42", demo_kb, language="fr")
    assert final.trace["language"] == "fr"
    assert statuses[0] == "Recherche dans la base de connaissances…"


async def test_answering_costs_no_embedding_of_sentences(demo_kb, monkeypatch):
    """Model work per question is the query embedding only: the units' vectors come from the database."""
    await ask("how much does express delivery cost?", demo_kb)  # vectors of every chunk it reads exist now
    embedder = get_embedder()
    calls = []
    original = embedder.embed_documents
    monkeypatch.setattr(embedder, "embed_documents", lambda texts: calls.append(len(texts)) or original(texts))
    final, _, _ = await ask("how much does express delivery cost?", demo_kb)
    assert calls == [] and not final.offer_handoff


# --- follow-ups ---------------------------------------------------------------------------------------------


async def test_an_elliptic_follow_up_asks_the_previous_kind_of_fact_about_its_own_subject(demo_kb):
    # "and to Austria?" carries "standard shipping" over, but asks about Austria (the price row, not Germany's).
    history = [{"role": "user", "text": "how much is standard shipping within germany?"},
               {"role": "assistant", "text": "…"}]  # fmt: skip
    final, _, _ = await ask("and to Austria?", demo_kb, history=history)
    assert final.trace["rewritten_query"], "the follow-up is searched with the conversation"
    assert "price" in final.trace["answer"]["intents"], "the kind of fact comes from the previous question"
    assert re.search(r"(?<![\d.])7[.,]95", final.text), final.text


async def test_a_follow_up_without_a_pointing_word_is_searched_with_the_conversation_on_evidence(demo_kb):
    history = [{"role": "user", "text": "Can I pick up my online order in one of your showrooms?"},
               {"role": "assistant", "text": "…"}]  # fmt: skip
    final, _, _ = await ask("what should I bring along?", demo_kb, history=history)
    assert final.trace["rewritten_query"], final.trace
    assert not final.offer_handoff
    assert re.search(r"pickup code|\bID\b", final.text), final.text


def test_a_carried_term_weighs_less_than_the_customers_own():
    asked = Question.of("and to austria? standard shipping germany", [0.0], focus="and to austria?",
                        context="how much is standard shipping within germany?")  # fmt: skip
    assert asked.weight("austria") > asked.weight("germany") > 0
    assert asked.intents == {"price"}
    standalone = Question.of("what time do you open?", [0.0], context="how much is shipping?")
    assert standalone.intents == {"time"}, "a question naming its own kind of fact keeps it"


async def test_a_question_about_a_code_the_knowledge_base_never_names_is_declined(demo_kb):
    final, sources, _ = await ask("my dishwasher shows error E97, how do I fix it?", demo_kb)
    assert final.offer_handoff and sources == [], final.text
    assert final.trace["answer"]["reason"] in {"below threshold", "unknown code E97"}
    final, _, _ = await ask("my dishwasher shows error E42, how do I fix it?", demo_kb)
    assert not final.offer_handoff and "E42" in final.text


def test_order_numbers_and_times_are_not_product_codes():
    asked = Question.of("order NW-2024123 arrived at 3PM, E24 and NW-D900?", [0.0])
    assert asked.unknown_codes(["The NW-D900 dishwasher"]) == {"E24"}
