"""One focused answer (issue 18, point 4): the row the customer asked about, with the columns they named.

Two companies' articles from ../shared/answer-corpora (a bank's card limits and card replacement, an airline's delay
compensation), ingested through the real path, asked through the real pipeline. The questions are written for these
tests. Also the kinds of fact a question asks, in several languages (``scoring.INTENTS``), and the words of a
Chinese question that writes Latin product names without spaces.
"""

from __future__ import annotations

import re

import pytest
from asgiref.sync import sync_to_async

from knowledge.answering import FinalEvent, answer
from knowledge.answering.scoring import Question, terms
from knowledge.ingest import pipeline
from tests.corpora import corpus_file

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def help_centre(settings):
    settings.ANSWER_GENERATOR, settings.ANSWER_WORDS_PER_SECOND = "extractive", 0
    files = [corpus_file("kestrel", "card-limits.html"), corpus_file("kestrel", "freeze-and-replace-card.md"),
             corpus_file("skyvale", "delays-and-compensation.md")]  # fmt: skip
    results = pipeline.ingest_path(files, "Focused answers")
    assert all(r.status == "ok" for r in results), [(r.path, r.error) for r in results]
    return pipeline.get_or_create_knowledge_base("Focused answers")


async def ask(question: str, kb) -> FinalEvent:
    events = [event async for event in answer(question, kb=kb)]
    final = events[-1]
    assert isinstance(final, FinalEvent)
    return final


async def test_a_table_look_up_quotes_one_row_with_the_column_asked_for(help_centre):
    kb = await sync_to_async(lambda: help_centre)()
    final = await ask("I'm on Basic. What's the most cash I can take out of an ATM in one month?", kb)
    assert "ATM withdrawals per calendar month — Basic: €1,500" in final.text, final.text
    assert "€6,000" not in final.text and "per day" not in final.text, final.text  # not Metal's, not another row

    final = await ask("My Metal card broke again, the third this year. What does the next one cost?", kb)
    assert re.search(r"Replacement card — Metal: First two each calendar year free, then €39\.00", final.text), final.text
    assert "Basic:" not in final.text, final.text


async def test_a_number_inside_a_range_picks_the_row(help_centre):
    kb = await sync_to_async(lambda: help_centre)()
    final = await ask("Our flight was about 2,900 km and landed five hours late. How much compensation do we get?", kb)
    assert "€400" in final.text, final.text
    assert "€600" not in final.text and "€250" not in final.text, final.text


async def test_a_chinese_question_names_a_plan_in_latin_letters(help_centre):
    kb = await sync_to_async(lambda: help_centre)()
    final = await ask("我是Metal套餐，每天在ATM最多能取多少钱？", kb)
    assert "Metal: €1,200" in final.text, final.text
    assert "Basic:" not in final.text, final.text


def test_the_kind_of_fact_asked_in_several_languages():
    def kinds(text: str, context: str | None = None) -> set[str]:
        return Question.of(text, [0.0], context=context).intents

    assert "yesno" in kinds("can I pay the driver in cash when the parcel comes?")
    assert kinds("Kann ich die Prüfung mit meinem Führerschein machen?") == {"yesno"}
    assert "yesno" not in kinds("How do I pay the driver in cash?")
    assert "yesno" in kinds("可以直接转钱到支付宝吗？")
    assert kinds("Bis wie viel Uhr muss ich die Überweisung abschicken?") == {"time"}
    assert {"time", "duration"} <= kinds("¿y hasta cuándo puedo seguir metiendo dinero?")
    # a follow-up naming no kind of fact asks the previous one's, but not its yes-or-no
    assert kinds("and to Austria?", context="how much is standard shipping?") == {"price"}
    assert kinds("what do I need to bring?", context="can I collect my order in the shop?") == set()


def test_latin_words_inside_chinese_are_words():
    assert {"basic", "atm", "套餐"} <= terms("我是Basic套餐，一个月在ATM最多能取多少钱？")
    assert "ks-701" in terms("App显示KS-701，登录不进去了")
