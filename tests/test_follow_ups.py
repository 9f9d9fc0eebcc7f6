"""Follow-ups by what they refer to (issue 18, point 5), on an airline's help centre (../shared/answer-corpora/skyvale).

An elliptical question ("when does she have to be there?", "is there a deadline?") is answered from the article the
conversation was on, even two turns on; a new question in the same conversation, in any language, is searched on its
own; the trace shows both searches, which one was used and why. The questions are written for these tests (not the
bench's question sets).
"""

from __future__ import annotations

import pytest

from knowledge.answering import FinalEvent, SourcesEvent, answer
from knowledge.answering.followups import previous_question, refers_back
from tests.corpora import ingested

ARTICLES = [
    "unaccompanied-minors.md",
    "travelling-with-pets.md",
    "lost-delayed-or-damaged-baggage.md",
    "delays-and-compensation.md",
    "baggage-allowance.md",
]


@pytest.fixture(scope="module")
def airline_kb(django_db_blocker):
    """Five of the airline's articles, ingested through the real path once for the module."""
    with django_db_blocker.unblock():
        yield from ingested("skyvale", ARTICLES, "Follow-ups")


async def converse(kb, *questions: str) -> tuple[FinalEvent, list[str]]:
    """Ask each question in turn in one conversation; the last answer and the titles of the documents it cites."""
    history: list[dict] = []
    for question in questions:
        events = [event async for event in answer(question, kb=kb, history=history)]
        final, sources = events[-1], final_sources(events)
        assert isinstance(final, FinalEvent)
        history += [{"role": "user", "text": question}, {"role": "assistant", "text": final.text}]
    return final, [sources[n - 1]["title"] for n in final.citations]


def final_sources(events: list) -> list[dict]:
    return next(event.items for event in reversed(events) if isinstance(event, SourcesEvent))


@pytest.mark.django_db
async def test_a_follow_up_about_a_person_is_answered_from_the_article_the_conversation_was_on(airline_kb, extractive):
    """ "she" points back, so the question is also searched with the conversation's words, and that search wins:
    the unaccompanied-minors article's 90 minutes, not the pets article's "at the desk at least 60 minutes"."""
    question = "Does she need to be at the desk early?"
    final, titles = await converse(airline_kb, "Can my 10 year old daughter fly on her own?", question)
    assert "90 minutes" in final.text and "60 minutes" not in final.text, (final.text, final.trace["searches"])
    assert titles and all("naccompanied" in title for title in titles), titles
    asked, rewritten = final.trace["searches"]
    assert asked["query"] == question and not asked["used"], final.trace["searches"]
    assert rewritten["used"] and "daughter" in rewritten["query"] and "points back" in rewritten["why"]


@pytest.mark.django_db
async def test_an_elliptical_question_two_turns_on_keeps_the_topic_of_the_first(airline_kb, extractive):
    """The second question only says "for that": the topic (a damaged suitcase) is in the first."""
    final, titles = await converse(
        airline_kb,
        "One wheel of my suitcase was torn off when it came out at the baggage belt.",
        "How do I claim for that?",
        "Is there a deadline for it?",
    )
    assert "7 days" in final.text, final.text
    assert final.trace["rewritten_query"] and "suitcase" in final.trace["rewritten_query"], final.trace


@pytest.mark.django_db
async def test_a_new_question_after_another_is_searched_on_its_own(airline_kb, extractive):
    """A new topic in the same conversation, in another language: its own search is used, not a rewrite."""
    question = "Mein Koffer wiegt 27 kg. Was kostet das Übergewicht?"
    final, titles = await converse(airline_kb, "Can my son of eight fly alone?", question)
    used = [search for search in final.trace["searches"] if search["used"]]
    assert [search["query"] for search in used] == [question], final.trace["searches"]
    assert final.trace["rewritten_query"] is None
    assert titles and not any("naccompanied" in title for title in titles), titles


def test_personal_pronouns_point_back_in_every_language():
    for question in ("How early must she be there?", "does he need a passport?", "Braucht er einen Ausweis?",
                     "Est-ce qu'il peut voyager seul ?", "¿Puede él viajar solo?"):  # fmt: skip
        assert refers_back(question), question


def test_a_question_that_pointed_back_brings_the_one_it_pointed_at():
    turns = [
        {"role": "user", "text": "my suitcase came out cracked"},
        {"role": "assistant", "text": "…"},
        {"role": "user", "text": "how do I claim for that?"},
        {"role": "assistant", "text": "…"},
    ]
    assert previous_question(turns) == "how do I claim for that? my suitcase came out cracked"
    turns[2]["text"] = "how much is a second checked bag?"  # a question of its own: only it
    assert previous_question(turns) == "how much is a second checked bag?"
