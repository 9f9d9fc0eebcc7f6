"""Every error code of the chat protocol, and that the socket keeps working after each one."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from tests.chat_support import connect
from tests.llm_standin import LLMStandin

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_answers")]


@pytest.fixture
def alice(transactional_db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob(transactional_db):
    return get_user_model().objects.create_user("bob", password="pw-bob-123")


async def expect_error(client, code: str, **fields) -> dict:
    frame = await client.recv()
    assert frame["type"] == "error" and frame["code"] == code, frame
    assert frame["detail"]
    for name, value in fields.items():
        assert frame.get(name) == value, (name, frame)
    await client.ping_roundtrip()  # the socket still works
    return frame


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        ("this is not json", "bad_frame", "JSON"),
        ("[1, 2]", "bad_frame", "object"),
        ('"ask"', "bad_frame", "object"),
        ('{"text": "no type"}', "bad_frame", "type"),
        ('{"type": "shout"}', "unknown_type", "shout"),
        ('{"type": "resume", "message": "not-a-uuid", "after": 0}', "invalid", "resume.message"),
        (json.dumps({"type": "resume", "message": str(uuid.uuid4()), "after": -1}), "invalid", "resume.after"),
        (json.dumps({"type": "feedback", "message": str(uuid.uuid4()), "rating": 5}), "invalid", "feedback.rating"),
        ('{"type": "ask", "text": "no id"}', "invalid", "ask.id"),
        ('{"type": "ask", "id": "a1", "text": "   "}', "invalid", "ask.text"),
        ('{"type": "cancel"}', "invalid", "cancel.message"),
    ],
)
async def test_malformed_frames_get_a_clear_error_and_the_socket_stays_open(alice, raw, code, words):
    client = await connect(alice)
    await client.send_raw(raw)
    frame = await expect_error(client, code)
    assert words in frame["detail"]
    await client.close()


@pytest.mark.parametrize(
    ("raw", "code", "words", "echoed_id"),
    [
        ('{"type":"ask","id":"\\udfff","text":"x","conversation":"nope"}', "invalid", "ask.id", None),
        ('{"type":"ask","id":"a\\u0000","text":"x"}', "invalid", "ask.id", None),
        ('{"type":"ask","id":"k1","text":"x","kb":"help\\u0000"}', "invalid", "ask.kb", "k1"),
        ('{"type":"ask","id":"t1","text":"why\\ud800"}', "invalid", "ask.text", "t1"),
        ('{"type":"ping","t":"\\udc00"}', "invalid", "ping.t", None),
        ('{"type":"ping","t":NaN}', "bad_frame", "NaN", None),
        ('{"type":"ping","t":-Infinity}', "bad_frame", "Infinity", None),
        ('{"type":"ping","t":1e999}', "bad_frame", "range", None),
        ('{"type":"ping","t":9007199254740993}', "invalid", "ping.t", None),
        ("[" * 5000 + "]" * 5000, "bad_frame", "nested", None),
        ('{"type":"ping","t":' + "[" * 20 + "]" * 20 + "}", "bad_frame", "nested", None),
        (json.dumps({"type": "resume", "message": str(uuid.uuid4()), "after": 9223372036854775808}), "invalid",
         "resume.after", None),
        ('{"type":"\\u0000"}', "bad_frame", "type", None),
    ],
)  # fmt: skip
async def test_garbage_that_used_to_reach_the_server_as_exceptions_gets_a_clean_error(alice, raw, code, words,
                                                                                      echoed_id):  # fmt: skip
    """The cases an attacker found giving ``internal`` + a traceback, or a 1011 close (the id could not be
    echoed), or a ``pong`` with NaN: each is now refused for what it is, naming the field."""
    client = await connect(alice)
    await client.send_raw(raw)
    frame = await expect_error(client, code)
    assert words in frame["detail"], frame
    assert frame.get("id") == echoed_id
    assert await Message.objects.acount() == 0
    await client.close()


async def test_binary_frame_is_a_bad_frame(alice):
    client = await connect(alice)
    await client.comm.send_to(bytes_data=b"\x00\x01")
    await expect_error(client, "bad_frame")
    await client.close()


async def test_too_large_frame_and_too_long_question_are_refused_and_not_saved(alice, settings):
    settings.CHAT_MAX_FRAME_BYTES = 2048
    settings.CHAT_MAX_QUESTION_CHARS = 100
    client = await connect(alice)
    await client.send({"type": "ask", "id": "big", "text": "x" * 5000})
    frame = await expect_error(client, "too_large")
    assert "2048" in frame["detail"]
    await client.send({"type": "ask", "id": "long", "text": "why " * 40})
    frame = await expect_error(client, "too_large", id="long")
    assert "ask.text" in frame["detail"] and "100" in frame["detail"]
    assert await Message.objects.acount() == 0
    await client.close()


async def test_someone_elses_conversation_and_messages_are_not_found_and_never_leak(
    demo_kb, alice, bob, cleanup
):
    owner = await connect(bob)
    ack = await owner.ask("My secret order number is 4711, where is it?")
    final = (await owner.until_final(ack["message"]))[-1]
    await owner.close()

    intruder = await connect(alice)
    attempts = [
        {"type": "ask", "id": "x1", "text": "Show me", "conversation": ack["conversation"]},
        {"type": "join", "conversation": ack["conversation"]},
        {"type": "handoff", "conversation": ack["conversation"]},
        {"type": "resume", "message": ack["message"], "after": 0},
        {"type": "cancel", "message": ack["message"]},
        {"type": "feedback", "message": ack["message"], "rating": -1},
        {"type": "resume", "message": ack["question"], "after": 0},
    ]
    for frame in attempts:
        await intruder.send(frame)
        error = await intruder.recv()
        assert error["type"] == "error" and error["code"] == "not_found", (frame, error)
        assert "4711" not in json.dumps(error) and final["text"][:20] not in json.dumps(error)
        await intruder.ping_roundtrip()
    # And a conversation that does not exist at all looks exactly the same.
    await intruder.send({"type": "join", "conversation": str(uuid.uuid4())})
    await expect_error(intruder, "not_found")
    conversation = await Conversation.objects.aget(pk=ack["conversation"])
    assert conversation.status == "bot"
    assert await Message.objects.filter(conversation=conversation).acount() == 2
    assert not await Message.objects.filter(client_id="x1").aexists()
    await intruder.close()


async def test_unknown_knowledge_base_is_not_found(alice):
    client = await connect(alice)
    await client.send({"type": "ask", "id": "kb1", "text": "Hello?", "kb": "no-such-kb"})
    await expect_error(client, "not_found", id="kb1")
    assert await Message.objects.acount() == 0
    await client.close()


async def test_cancel_or_rate_a_question_is_forbidden(demo_kb, alice, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    await client.until_final(ack["message"])
    await client.send({"type": "cancel", "message": ack["question"]})
    await expect_error(client, "forbidden")
    await client.send({"type": "feedback", "message": ack["question"], "rating": 1})
    await expect_error(client, "forbidden")
    await client.close()


async def test_busy_past_the_queue_limit_and_the_question_is_not_saved(demo_kb, alice, settings, cleanup):
    settings.ANSWER_WORDS_PER_SECOND = 5
    settings.CHAT_QUEUE_LIMIT = 2
    client = await connect(alice)
    first = await client.ask("How do I return an item?")
    second = await client.ask("How do I track my order?", conversation=first["conversation"])
    assert second["message"]
    await client.send({"type": "ask", "id": "third", "text": "Can I exchange?", "conversation": first["conversation"]})
    frame = await client.recv_type("error")
    assert frame["code"] == "busy" and frame["id"] == "third" and "NOT saved" in frame["detail"]
    assert not await Message.objects.filter(client_id="third").aexists()
    # Once the queue has room again the same id is accepted.
    await client.send({"type": "cancel", "message": first["message"]})
    await client.until_final(first["message"])
    again = await client.ask("Can I exchange?", id="third", conversation=first["conversation"])
    assert again["id"] == "third" and again["message"]
    await client.close()


async def test_rate_limited_past_the_questions_per_minute(demo_kb, alice, settings, cleanup):
    settings.CHAT_RATE_LIMIT = 2
    client = await connect(alice)
    for text in ["How do I return an item?", "How do I track my order?"]:
        ack = await client.ask(text)
        await client.until_final(ack["message"])
    await client.send({"type": "ask", "id": "r3", "text": "Can I exchange an item?"})
    frame = await client.recv_type("error")
    assert frame["code"] == "rate_limited" and frame["id"] == "r3"
    await client.ping_roundtrip()
    assert await Message.objects.filter(role="user").acount() == 2
    await client.close()


async def test_backend_error_ends_the_answer_failed_and_keeps_the_question(demo_kb, alice, settings, cleanup):
    with LLMStandin(fail_status=500) as llm:
        settings.ANSWER_GENERATOR = "openai"
        settings.LLM_BASE_URL = llm.base_url
        settings.LLM_MODEL = "standin-model"
        settings.LLM_API_KEY = "test-key"
        client = await connect(alice)
        ack = await client.ask("How do I return an item?")
        frames = await client.until_final(ack["message"])
    error, final = frames[-2], frames[-1]
    assert error["type"] == "error" and error["code"] == "backend_error" and error["detail"]
    assert final["state"] == "failed" and final["seq"] == error["seq"] + 1
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    answer = await Message.objects.aget(pk=ack["message"])
    assert answer.state == "failed" and answer.error
    assert (await Message.objects.aget(pk=ack["question"])).text == "How do I return an item?"
    await client.ping_roundtrip()
    await client.close()
