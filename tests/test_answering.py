"""The answer pipeline with the offline extractive generator: real database, real embedder."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from knowledge.answering import (
    GENERATORS,
    FinalEvent,
    Generator,
    SourcesEvent,
    TokenEvent,
    answer,
    cited_sources,
    get_generator,
    render_answer_html,
    retrieved_text,
)
from knowledge.answering.generators.extractive import NOTHING_FOUND, ExtractiveGenerator
from tests.answering_kb import build_kb

pytestmark = pytest.mark.django_db(transaction=True)  # retrieval runs on other threads' connections

#: The yes/no members of ``Generator``.
FLAGS = ("grounded", "composes", "answers_searched_query", "rewrites_cheaply")


@pytest.fixture
def kb(settings):
    settings.ANSWER_WORDS_PER_SECOND = 0
    settings.ANSWER_GENERATOR = "extractive"
    return build_kb()


async def collect(question: str, kb, **kwargs) -> list:
    return [event async for event in answer(question, kb=kb, **kwargs)]


async def test_events_come_in_order_and_final_text_is_the_tokens(kb):
    events = await collect("How long do refunds take?", kb)

    kinds = [(e.type, getattr(e, "stage", None)) for e in events]
    assert kinds[:4] == [
        ("status", "retrieving"),
        ("status", "retrieved"),
        ("sources", None),
        ("status", "generating"),
    ]
    assert kinds[-1] == ("final", None)
    tokens = [e for e in events[4:-1]]
    assert tokens and all(isinstance(e, TokenEvent) for e in tokens)

    final = events[-1]
    assert isinstance(final, FinalEvent)
    assert final.state == "complete"
    assert final.text == "".join(t.text for t in tokens)
    assert "5 business days" in final.text  # quoted from the refunds article
    assert events[0].text == "Searching the knowledge base…"
    assert events[3].text == "Writing the answer…"
    assert re.fullmatch(r"Found \d+ passages? in \d+ documents?", events[1].text)


async def test_sources_are_numbered_and_citations_point_at_them(kb):
    events = await collect("How long do refunds take?", kb)
    sources = next(e for e in events if isinstance(e, SourcesEvent))
    final = events[-1]

    numbers = [item["n"] for item in sources.items]
    assert numbers == list(range(1, len(numbers) + 1))
    assert set(sources.items[0]) == {"n", "document", "title", "heading", "page", "snippet", "score", "url"}
    assert final.citations, final.text
    assert set(final.citations) <= set(numbers)
    for n in final.citations:
        assert f"[{n}]" in final.text
    refunds = next(item for item in sources.items if item["title"] == "Refunds")
    assert refunds["n"] in final.citations
    assert f'href="#source-{refunds["n"]}"' in final.html

    assert set(final.timings) >= {"retrieve_ms", "embed_ms", "db_ms", "generate_ms", "first_token_ms", "total_ms"}
    assert final.timings["total_ms"] >= final.timings["generate_ms"] > 0
    assert final.trace["generator"] == "extractive"
    assert final.trace["query"] == "How long do refunds take?"
    assert final.trace["rewritten_query"] is None
    assert [p["n"] for p in final.trace["passages"]] == numbers
    assert {"chunk_id", "vector_score", "keyword_score", "score"} <= set(final.trace["passages"][0])


async def test_script_in_a_passage_never_becomes_markup(kb):
    final = (await collect("What does the cache cleaner script do?", kb))[-1]
    assert "<script>" in final.text  # the passage's own words were quoted...
    assert "<script" not in final.html  # ...but only ever rendered as text
    assert "&lt;script&gt;" in final.html


async def test_off_topic_question_says_so_and_invents_nothing(kb):
    events = await collect("What is the boiling point of liquid nitrogen on Jupiter?", kb)
    final = events[-1]
    assert final.text == NOTHING_FOUND
    assert final.citations == [] and final.offer_handoff is True
    sources = next(e for e in events if isinstance(e, SourcesEvent))
    assert sources.items == []  # no chips for passages that do not answer
    assert final.trace["passages"], "the trace still shows what was retrieved"


async def test_follow_up_is_rewritten_with_the_previous_question(kb):
    history = [
        {"role": "user", "text": "How do I reset my password?"},
        {"role": "assistant", "text": "Click Forgot password [1]."},
    ]
    final = (await collect("How long is it valid?", kb, history=history))[-1]
    assert final.trace["rewritten_query"] is not None
    assert "password" in final.trace["rewritten_query"]
    assert "30 minutes" in final.text
    # The trace shows both searches, which one was used and why.
    asked, rewritten = final.trace["searches"]
    assert asked["query"] == "How long is it valid?" and not asked["used"]
    assert rewritten["query"] == final.trace["rewritten_query"] and rewritten["used"]
    assert rewritten["why"].startswith("kept:") and "points back" in rewritten["why"]


async def test_pace_setting_spaces_the_words(kb, settings):
    settings.ANSWER_WORDS_PER_SECOND = 0
    started = time.monotonic()
    fast = await collect("How long do refunds take?", kb)
    fast_elapsed = time.monotonic() - started
    words = sum(isinstance(e, TokenEvent) for e in fast)

    pace = 100.0
    settings.ANSWER_WORDS_PER_SECOND = pace
    slow = await collect("How long do refunds take?", kb)
    generate_s = slow[-1].timings["generate_ms"] / 1000
    assert [e.text for e in slow if isinstance(e, TokenEvent)] == [e.text for e in fast if isinstance(e, TokenEvent)]
    assert generate_s >= (words - 1) / pace * 0.5, (generate_s, words)
    assert fast_elapsed < 30  # sanity: no accidental pacing without the setting


async def test_cancelling_the_consumer_stops_the_stream(kb, settings):
    settings.ANSWER_WORDS_PER_SECOND = 20
    received: list = []
    first_token = asyncio.Event()

    async def consume():
        async for event in answer("How do I return an item?", kb=kb):
            received.append(event)
            if isinstance(event, TokenEvent):
                first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    tokens_at_cancel = sum(isinstance(e, TokenEvent) for e in received)
    await asyncio.sleep(0.2)  # nothing keeps producing after the cancel
    assert sum(isinstance(e, TokenEvent) for e in received) == tokens_at_cancel
    assert not any(isinstance(e, FinalEvent) for e in received)


async def test_extractive_generator_removes_near_duplicates(kb):
    # Two chunks repeating one sentence (chunk overlap) must not produce it twice.
    from knowledge.retrieval import asearch

    result = await asearch("How long do refunds take?", kb=kb, k=4)
    passages = result.passages + result.passages  # every sentence twice, as with overlapping chunks
    text = await asyncio.to_thread(ExtractiveGenerator().compose, "How long do refunds take?", passages)
    assert text.count("we refund you within 5 business days") == 1


def test_status_line_pluralises():
    class P:
        def __init__(self, document_id):
            self.document_id = document_id

    assert retrieved_text([]) == "No matching passages found"
    assert retrieved_text([P(1)]) == "Found 1 passage in 1 document"
    assert retrieved_text([P(1), P(1), P(2)]) == "Found 3 passages in 2 documents"


def test_html_links_real_citations_only_and_keeps_markdown_safe():
    html = render_answer_html(
        "Return it **within 30 days** [1][2]. See [9] and `code [1]`.\n\n"
        "[click](javascript:alert(1)) [help](https://example.com/help) <b>x</b>",
        2,
    )
    assert '<sup class="cite"><a href="#source-1" data-n="1"' in html
    assert 'href="#source-2"' in html
    assert "[9]" in html and "#source-9" not in html  # not one of our sources: left as text
    assert "<code>code [1]</code>" in html  # code is never rewritten
    assert "<strong>within 30 days</strong>" in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.com/help" rel="noopener noreferrer">help</a>' in html
    assert "<b>" not in html
    assert cited_sources("See [1, 3] and [2] and [9] and [3]", 3) == [1, 2, 3]


def test_generator_factory(settings):
    settings.ANSWER_GENERATOR = "extractive"
    assert get_generator().name == "extractive"
    settings.ANSWER_GENERATOR = "nope"
    with pytest.raises(Exception, match="Unknown ANSWER_GENERATOR"):
        get_generator()


def test_every_generator_declares_what_the_pipeline_reads(settings):
    # The pipeline and the grounding guard read each member of ``Generator`` plainly, with no default to fall back on.
    settings.LLM_BASE_URL, settings.LLM_MODEL = "http://127.0.0.1:9/v1", "standin"
    for name in GENERATORS:
        generator = get_generator(name)
        assert isinstance(generator, Generator), f"{name} lacks a member of Generator"
        assert {type(getattr(generator, flag)) for flag in FLAGS} == {bool}, name
    extractive, llm = get_generator("extractive"), get_generator("openai")
    assert [getattr(extractive, flag) for flag in FLAGS] == [True, True, True, True]  # its answer is the composition
    assert [getattr(llm, flag) for flag in FLAGS] == [False, False, False, False]  # guarded, writes its own answer


async def test_a_new_question_after_an_unrelated_one_is_not_rewritten(kb):
    # Short, but complete on its own: it must not drift to the previous topic (passwords).
    history = [
        {"role": "user", "text": "I forgot my password"},
        {"role": "assistant", "text": "Click Forgot password on the sign-in page [1]."},
    ]
    events = await collect("how long do refunds take", kb, history=history)
    final = events[-1]
    assert final.trace["rewritten_query"] is None
    assert final.trace["passages"][0]["title"] == "Refunds"
    assert "5 business days" in final.text


def test_only_questions_that_point_back_depend_on_the_conversation():
    from knowledge.answering.followups import refers_back

    for question in ("How long is it valid?", "and to Austria?", "what about the blender?", "那退款呢？",
                     "Und wie lange dauert das?", "how long does that take?"):  # fmt: skip
        assert refers_back(question), question
    for question in ("how much is express delivery", "I forgot my password", "怎么退货", "wie viel kostet Express"):
        assert not refers_back(question), question
