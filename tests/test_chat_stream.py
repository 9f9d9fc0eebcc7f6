"""The chat consumer end to end over the real ASGI stack and database: streaming, queue, cancel, resume.

Answers come from the real pipeline (hybrid retrieval on the demo knowledge base + the offline extractive
generator); ANSWER_WORDS_PER_SECOND=0 except where the pace matters (cancel and reconnect mid-answer).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.contrib.auth import get_user_model

from conversations import groups, protocol, streaming
from conversations.models import Conversation, Feedback, Message
from conversations.streaming.framelog import Append, RedisFrameLog, frame_log
from conversations.streaming.stream import PUBSUB_LAYER, publication
from tests.chat_support import assert_contiguous, connect, stream_text

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def slow_answers(settings):
    settings.ANSWER_WORDS_PER_SECOND = 12
    settings.REDIS_URL = ""


@pytest.fixture(params=["memory", "redis-core", "redis-pubsub"])
def backend(request, settings):
    """Frame log and channel layer: in-process, or the machine's real Redis (what several nodes use) with either
    channels-redis layer; with the pub/sub layer (the default) the frame log's script publishes each frame."""
    if request.param == "memory":
        settings.REDIS_URL = ""
        return request.param
    prefix = f"test-chat-{uuid.uuid4().hex[:8]}"
    settings.REDIS_URL = REDIS
    if request.param == "redis-core":
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [REDIS], "prefix": prefix, "capacity": 1000},
            }
        }
    else:
        settings.CHANNEL_LAYERS = {
            "default": {"BACKEND": PUBSUB_LAYER, "CONFIG": {"hosts": [REDIS], "prefix": prefix}}
        }
    return request.param


@pytest.fixture
def alice(transactional_db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


async def test_ask_streams_status_sources_tokens_final(demo_kb, alice, fast_answers, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    assert set(ack) == {"type", "id", "conversation", "question", "message"}
    frames = await client.until_final(ack["message"])
    assert_contiguous(frames)
    types = [f["type"] for f in frames]
    assert types[:4] == ["status", "status", "sources", "status"]
    assert [f["stage"] for f in frames if f["type"] == "status"] == ["retrieving", "retrieved", "generating"]
    assert set(types[4:-1]) == {"token"} and types[-1] == "final"
    final = frames[-1]
    assert final["state"] == "complete"
    assert final["text"] == stream_text(frames) and final["text"]
    assert final["citations"] and set(final["citations"]) <= {item["n"] for item in frames[2]["items"]}
    assert "<" in final["html"]

    answer = await Message.objects.aget(pk=ack["message"])
    question = await Message.objects.aget(pk=ack["question"])
    assert (answer.state, answer.text, answer.seq_last) == ("complete", final["text"], final["seq"])
    assert answer.completed_at is not None
    assert answer.reply_to_id == question.pk and question.text == "How do I return an item?"
    assert answer.trace["passages"] and answer.sources == frames[2]["items"]
    conversation = await Conversation.objects.aget(pk=ack["conversation"])
    assert conversation.owner_id == alice.pk and conversation.title == "How do I return an item?"
    await client.close()


async def test_queued_asks_are_acked_at_once_and_answered_in_order(demo_kb, alice, fast_answers, cleanup):
    client = await connect(alice)
    first = await client.ask("How do I return an item?")
    conversation = first["conversation"]
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    for text, ask_id in zip(["How do I track my order?", "Can I exchange an item?"], ids, strict=True):
        await client.send({"type": "ask", "id": ask_id, "text": text, "conversation": conversation})
    acks, order, finals = {}, [], {}
    while len(finals) < 3:
        frame = await client.recv()
        if frame["type"] == "ack":
            acks[frame["id"]] = frame
            assert not finals, "queued asks are acknowledged before the first answer ends"
        elif frame.get("seq") is not None:
            if frame["message"] not in order:
                order.append(frame["message"])
            if frame["type"] == "final":
                finals[frame["message"]] = frame
    assert list(acks) == ids and all(a["conversation"] == conversation for a in acks.values())
    assert order == [first["message"], acks[ids[0]]["message"], acks[ids[1]]["message"]]
    assert all(f["state"] == "complete" for f in finals.values())
    questions = [m.text async for m in Message.objects.filter(conversation_id=conversation, role="user")]
    assert questions == ["How do I return an item?", "How do I track my order?", "Can I exchange an item?"]
    await client.close()


async def test_cancel_mid_stream_stops_within_one_token_and_keeps_partial_text(demo_kb, alice, slow_answers, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    frames = []
    while sum(f["type"] == "token" for f in frames) < 3:
        frames.append(await client.recv_type_for(ack["message"]))
    await client.send({"type": "cancel", "message": ack["message"]})
    after_cancel = await client.until_final(ack["message"])
    frames += after_cancel
    assert_contiguous(frames)
    assert sum(f["type"] == "token" for f in after_cancel) <= 1
    final = frames[-1]
    assert final["state"] == "cancelled"
    assert final["text"] == stream_text(frames) and final["text"]
    answer = await Message.objects.aget(pk=ack["message"])
    assert (answer.state, answer.text) == ("cancelled", final["text"])
    # Cancelling a finished answer is a no-op, and the socket keeps working.
    await client.send({"type": "cancel", "message": ack["message"]})
    assert await client.quiet()
    await client.ping_roundtrip()
    await client.close()


async def test_same_ask_id_returns_the_same_ack_and_never_a_second_question(demo_kb, alice, fast_answers, cleanup):
    client = await connect(alice)
    ask_id = str(uuid.uuid4())
    ack = await client.ask("How do I return an item?", id=ask_id)
    await client.until_final(ack["message"])
    again = await client.ask("How do I return an item?", id=ask_id)
    assert again == ack
    in_conversation = await client.ask("How do I return an item?", id=ask_id, conversation=ack["conversation"])
    assert in_conversation == ack
    # Another socket (a reconnect) resending it: still the same ack.
    other = await connect(alice)
    assert await other.ask("How do I return an item?", id=ask_id) == ack
    assert await Message.objects.filter(client_id=ask_id).acount() == 1
    assert await Message.objects.filter(conversation_id=ack["conversation"]).acount() == 2
    assert await client.quiet()
    await client.close()
    await other.close()


async def test_reconnect_mid_answer_resumes_with_nothing_missing_or_doubled(demo_kb, alice, settings, backend, cleanup):
    settings.ANSWER_WORDS_PER_SECOND = 15
    first = await connect(alice)
    ack = await first.ask("How do I return an item?")
    got = []
    while sum(f["type"] == "token" for f in got) < 3:
        got.append(await first.recv_type_for(ack["message"]))
    await first.close()  # the connection drops; the answer keeps being generated
    await asyncio.sleep(0.3)

    second = await connect(alice)
    await second.send({"type": "resume", "message": ack["message"], "after": got[-1]["seq"]})
    rest = await second.until_final(ack["message"])
    frames = got + rest
    assert_contiguous(frames)
    assert frames[-1]["state"] == "complete"
    assert frames[-1]["text"] == stream_text(frames)
    assert await second.quiet()
    await second.close()


async def test_resume_from_a_middle_seq_replays_exactly_the_rest(demo_kb, alice, fast_answers, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    frames = await client.until_final(ack["message"])
    middle = len(frames) // 2
    other = await connect(alice)
    await other.send({"type": "resume", "message": ack["message"], "after": middle})
    assert await other.until_final(ack["message"]) == frames[middle:]
    assert await other.quiet()
    await client.close()
    await other.close()


async def test_resume_after_final_replays_through_final_also_from_the_database(demo_kb, alice, fast_answers, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    frames = await client.until_final(ack["message"])
    await client.send({"type": "resume", "message": ack["message"], "after": 0})
    assert await client.until_final(ack["message"]) == frames

    streaming.frame_log().clear()  # the log expired: the frames are rebuilt from PostgreSQL
    assert await streaming.frame_log().read(ack["message"], 0) == []
    await client.send({"type": "resume", "message": ack["message"], "after": 3})
    assert await client.until_final(ack["message"]) == frames[3:]
    await client.send({"type": "resume", "message": ack["message"], "after": frames[-1]["seq"]})
    assert await client.quiet()
    await client.close()


async def test_feedback_is_saved_and_updated(demo_kb, alice, fast_answers, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    await client.until_final(ack["message"])
    await client.send({"type": "feedback", "message": ack["message"], "rating": 1})
    assert await client.recv_type("feedback") == {
        "type": "feedback", "message": ack["message"], "rating": 1, "comment": ""
    }
    await client.send({"type": "feedback", "message": ack["message"], "rating": -1, "comment": "Not my country"})
    assert (await client.recv_type("feedback"))["rating"] == -1
    rows = [(f.rating, f.comment, f.user_id) async for f in Feedback.objects.filter(message_id=ack["message"])]
    assert rows == [(-1, "Not my country", alice.pk)]
    await client.close()


async def test_with_the_pubsub_layer_the_frame_log_append_publishes_the_frame_itself(settings):
    # One Redis call per frame: the compare-and-append script also publishes to the conversation's group.
    settings.REDIS_URL = REDIS
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": PUBSUB_LAYER, "CONFIG": {"hosts": [REDIS], "prefix": f"t-{uuid.uuid4().hex[:8]}"}}
    }
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = await layer.new_channel()
    conversation, key = uuid.uuid4(), str(uuid.uuid4())
    await layer.group_add(groups.conversation(conversation), channel)
    try:
        frame = protocol.token_frame(uuid.uuid4(), 1, "hello")
        sent = publication(conversation, frame)
        assert sent is not None
        assert await frame_log().append(key, frame, expected=0, publication=sent) is Append.APPENDED
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": groups.FRAME, "frame": frame}
        # a retried call whose first attempt got through: same frame, published again (clients drop the seq)
        assert await frame_log().append(key, frame, expected=0, publication=sent) is Append.APPENDED
        assert (await asyncio.wait_for(layer.receive(channel), 5))["frame"] == frame
        # another writer's frame for that seq: refused, and nothing published
        other = protocol.token_frame(uuid.uuid4(), 1, "not mine")
        assert await frame_log().append(key, other, expected=0, publication=publication(conversation, other)) is (
            Append.TAKEN
        )
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), 0.5)
    finally:
        await layer.group_discard(groups.conversation(conversation), channel)
        await layer.flush()


async def test_more_frames_at_once_than_redis_connections_wait_for_one_and_all_land(settings):
    # 2 000 customers connecting at once made more frame-log calls at once than redis-py's default pool allows
    # (100): those frames failed with MaxConnectionsError. Calls beyond the pool's size now wait for a connection.
    settings.CHAT_FRAME_LOG_REDIS_CONNECTIONS = 2
    log = RedisFrameLog(REDIS, f"t-{uuid.uuid4().hex[:8]}")
    messages = [str(uuid.uuid4()) for _ in range(150)]
    client = log._client()[0]
    try:
        frames = [protocol.token_frame(uuid.UUID(m), 1, "x") for m in messages]
        results = await asyncio.gather(*(log.append(m, f, expected=0) for m, f in zip(messages, frames, strict=True)))
        assert results == [Append.APPENDED] * len(messages)
        assert [await log.read(m, 0) for m in messages[:3]] == [[f] for f in frames[:3]]
        pool = client.connection_pool
        assert len(pool._available_connections) + len(pool._in_use_connections) <= 2
    finally:
        await client.delete(*(log.key(m) for m in messages))
        await client.aclose()


def test_other_layers_publish_through_the_layer(settings):
    settings.REDIS_URL = REDIS
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS]}}}
    assert publication(uuid.uuid4(), protocol.token_frame(uuid.uuid4(), 1, "x")) is None
    settings.REDIS_URL = ""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert publication(uuid.uuid4(), protocol.token_frame(uuid.uuid4(), 1, "x")) is None


async def test_second_socket_in_the_conversation_receives_the_live_frames(demo_kb, alice, settings, backend, cleanup):
    settings.ANSWER_WORDS_PER_SECOND = 0
    asker = await connect(alice)
    first = await asker.ask("How do I return an item?")
    await asker.until_final(first["message"])

    watcher = await connect(alice)
    await watcher.send({"type": "join", "conversation": first["conversation"]})
    joined = await watcher.recv_type("conversation")
    assert joined["conversation"] == first["conversation"] and joined["status"] == "bot"

    ack = await asker.ask("How do I track my order?", conversation=first["conversation"])
    question = await watcher.recv_type("question")
    assert (question["question"], question["message"], question["text"]) == (
        ack["question"], ack["message"], "How do I track my order?"
    )
    seen_by_asker = await asker.until_final(ack["message"])
    seen_by_watcher = await watcher.until_final(ack["message"])
    assert seen_by_watcher == seen_by_asker
    assert_contiguous(seen_by_watcher)
    await asker.close()
    await watcher.close()


async def test_handoff_puts_the_conversation_in_the_waiting_queue(demo_kb, alice, fast_answers, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    await client.until_final(ack["message"])
    await client.send({"type": "handoff", "conversation": ack["conversation"]})
    frame = await client.recv_type("conversation")
    assert frame == {
        "type": "conversation",
        "conversation": ack["conversation"],
        "status": "waiting_for_agent",
        "title": "How do I return an item?",
        "streaming": [],
        "away": "nobody_online",  # no console is open: the page asks for an address (tests/test_leave_a_message.py)
        "left_message": None,
        "ended": False,  # neither ended nor rated (CSAT: conversations/csat.py)
        "rating": None,
    }
    conversation = await Conversation.objects.aget(pk=ack["conversation"])
    assert conversation.status == "waiting_for_agent"
    assert await Message.objects.filter(conversation=conversation, role="system").aexists()
    await client.close()


async def test_generation_killed_by_shutdown_ends_interrupted_not_streaming(demo_kb, alice, slow_answers, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    queued = await client.ask("How do I track my order?", conversation=ack["conversation"])
    frames = []
    while not any(f["type"] == "token" for f in frames):
        frames.append(await client.recv_type_for(ack["message"]))
    await streaming.shutdown()
    frames += await client.until_final(ack["message"])
    assert_contiguous(frames)
    assert frames[-1]["state"] == "interrupted" and frames[-1]["text"] == stream_text(frames)
    states = {m.pk: m.state async for m in Message.objects.filter(role="assistant")}
    assert states == {uuid.UUID(ack["message"]): "interrupted", uuid.UUID(queued["message"]): "interrupted"}
    await client.close()


async def test_first_question_titles_a_conversation_created_empty(demo_kb, alice, fast_answers, cleanup):
    """The page's "New conversation" makes an untitled conversation; its first question names it."""
    conversation = await Conversation.objects.acreate(owner=alice, knowledge_base=demo_kb)
    client = await connect(alice)
    ack = await client.ask("Where is my parcel?", conversation=str(conversation.pk))
    await client.until_final(ack["message"])
    await conversation.arefresh_from_db()
    assert conversation.title == "Where is my parcel?"
    second = await client.ask("Can I pay with Klarna?", conversation=str(conversation.pk))
    await client.until_final(second["message"])
    await conversation.arefresh_from_db()
    assert conversation.title == "Where is my parcel?"
    await client.close()


async def test_a_nothing_found_final_offers_a_person_live_and_after_a_replay(demo_kb, alice, fast_answers, cleanup):
    """Nothing in the knowledge base answers: no sources, final.offer_handoff, saved, and kept by a replay."""
    client = await connect(alice)
    ack = await client.ask("What is the boiling point of liquid nitrogen on Jupiter?")
    frames = await client.until_final(ack["message"])
    sources = next(f for f in frames if f["type"] == "sources")
    final = frames[-1]
    assert sources["items"] == [] and final["state"] == "complete" and final["offer_handoff"] is True
    answer = await Message.objects.aget(pk=ack["message"])
    assert answer.offers_handoff and answer.trace["offer_handoff"] is True

    streaming.frame_log().clear()  # rebuilt from PostgreSQL: the same final, offer included
    await client.send({"type": "resume", "message": ack["message"], "after": final["seq"] - 1})
    assert await client.recv_type_for(ack["message"]) == final
    await client.close()


async def test_an_ordinary_final_does_not_offer_a_person(demo_kb, alice, fast_answers, cleanup):
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    final = (await client.until_final(ack["message"]))[-1]
    assert final["offer_handoff"] is False
    assert (await Message.objects.aget(pk=ack["message"])).offers_handoff is False
    await client.close()


async def test_relayed_frames_skip_the_per_message_database_housekeeping(demo_kb, alice, fast_answers, cleanup,
                                                                         monkeypatch, settings):  # fmt: skip
    settings.CHAT_TOKEN_COALESCE_MS = 0  # a frame per word: many frames
    # Channels hops to the database thread before every message a consumer handles; for the frames of a
    # streaming answer (thousands per answer) that hop was most of the cost, and they touch no database.
    from conversations import consumers

    housekeeping: list[str] = []
    real = consumers.aclose_old_connections

    async def counted() -> None:
        housekeeping.append("hop")
        await real()

    monkeypatch.setattr(consumers, "aclose_old_connections", counted)
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    frames = await client.until_final(ack["message"])
    assert len(frames) > 10 and frames[-1]["state"] == "complete"
    assert len(housekeeping) <= 3, f"{len(housekeeping)} hops for {len(frames)} frames"  # connect, the ask
    await client.close()


async def test_tokens_arriving_faster_than_the_window_are_coalesced_into_few_frames(
    demo_kb, alice, fast_answers, cleanup, settings
):
    """Server-bound (no pace) an answer's words all arrive at once: they go out as a handful of token frames,
    not one per word, and the final's text is still exactly their concatenation."""
    settings.CHAT_TOKEN_COALESCE_MS = 40
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    frames = await client.until_final(ack["message"])
    tokens = [f for f in frames if f["type"] == "token"]
    final = frames[-1]
    assert final["state"] == "complete" and len(final["text"].split()) > 20
    assert 1 <= len(tokens) <= 4, [t["text"] for t in tokens]
    assert "".join(t["text"] for t in tokens) == final["text"]
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    await client.close()


async def test_paced_words_further_apart_than_the_window_stay_one_frame_each(demo_kb, alice, cleanup, settings):
    settings.REDIS_URL = ""
    settings.ANSWER_WORDS_PER_SECOND = 10  # 100 ms apart, the window is 40 ms
    settings.CHAT_TOKEN_COALESCE_MS = 40
    client = await connect(alice)
    ack = await client.ask("How do I return an item?")
    frames = await client.until_final(ack["message"])
    tokens = [f for f in frames if f["type"] == "token"]
    assert len(tokens) >= 0.9 * len(frames[-1]["text"].split())
    await client.close()
