"""Curated answers (issue 21, point 3): the answer staff write for some questions, given as it is, cited as "Answer
from the support team".

Stored in the knowledge base as a passage of its own (a ``Document`` of kind ``curated``), found by search like any
passage, preferred over the articles when the question matches one of its questions (or asks it in other words),
never for a question it was not written for; an edit changes the very next answer, deactivating or deleting it takes
it out. The admin's add form takes ``?knowledge_base=<id>&questions=<lines>`` (the knowledge gaps' link). End to end
in a browser: staff edit a curated answer in the admin and a customer's next question streams the new text.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from knowledge import retrieval
from knowledge.answering import FinalEvent, SourcesEvent, answer
from knowledge.models import Chunk, CuratedAnswer, Document
from tests import test_chat_page as chat_page
from tests.answering_kb import build_kb
from tests.browser import new_page

pytestmark = pytest.mark.django_db(transaction=True)  # retrieval runs on other threads' connections
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

STAFF_PASSWORD = "pw-staff-curated-1"
REFUND_QUESTIONS = "How long do refunds take?\nWhen do I get my money back after a return?"
REFUND_ANSWER = "We refund you within 3 business days of your parcel reaching our warehouse."


@pytest.fixture
def kb(extractive):
    return build_kb()


def curate(kb, questions: str = REFUND_QUESTIONS, text: str = REFUND_ANSWER, **fields) -> CuratedAnswer:
    return CuratedAnswer.objects.create(knowledge_base=kb, questions=questions, answer=text, **fields)


async def ask(question: str, kb) -> tuple[FinalEvent, list[dict]]:
    final, sources = None, []
    async for event in answer(question, kb=kb):
        if isinstance(event, SourcesEvent):
            sources = event.items
        elif isinstance(event, FinalEvent):
            final = event
    assert final is not None
    return final, sources


def test_a_curated_answer_is_stored_as_a_passage_of_its_own_and_found_like_one(kb):
    curated = curate(kb)
    document = Document.objects.get(pk=curated.document_id)
    assert (document.kind, document.status, document.knowledge_base_id) == ("curated", "ready", kb.pk)
    [chunk] = Chunk.objects.filter(document=document)
    assert chunk.text == REFUND_ANSWER and chunk.language == "en" and chunk.embedding is not None
    assert "When do I get my money back" in chunk.heading_path  # its questions' words are searched too
    for mode in ("vector", "keyword"):
        found = retrieval.search("when do I get my money back", kb=kb, mode=mode).passages
        assert found[0].document_id == document.pk and found[0].kind == "curated", mode


async def test_it_is_preferred_over_an_article_that_also_answers_and_cited_as_the_support_team(kb):
    before, _ = await ask("how long until my refund arrives?", kb)
    assert "5 business days" in before.text  # the article
    curated = await curate_async(kb)
    final, sources = await ask("how long until my refund arrives?", kb)
    assert final.text == "We refund you within 3 business days of your parcel reaching our warehouse [1]."
    assert [(s["n"], s["title"], s["heading"], s.get("kind")) for s in sources] == [
        (1, "Answer from the support team", "", "curated")
    ]
    assert final.citations == [1] and "5 business days" not in final.text
    assert final.trace["answer"]["curated"]["curated"] == curated.pk
    assert final.trace["answer"]["curated"]["similarity"] >= final.trace["answer"]["curated"]["threshold"]
    assert final.trace["passages"][0]["title"] == "Answer from the support team"


async def test_a_question_it_was_not_written_for_gets_the_articles_answer(kb):
    await curate_async(kb)
    for question in ("How do I reset my password?", "Can I return an item after 30 days?"):
        final, sources = await ask(question, kb)
        assert "3 business days" not in final.text, question
        assert "curated" not in final.trace["answer"], question
    final, _ = await ask("How do I reset my password?", kb)
    assert "Forgot password" in final.text


async def test_an_answer_written_in_german_answers_german_questions_and_is_labelled_in_german(kb):
    await curate_async(kb)
    await curate_async(
        kb,
        questions="Wie lange dauert die Rückerstattung?\nWann bekomme ich nach einer Rücksendung mein Geld zurück?",
        text="Wir erstatten den Betrag innerhalb von 3 Werktagen, nachdem Ihr Paket bei uns angekommen ist.",
    )
    final, sources = await ask("wann bekomme ich nach einer rücksendung mein geld zurück", kb)  # typed, not pasted
    assert "innerhalb von 3 Werktagen" in final.text
    assert sources[0]["title"] == "Antwort des Support-Teams"
    english, sources = await ask("How long do refunds take?", kb)
    assert "within 3 business days" in english.text and sources[0]["title"] == "Answer from the support team"


async def test_an_edit_changes_the_next_answer_at_once(kb):
    curated = await curate_async(kb)
    first, _ = await ask("How long do refunds take?", kb)
    assert "3 business days" in first.text
    curated.answer = "Refunds now reach you within 24 hours of your parcel reaching our warehouse."
    await save_async(curated)
    second, _ = await ask("How long do refunds take?", kb)
    assert "within 24 hours" in second.text and "3 business days" not in second.text


async def test_deactivating_or_deleting_takes_it_out_of_the_knowledge_base(kb):
    curated = await curate_async(kb)
    document_id = curated.document_id
    curated.active = False
    await save_async(curated)
    assert not await exists_async(document_id)
    final, _ = await ask("How long do refunds take?", kb)
    assert "5 business days" in final.text and "3 business days" not in final.text
    curated.active = True
    await save_async(curated)
    assert "3 business days" in (await ask("How long do refunds take?", kb))[0].text
    document_id = curated.document_id
    await delete_async(curated)
    assert not await exists_async(document_id)
    assert "5 business days" in (await ask("How long do refunds take?", kb))[0].text


# --- the admin ---------------------------------------------------------------------------------------------------


def test_the_add_form_is_prefilled_from_the_query_string(kb, admin_client):
    questions = "Is there a student discount?\nGibt es Rabatt für Studenten?"
    url = (
        reverse("admin:knowledge_curatedanswer_add")
        + "?"
        + urlencode({"knowledge_base": kb.pk, "questions": questions})
    )
    page = admin_client.get(url).content.decode()
    textarea = re.search(r'<textarea name="questions"[^>]*>(.*?)</textarea>', page, re.S)
    assert textarea and textarea.group(1).strip() == questions  # the newline survives
    assert re.search(rf'<option value="{kb.pk}" selected>', page)


def test_staff_save_in_the_admin_and_it_is_indexed_with_who_wrote_it(kb, admin_client, admin_user):
    response = admin_client.post(
        reverse("admin:knowledge_curatedanswer_add"),
        {"knowledge_base": kb.pk, "questions": REFUND_QUESTIONS, "answer": REFUND_ANSWER, "active": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    curated = CuratedAnswer.objects.get()
    assert curated.created_by == admin_user == curated.updated_by
    assert Document.objects.get(pk=curated.document_id).kind == "curated"
    page = admin_client.get(reverse("admin:knowledge_curatedanswer_change", args=[curated.pk])).content.decode()
    assert f"document {curated.document_id}" in page


def test_reindexing_its_document_in_the_admin_rebuilds_it_from_the_curated_answer(kb, admin_client):
    curated = curate(kb)
    Chunk.objects.filter(document_id=curated.document_id).update(heading_path="", text="stale")
    response = admin_client.post(
        reverse("admin:knowledge_document_changelist"),
        {"action": "reindex", "_selected_action": [curated.document_id]},
        follow=True,
    )
    assert [str(m) for m in response.context["messages"]] == [
        "Re-indexed 1 curated answer(s) from their questions and answer."
    ]
    document = Document.objects.get(pk=curated.document_id)
    [chunk] = Chunk.objects.filter(document=document)
    assert document.status == "ready" and chunk.text == REFUND_ANSWER  # not queued as a file, nothing lost
    assert "When do I get my money back" in chunk.heading_path


def test_someone_who_is_not_staff_cannot_reach_the_curated_answers(kb, client, django_user_model):
    customer = django_user_model.objects.create_user("customer", password="pw-customer-1")
    client.force_login(customer)
    for url in (reverse("admin:knowledge_curatedanswer_add") + f"?knowledge_base={kb.pk}",
                reverse("admin:knowledge_curatedanswer_changelist")):  # fmt: skip
        response = client.get(url)
        assert response.status_code == 302 and reverse("admin:login") in response["Location"]


# --- helpers for the async tests ---------------------------------------------------------------------------------


async def curate_async(kb, **fields) -> CuratedAnswer:
    from asgiref.sync import sync_to_async

    return await sync_to_async(curate)(kb, **fields)


async def save_async(curated: CuratedAnswer) -> None:
    await curated.asave()


async def delete_async(curated: CuratedAnswer) -> None:
    await curated.adelete()


async def exists_async(document_id: int | None) -> bool:
    return document_id is not None and await Document.objects.filter(pk=document_id).aexists()


# --- the harness (bench/curated.py) -----------------------------------------------------------------------------


@pytest.mark.slow
def test_curated_answers_fix_their_questions_and_paraphrases_and_break_nothing_on_another_help_centre(extractive):
    """planbase, a help centre the bars were not set on: a curated answer for every question the answerer misses
    fixes it, at least 19 of its 30 paraphrases are right (21 measured, 16 before), and no other question of the set
    gets worse (docs/benchmarks.md "Curated answers")."""
    from bench.answer_questions import select_corpora
    from bench.curated import bench_knowledge_base, measure

    (corpus,) = select_corpora("planbase")
    figures = measure(corpus, bench_knowledge_base(corpus))
    report = {key: figures[key] for key in ("misses", "curated", "fixed", "paraphrases", "paraphrases_right_before",
                                            "paraphrases_right_after", "broken")}  # fmt: skip
    assert figures["curated"] >= 8 and figures["fixed"] == figures["curated"], report
    assert figures["paraphrases_right_after"] >= 19, report
    assert figures["paraphrases_right_after"] > figures["paraphrases_right_before"], report
    assert figures["broken"] == [], report


# --- in a browser ------------------------------------------------------------------------------------------------

SHOTS = Path(os.environ.get("SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "shots" / "curated")
RETURN_QUESTION = "How do I return an item?"
OLD_RETURN_ANSWER = "Open **My account > Orders**, choose *Return* next to the item and print the free label."
NEW_RETURN_ANSWER = "Returns are free for 60 days this winter: choose *Return* in **My account > Orders**."


@pytest.mark.e2e
def test_staff_edit_an_answer_in_the_admin_and_the_customers_next_question_streams_the_new_one(
    daphne_server, demo_kb, browser, django_user_model
):
    django_user_model.objects.create_user("customer", password=chat_page.PASSWORD)
    django_user_model.objects.create_superuser("lead", password=STAFF_PASSWORD)
    curated = curate(demo_kb, questions=RETURN_QUESTION, text=OLD_RETURN_ANSWER)
    node = daphne_server()
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    customer_context, customer = new_page(browser, errors, width=1280)
    staff_context, staff = new_page(browser, errors, width=1280)
    try:
        chat_page.sign_in_and_open_new_conversation(customer, node.url)
        chat_page.ask(customer, "how do i return an item")
        chat_page.wait_for_final(customer, "complete")
        assert "print the free label" in chat_page.last_answer(customer).locator(".answer").inner_text()

        change = f"{node.url}{reverse('admin:knowledge_curatedanswer_change', args=[curated.pk])}"
        staff.goto(change)
        staff.fill("#id_username", "lead")
        staff.fill("#id_password", STAFF_PASSWORD)
        staff.click("input[type=submit]")
        staff.wait_for_url(change)
        assert staff.input_value("#id_questions") == RETURN_QUESTION
        staff.fill("#id_answer", NEW_RETURN_ANSWER)
        staff.screenshot(path=str(SHOTS / "admin-form.png"), full_page=True)
        staff.set_viewport_size({"width": 390, "height": 900})
        staff.screenshot(path=str(SHOTS / "admin-form-390.png"), full_page=True)
        staff.click("input[name=_continue]")
        staff.wait_for_selector(".messagelist .success")
        curated.refresh_from_db()
        assert (curated.answer, curated.updated_by.username) == (NEW_RETURN_ANSWER, "lead")
        assert Chunk.objects.get(document_id=curated.document_id).text == NEW_RETURN_ANSWER

        chat_page.ask(customer, "How do I return an item?")
        customer.wait_for_function("() => document.querySelectorAll('.msg-assistant').length === 2")
        chat_page.wait_for_final(customer, "complete")
        answer_el = chat_page.last_answer(customer)
        text = answer_el.locator(".answer").inner_text()
        assert "Returns are free for 60 days this winter" in text and "print the free label" not in text
        chips = answer_el.locator(".source")
        assert chips.count() == 1
        assert chips.first.get_attribute("data-kind") == "curated"
        assert chips.first.locator(".chip .t").inner_text() == "Answer from the support team"
        assert answer_el.locator("sup.cite a").first.inner_text() == "[1]"
        answer_el.scroll_into_view_if_needed()
        customer.screenshot(path=str(SHOTS / "chat-citation.png"))
        customer.set_viewport_size({"width": 390, "height": 844})
        answer_el.scroll_into_view_if_needed()
        customer.screenshot(path=str(SHOTS / "chat-citation-390.png"))
        assert not errors, errors
    finally:
        customer_context.close()
        staff_context.close()
