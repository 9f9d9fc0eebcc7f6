"""The grounding guard: citations of unlisted sources never reach a token; an uncited answer is marked or replaced.

The filter is tested on adversarial token splits; the whole guard through answer() and the chat socket with the
OpenAI-compatible stand-in replying with bad or no citations (the real local model: tests/test_local_llm.py).
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from conversations import protocol, streaming
from conversations.models import Message
from knowledge.answering import FinalEvent, TokenEvent, answer
from knowledge.answering.generators.extractive import ExtractiveGenerator
from knowledge.answering.grounding import CitationFilter, Guard, extractive_answer
from tests.answering_kb import build_kb
from tests.chat_support import assert_contiguous, connect, stream_text
from tests.llm_standin import LLMStandin


def run_filter(pieces: list[str], sources: int = 3) -> tuple[str, list[str], CitationFilter]:
    """Feed ``pieces`` one by one; returns the joined output, the emitted pieces and the filter."""
    f = CitationFilter(sources)
    out = [f.feed(p) for p in pieces] + [f.flush()]
    return "".join(out), out, f


def every_split(text: str) -> list[list[str]]:
    """The text one character per token, in two halves at every point, and whole."""
    return [list(text), [text]] + [[text[:i], text[i:]] for i in range(1, len(text))]


# --- The streaming filter ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Returns are free [1].", "Returns are free [1]."),
        ("Returns are free [9].", "Returns are free."),
        ("Returns are free [1, 9].", "Returns are free [1]."),
        ("Returns are free [9,1 , 12].", "Returns are free [1]."),
        ("Free [4][2] and fast [0].", "Free [2] and fast."),
        ("Free [12] and fast [3].", "Free and fast [3]."),
        ("See [the returns page](https://example.com/r) [2].", "See [the returns page](https://example.com/r) [2]."),
        ("A label [9](https://example.com) stays a link.", "A label [9](https://example.com) stays a link."),
        ("An array a[i] and [] and [ 1 ] and [x1].", "An array a[i] and [] and [ 1 ] and [x1]."),
        ("Step one.\n\n[7] Step two [2].", "Step one.\n\n Step two [2]."),
        ("Nested [[1]] and [[9]].", "Nested [[1]] and []."),
        ("[1234] is not a citation, [123] is.", "[1234] is not a citation, is."),
        ("Unclosed at the end [", "Unclosed at the end ["),
        ("Unclosed number at the end [2", "Unclosed number at the end [2"),
        ("Trailing space kept ", "Trailing space kept "),
        ("Too long [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 9] stays", "Too long [1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 9] stays"),
    ],
)
def test_filter_output_is_the_same_for_every_token_split(text, expected):
    for pieces in every_split(text):
        output, _, _ = run_filter(pieces)
        assert output == expected, pieces


def test_a_citation_split_over_tokens_is_held_until_the_bracket_closes():
    _, out, f = run_filter(["Refunds take 5 days ", "[", "1", "]", "."])
    assert out == ["Refunds take 5 days", "", "", " [1]", ".", ""]
    _, out, f = run_filter(["Refunds take 5 days ", "[12", "]", " and more"])
    assert "".join(out) == "Refunds take 5 days and more" and f.removed == ["[12]"]
    assert out[1] == ""  # "[12" was never shown, even for a moment


def test_a_lone_bracket_at_the_end_is_emitted_by_flush():
    f = CitationFilter(3)
    assert f.feed("Is it [") == "Is it"
    assert f.flush() == " ["


def test_text_that_is_clearly_not_a_citation_is_not_held():
    f = CitationFilter(3)
    assert f.feed("a [t") == "a [t"  # a Markdown link or plain bracket: out at once
    assert f.feed("ext](url)") == "ext](url)"


def test_no_sources_means_every_citation_goes():
    output, _, f = run_filter(["I could not find it [1]. Sorry [2, 3]."], sources=0)
    assert output == "I could not find it. Sorry." and f.removed == ["[1]", "[2, 3]"]


def test_removed_citations_are_recorded():
    _, _, f = run_filter(["A [1, 7]. B [8]. C [2]."])
    assert f.removed == ["[1, 7]", "[8]"]


# --- Through answer() with the OpenAI-compatible stand-in --------------------------------------------------
@pytest.fixture
def llm(settings):
    with LLMStandin() as standin:
        settings.ANSWER_GENERATOR = "openai"
        settings.LLM_BASE_URL = standin.base_url
        settings.LLM_MODEL = "standin-model"
        settings.LLM_TIMEOUT = 5.0
        settings.RETRIEVAL_TOP_K = 3
        settings.ANSWER_WORDS_PER_SECOND = 0
        settings.LLM_UNCITED_ANSWER = "mark"
        yield standin


async def collect(question: str, kb) -> list:
    return [event async for event in answer(question, kb=kb)]


@pytest.mark.django_db(transaction=True)
async def test_bad_citations_never_reach_a_token(llm):
    kb = await build_kb_async()
    llm.reply = "Refunds take 5 business days [2][7]. Returns within 30 days [1, 12]. Labels [9]."
    events = await collect("How long do refunds take?", kb)
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    final = events[-1]
    assert isinstance(final, FinalEvent) and not final.replaced
    assert final.text == "".join(tokens) == "Refunds take 5 business days [2]. Returns within 30 days [1]. Labels."
    assert not any(bad in token for token in tokens for bad in ("7", "9", "12"))  # not even for a moment
    assert final.citations == [1, 2]
    assert final.trace["grounding"] == {
        "sources": 3, "cited": True, "citations": [1, 2], "removed": ["[7]", "[1, 12]", "[9]"],
        "action": "none", "replaced": False,
    }  # fmt: skip


@pytest.mark.django_db(transaction=True)
async def test_an_uncited_answer_is_marked_by_default(llm):
    kb = await build_kb_async()
    llm.reply = "You can send it back within a month, no questions asked."
    events = await collect("Can I return an item?", kb)
    final = events[-1]
    assert final.text == "".join(e.text for e in events if isinstance(e, TokenEvent)) == llm.reply
    assert not final.replaced and final.citations == []
    assert final.trace["grounding"]["cited"] is False and final.trace["grounding"]["action"] == "marked"


@pytest.mark.django_db(transaction=True)
async def test_an_uncited_answer_is_replaced_by_the_extractive_one_when_asked(llm, settings):
    settings.LLM_UNCITED_ANSWER = "replace"
    kb = await build_kb_async()
    llm.reply = "You can send it back within a month, no questions asked [9]."  # [9] is removed: nothing cited
    events = await collect("How many days do I have to return an item?", kb)
    tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
    final = events[-1]
    assert tokens == "You can send it back within a month, no questions asked."  # what streamed
    assert final.replaced is True
    passages = [p for p in final.trace["passages"]]
    assert final.text != tokens and final.citations and "30 days" in final.text
    assert set(final.citations) <= {p["n"] for p in passages}
    grounding = final.trace["grounding"]
    assert grounding["action"] == "replaced" and grounding["generated_text"] == tokens
    assert grounding["removed"] == ["[9]"]


@pytest.mark.django_db(transaction=True)
async def test_the_extractive_generator_is_not_guarded(settings):
    settings.ANSWER_GENERATOR = "extractive"
    settings.ANSWER_WORDS_PER_SECOND = 0
    kb = await build_kb_async()
    events = await collect("How do I reset my password?", kb)
    assert "grounding" not in events[-1].trace and events[-1].replaced is False
    assert not Guard(ExtractiveGenerator(), []).active


@pytest.mark.django_db(transaction=True)
async def test_prompt_forbids_answering_beyond_the_passages(llm):
    kb = await build_kb_async()
    await collect("How do I reset my password?", kb)
    system = llm.streamed_requests()[-1]["messages"][0]["content"]
    for rule in ("ONLY the numbered passages", "Cite every claim", "don't know", "customer's language"):
        assert rule in system
    assert system.index("Rules:") < system.index("Passages:")  # instructions first: the prefix is cacheable


@pytest.mark.django_db(transaction=True)
async def test_extractive_answer_composes_over_the_same_passages(settings):
    settings.ANSWER_WORDS_PER_SECOND = 5  # no pacing applies: the replacement is built at once
    from asgiref.sync import sync_to_async

    from knowledge.retrieval import search

    kb = await build_kb_async()
    passages = (await sync_to_async(search)("reset my password", kb=kb, k=3)).passages
    text = await extractive_answer("reset my password", passages)
    assert text == await sync_to_async(ExtractiveGenerator().compose)("reset my password", passages)
    assert "[" in text


async def build_kb_async():
    from asgiref.sync import sync_to_async

    return await sync_to_async(build_kb)()


# --- Through the chat socket: the final says replaced, the stored message holds the replacement ----------------
@pytest.mark.django_db(transaction=True)
async def test_replaced_answer_over_the_socket_is_stored_and_replays_identically(llm, settings, cleanup):
    settings.LLM_UNCITED_ANSWER = "replace"
    settings.REDIS_URL = ""
    await build_kb_async()
    user = await get_user_model().objects.acreate_user("grounded", password="pw-grounded-1")
    llm.reply = "Sure, just send it back whenever you like."
    client = await connect(user)
    ack = await client.ask("How many days do I have to return an item?", kb="Answering test KB")
    frames = await client.until_final(ack["message"])
    assert_contiguous(frames)
    final = frames[-1]
    streamed = stream_text(frames)
    assert streamed == llm.reply
    assert final["state"] == "complete" and final["replaced"] is True
    assert final["text"] != streamed and "30 days" in final["text"] and final["citations"]
    assert 'href="#source-' in final["html"]

    message = await Message.objects.aget(pk=ack["message"])
    assert message.text == final["text"] and message.html == final["html"]
    assert message.trace["grounding"]["generated_text"] == streamed
    # After the frame log expires the frames are rebuilt from the database: same seqs, same tokens, same final.
    rebuilt = streaming.frames_from_db(message)
    assert [f["seq"] for f in rebuilt] == [f["seq"] for f in frames]
    assert stream_text(rebuilt) == streamed
    assert rebuilt[-1] == final
    await client.close()


@pytest.mark.django_db(transaction=True)
async def test_a_normal_final_says_not_replaced(llm, settings, cleanup):
    settings.REDIS_URL = ""
    await build_kb_async()
    user = await get_user_model().objects.acreate_user("cited", password="pw-cited-123")
    llm.reply = "Reset it from the sign-in page [3]."
    client = await connect(user)
    ack = await client.ask("How do I reset my password?", kb="Answering test KB")
    frames = await client.until_final(ack["message"])
    final = frames[-1]
    assert final["replaced"] is False and final["text"] == stream_text(frames)
    message = await Message.objects.aget(pk=ack["message"])
    assert streaming.frames_from_db(message)[-1]["replaced"] is False
    await client.close()


def test_final_frame_replaced_only_when_complete():
    import uuid

    base = {"text": "t", "html": "", "citations": [], "timings": {}}
    message = uuid.uuid4()
    assert protocol.final_frame(message, 2, state="complete", **base)["replaced"] is False
    assert protocol.final_frame(message, 2, state="complete", replaced=True, **base)["replaced"] is True
    assert protocol.final_frame(message, 2, state="cancelled", replaced=True, **base)["replaced"] is False
