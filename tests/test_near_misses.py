"""Near misses (issue 18, point 3): a question about a thing the knowledge base never names is declined with the
"talk to a person" offer, and an answerable question of the same form is answered.

A mobile bank's help centre (../shared/answer-corpora/kestrel): "can I buy shares with my savings pockets?" is close
enough in meaning to its savings and plans to pass the cosine verdict, but it never names shares. The questions are written for these
tests (not the bench's question sets).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from knowledge.answering import FinalEvent, answer
from knowledge.answering.near_misses import asked_object, unnamed
from tests.corpora import ingested

ARTICLES = ["kestrel-plans.md", "savings-pockets.md", "overdraft.md", "freeze-and-replace-card.md", "card-limits.html"]


@pytest.fixture(scope="module")
def bank_kb(django_db_blocker):
    """Five of the bank's articles, ingested through the real path once for the module."""
    with django_db_blocker.unblock():
        yield from ingested("kestrel", ARTICLES, "Near misses")


async def ask(question: str, kb) -> FinalEvent:
    events = [event async for event in answer(question, kb=kb)]
    assert isinstance(events[-1], FinalEvent)
    return events[-1]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "question, missing",
    [
        ("Can I buy shares with my savings pockets?", "shares"),
        ("Is there a joint savings pocket for couples?", "joint"),
        ("Do you offer personal loans instead of an overdraft?", "personal"),
        ("你们支持PayPal付款吗？", "PayPal"),
    ],
)
async def test_a_question_about_something_the_knowledge_base_never_names_is_declined(
    bank_kb, extractive, question, missing
):
    final = await ask(question, bank_kb)
    assert final.offer_handoff and not final.citations, final.text
    # Past the cosine verdict (its reason would be "below threshold"), declined for the thing asked about.
    assert final.trace["answer"]["reason"] == f"asks for {missing!r}, named nowhere", final.trace["answer"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "question, fact",
    [
        ("Is there a fee for express delivery of a new card?", "€19.00"),
        ("Do you have virtual cards on the Plus plan?", "Virtual cards"),
        ("Do you offer an overdraft on the Basic plan?", "overdraft"),
    ],
)
async def test_a_question_of_the_same_form_about_what_it_names_is_answered(bank_kb, extractive, question, fact):
    final = await ask(question, bank_kb)
    assert not final.offer_handoff and fact in final.text, final.text


def test_only_the_object_of_an_offer_or_purchase_question_counts():
    assert asked_object("do you guys do mortgages? whats your rate") == (["mortgages"], "en")
    assert asked_object("is there a student discount on fares?") == (["student", "discount"], "en")
    for question in ("how do i get rid of my account", "do you have to pay for it?", "can we get a bit more time?",
                     "can i get my 2fa codes by text message instead?", "do you deliver to tenerife?"):  # fmt: skip
        assert asked_object(question)[0] == [], question


def test_words_are_compared_with_passages_in_the_question_language_and_in_any_form():
    english = [SimpleNamespace(text="We offer a mortgage and car loans. Cards are free.", language="en")]
    assert unnamed("Do you do mortgages?", english) is None  # "mortgages" is named by "mortgage"
    assert unnamed("Do you sell cardigans?", english) == "cardigans"  # "card" names no cardigan
    # A German question about an English article: its words can't be compared, meaning decides.
    assert unnamed("Gibt es eine Kfz-Versicherung?", english) is None
    assert unnamed("Gibt es eine Kfz-Versicherung?", [SimpleNamespace(text="Wir bieten Kredite.", language="de")])
