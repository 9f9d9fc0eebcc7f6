"""A message that asks two things gets both answered (issue 18, point 4: "one article unless the question spans two").

``knowledge/answering/subquestions.py`` splits a message at clear joints only (a second question after a question
mark, ", and" before a question word, in the languages the assistant is asked in), keeping the message's statements
in front of each part; the pipeline searches and answers each part and puts the answers one after the other, with
citations that agree.
"""

from __future__ import annotations

import re

import pytest

from knowledge.answering import FinalEvent, SourcesEvent, answer
from knowledge.answering.subquestions import split

pytestmark = pytest.mark.django_db(transaction=True)


def test_clear_joints_split_and_everything_else_stays_one_question():
    assert split("We're moving to Vienna. How much is express delivery, and when does the parcel arrive?") == [
        "We're moving to Vienna. How much is express delivery",
        "We're moving to Vienna. when does the parcel arrive?",
    ]
    # A part that points back or names nothing of its own is asked with the part before it.
    assert split("Can I get more time? How much?") == ["Can I get more time?", "Can I get more time? How much?"]
    assert split("How much is express, and how long does it take?")[1] == "How much is express how long does it take?"
    assert split("Wie lange dauert die Rückgabe? Wann bekomme ich mein Geld?") == [
        "Wie lange dauert die Rückgabe?", "Wann bekomme ich mein Geld?",
    ]
    assert split("退货要多久？退款什么时候到账？") == ["退货要多久？", "退款什么时候到账？"]
    assert split("¿Cuánto cuesta el envío a Italia, y cuántos días tarda en llegar?") == [
        "¿Cuánto cuesta el envío a Italia", "cuántos días tarda en llegar?",
    ]
    for one in ("Can I return it and get my money back?", "My card was stolen. How do I freeze it?",
                "opened the app and all it says is KS-518??", "how much is express and standard shipping?"):
        assert split(one) == [one]


async def test_a_two_part_question_gets_both_facts_from_two_articles(demo_kb, settings):
    settings.ANSWER_WORDS_PER_SECOND = 0
    events = [e async for e in answer(
        "How much does Northwind Plus cost a month, and how many years is a dishwasher's motor covered?", kb=demo_kb
    )]
    final = events[-1]
    assert isinstance(final, FinalEvent) and not final.offer_handoff
    assert re.search(r"(?<![\d.])4[.,]99", final.text), final.text
    assert re.search(r"10 years", final.text), final.text
    sources = next(e for e in events if isinstance(e, SourcesEvent)).items
    cited = {sources[n - 1]["document"] for n in final.citations}
    assert len(cited) == 2, final.text  # each part from its own article, the citations numbering one list
    assert [s["query"] for s in final.trace["searches"] if s.get("why") == "a part of the message"] == split(
        "How much does Northwind Plus cost a month, and how many years is a dishwasher's motor covered?"
    )
