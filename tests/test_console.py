"""The staff support console over the real ASGI stack and database: the live list, take-over, agent messages,
hand-back, notes, nudges, reminders, the trace, and staff-only access.

Customers use /ws/chat/, staff /ws/console/ (docs/protocol.md, "Console"); both authenticate with real bearer
tokens. Answers come from the real pipeline on the demo knowledge base (extractive generator).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model

from chatsite.routing import websocket_application
from conversations import reminders
from conversations.auth import issue_token
from conversations.models import Conversation, InternalNote, Message
from tests.chat_support import HOST, ORIGIN, ChatClient, connect, stop_generation, stream_text

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def slow_answers(settings):
    settings.ANSWER_WORDS_PER_SECOND = 8
    settings.REDIS_URL = ""


@pytest.fixture
def customer(transactional_db):
    return get_user_model().objects.create_user("carol", password="pw-carol-123", first_name="Carol")


@pytest.fixture
def sam(transactional_db):
    return get_user_model().objects.create_user("sam", password="pw-sam-123", first_name="Sam", is_staff=True)


@pytest.fixture
def bob(transactional_db):
    return get_user_model().objects.create_user("bob", password="pw-bob-123", first_name="Bob", is_staff=True)


@pytest.fixture
async def cleanup():
    yield
    await reminders.stop()
    await stop_generation()


async def console(user=None) -> ChatClient:
    """A connected console socket (bearer token like any non-browser client); the list snapshot is consumed."""
    headers = [(b"origin", ORIGIN), (b"host", HOST)]
    if user is not None:
        token, _ = await database_sync_to_async(issue_token)(user)
        headers.append((b"authorization", f"Bearer {token}".encode()))
    comm = WebsocketCommunicator(websocket_application, "/ws/console/", headers=headers)
    connected, _ = await comm.connect()
    assert connected
    return ChatClient(comm)


async def staff_console(user) -> tuple[ChatClient, dict]:
    client = await console(user)
    snapshot = await client.recv()
    assert snapshot["type"] == "conversations"
    return client, snapshot


async def update_for(client: ChatClient, conversation: str, **expected) -> dict:
    """The next conversation_update for ``conversation`` whose item matches ``expected``."""
    while True:
        frame = await client.recv_type("conversation_update")
        item = frame["item"]
        if item["conversation"] == conversation and all(item.get(k) == v for k, v in expected.items()):
            return item


async def watch(client: ChatClient, conversation: str) -> None:
    await client.send({"type": "watch", "conversation": conversation})
    state = await client.recv_type("conversation")
    assert state["conversation"] == conversation


async def frames_until(client: ChatClient, kinds: set[str]) -> dict[str, dict]:
    """Receive until one frame of each type in ``kinds`` arrived, in any order; the first of each type."""
    seen: dict[str, dict] = {}
    while not kinds <= set(seen):
        frame = await client.recv()
        seen.setdefault(frame["type"], frame)
    return seen


async def drain(client: ChatClient, quiet_for: float) -> list[dict]:
    """Every frame until nothing arrives for ``quiet_for`` seconds."""
    frames = []
    while not await client.quiet(quiet_for):
        frames.append(await client.recv())
    return frames


async def answered_conversation(customer) -> tuple[ChatClient, str]:
    """A customer socket whose first question has been answered; returns it and the conversation id."""
    chat = await connect(customer)
    ack = await chat.ask("How do I return an item?")
    await chat.until_final(ack["message"])
    return chat, ack["conversation"]


async def first_token(client: ChatClient, message: str) -> list[dict]:
    frames = []
    while not any(f["type"] == "token" for f in frames):
        frames.append(await client.recv_type_for(message))
    return frames


# --- access ---------------------------------------------------------------------------------------------------
async def test_non_staff_is_refused_at_the_console_handshake(customer, cleanup):
    client = await console(customer)
    assert await client.recv() == {
        "type": "error", "code": "forbidden", "detail": "The support console is for staff only."
    }
    assert (await client.comm.receive_output(timeout=5))["code"] == 4403

    anonymous = await console()
    assert (await anonymous.recv())["code"] == "unauthenticated"
    assert (await anonymous.comm.receive_output(timeout=5))["code"] == 4401


def test_console_pages_are_staff_only(client, customer, sam, demo_kb):
    conversation = Conversation.objects.create(owner=customer, title="Where is my parcel?")
    Message.objects.create(conversation=conversation, role="user", text="Where is my parcel?")
    pages = ["/console/", f"/console/c/{conversation.pk}/"]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    client.force_login(customer)
    for url in pages:
        assert client.get(url).status_code == 403
    client.force_login(sam)
    listing = client.get(pages[0])
    assert listing.status_code == 200 and b"Where is my parcel?" in listing.content
    detail = client.get(pages[1])
    assert detail.status_code == 200 and b"Where is my parcel?" in detail.content
    assert b"console/console.js" in detail.content


# --- the live list --------------------------------------------------------------------------------------------
async def test_live_list_updates_on_a_new_question_and_on_a_handoff_request(demo_kb, customer, sam, fast_answers,
                                                                            cleanup):
    staff, snapshot = await staff_console(sam)
    assert snapshot["items"] == []
    chat = await connect(customer)
    ack = await chat.ask("How do I return an item?")
    conversation = ack["conversation"]
    item = await update_for(staff, conversation)
    assert item["title"] == "How do I return an item?" and item["customer"] == "Carol"
    assert item["section"] == "recent" and item["status"] == "bot" and item["unread"] == 0  # the bot answers it
    assert item["url"] == f"/console/c/{conversation}/"
    final = (await chat.until_final(ack["message"]))[-1]

    # The bot's finished answer becomes the row's last message, live.
    while True:
        answered = await update_for(staff, conversation)
        if (answered["last_message"] or {}).get("role") == "assistant":
            break
    preview = answered["last_message"]["text"].rstrip("…")
    assert preview and " ".join(final["text"].split()).startswith(preview)

    await chat.send({"type": "handoff", "conversation": conversation})
    waiting = await update_for(staff, conversation, section="waiting")
    assert waiting["status"] == "waiting_for_agent" and waiting["waiting_since"]
    assert waiting["last_message"]["role"] == "system"

    # A new console sees it in its snapshot, waiting conversations first.
    other = await get_user_model().objects.acreate(username="sue", is_staff=True)
    late, snapshot = await staff_console(other)
    assert [i["conversation"] for i in snapshot["items"]] == [conversation]
    assert snapshot["items"][0]["section"] == "waiting"
    for client in (chat, staff, late):
        await client.close()


# --- take over, agent messages, hand back -----------------------------------------------------------------------
async def test_take_over_stops_the_streaming_answer_and_the_bot_stays_quiet(demo_kb, customer, sam, slow_answers,
                                                                           cleanup):
    chat = await connect(customer)
    ack = await chat.ask("How do I return an item?")
    conversation = ack["conversation"]
    staff, _ = await staff_console(sam)
    await watch(staff, conversation)
    seen_by_staff = await first_token(staff, ack["message"])  # the staff member watches the answer live
    assert seen_by_staff[0]["seq"] == 1

    await staff.send({"type": "take_over", "conversation": conversation})
    seen = await frames_until(chat, {"agent_joined", "conversation", "final"})
    final = seen["final"]
    assert final["message"] == ack["message"] and final["state"] == "cancelled"
    answer = await Message.objects.aget(pk=ack["message"])
    assert answer.state == "cancelled" and answer.text == final["text"]
    assert seen["agent_joined"]["agent"] == {"name": "Sam"} and "joined" in seen["agent_joined"]["text"]
    assert seen["conversation"]["status"] == "agent"
    holder = await staff.recv_type("holder")
    assert holder["holder"] == {"id": sam.pk, "name": "Sam"} and holder["action"] == "take_over"

    # While a person holds it, the bot does not answer; the question reaches the console.
    question = await chat.ask("Can I talk to Sam please?", conversation=conversation)
    assert question["message"] is None
    seen = await staff.recv_type("question")
    assert seen["text"] == "Can I talk to Sam please?" and seen["message"] is None
    assert {f["type"] for f in await drain(chat, 1.0)} <= {"question"}  # its own question echoed; no answer
    assert not await Message.objects.filter(conversation_id=conversation, role="assistant", state="streaming").aexists()
    assert await Message.objects.filter(conversation_id=conversation, role="assistant").acount() == 1
    await chat.close()
    await staff.close()


async def test_agent_messages_reach_the_customer_and_customer_questions_reach_the_console(
    demo_kb, customer, sam, fast_answers, cleanup
):
    chat, conversation = await answered_conversation(customer)
    staff, _ = await staff_console(sam)
    await staff.send({"type": "take_over", "conversation": conversation})
    await chat.recv_type("agent_joined")

    reply_id = str(uuid.uuid4())
    await staff.send({"type": "agent_message", "conversation": conversation, "id": reply_id, "text": "Hi Carol!"})
    delivered = await chat.recv_type("agent_message")
    assert delivered["text"] == "Hi Carol!" and delivered["agent"] == {"name": "Sam"}
    assert delivered["id"] == reply_id and delivered["conversation"] == conversation
    echoed = await staff.recv_type("agent_message")
    assert echoed == delivered

    # The same id again: the same message back to the console, nothing new for the customer.
    await staff.send({"type": "agent_message", "conversation": conversation, "id": reply_id, "text": "Hi Carol!"})
    assert await staff.recv_type("agent_message") == delivered
    assert await chat.quiet(0.5)
    saved = [m async for m in Message.objects.filter(conversation_id=conversation, role="agent")]
    assert len(saved) == 1 and saved[0].author_id == sam.pk and saved[0].text == "Hi Carol!"

    await chat.ask("Thanks Sam, my order number is 1234.", conversation=conversation)
    question = await staff.recv_type("question")
    assert question["text"] == "Thanks Sam, my order number is 1234."
    await chat.close()
    await staff.close()


async def test_hand_back_resumes_the_bot(demo_kb, customer, sam, fast_answers, cleanup):
    chat, conversation = await answered_conversation(customer)
    staff, _ = await staff_console(sam)
    await staff.send({"type": "take_over", "conversation": conversation})
    assert (await chat.recv_type("conversation"))["status"] == "agent"

    await staff.send({"type": "hand_back", "conversation": conversation})
    left = await chat.recv_type("agent_left")
    assert left["agent"] == {"name": "Sam"}
    assert (await chat.recv_type("conversation"))["status"] == "bot"
    assert (await staff.recv_type("holder"))["holder"] == {"id": sam.pk, "name": "Sam"}  # the take-over
    handed = await staff.recv_type("holder")
    assert handed["action"] == "hand_back" and handed["holder"] is None and handed["status"] == "bot"

    again = await chat.ask("How do I track my order?", conversation=conversation)
    assert again["message"] is not None
    frames = await chat.until_final(again["message"])
    assert frames[-1]["state"] == "complete" and stream_text(frames)
    conversation_row = await Conversation.objects.aget(pk=conversation)
    assert conversation_row.status == "bot" and conversation_row.assigned_agent_id is None
    await chat.close()
    await staff.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request, settings):
    """The two staff members' sockets share an in-process layer, or the machine's real Redis (several nodes)."""
    settings.ANSWER_WORDS_PER_SECOND = 0
    if request.param == "redis":
        settings.REDIS_URL = REDIS
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [REDIS], "prefix": f"test-console-{uuid.uuid4().hex[:8]}", "capacity": 1000},
            }
        }
    else:
        settings.REDIS_URL = ""
    return request.param


async def test_only_one_staff_member_holds_a_conversation_and_both_see_it_live(demo_kb, customer, sam, bob, backend,
                                                                               cleanup):
    chat, conversation = await answered_conversation(customer)
    first, _ = await staff_console(sam)
    second, _ = await staff_console(bob)
    await watch(first, conversation)
    await watch(second, conversation)
    presence = await first.recv_type("presence")
    while len(presence["watchers"]) < 2:
        presence = await first.recv_type("presence")
    assert [w["name"] for w in presence["watchers"]] == ["Bob", "Sam"]

    await first.send({"type": "take_over", "conversation": conversation})
    for client in (first, second):
        holder = await client.recv_type("holder")
        assert holder["holder"] == {"id": sam.pk, "name": "Sam"} and holder["by"]["name"] == "Sam"

    await second.send({"type": "take_over", "conversation": conversation})
    refusal = await second.recv_type("error")
    assert refusal["code"] == "conflict" and "Sam" in refusal["detail"]
    await second.send({"type": "agent_message", "conversation": conversation, "id": "x1", "text": "Hello"})
    assert (await second.recv_type("error"))["code"] == "conflict"
    row = await Conversation.objects.aget(pk=conversation)
    assert row.assigned_agent_id == sam.pk and row.status == "agent"
    assert not await Message.objects.filter(conversation_id=conversation, role="agent").aexists()

    # Sam's reply shows up live on Bob's console too.
    await first.send({"type": "agent_message", "conversation": conversation, "id": "r1", "text": "On it."})
    assert (await second.recv_type("agent_message"))["text"] == "On it."
    await second.close()
    presence = await first.recv_type("presence")
    assert [w["name"] for w in presence["watchers"]] == ["Sam"]
    await chat.close()
    await first.close()


async def test_concurrent_take_overs_have_exactly_one_winner(demo_kb, customer, sam, bob, fast_answers, cleanup):
    chat, conversation = await answered_conversation(customer)
    first, _ = await staff_console(sam)
    second, _ = await staff_console(bob)
    frame = {"type": "take_over", "conversation": conversation}
    await asyncio.gather(first.send(frame), second.send(frame))
    seen = {"sam": await drain(first, 1.0), "bob": await drain(second, 1.0)}
    errors = {who: [f for f in frames if f["type"] == "error"] for who, frames in seen.items()}
    assert sorted(len(e) for e in errors.values()) == [0, 1]
    loser = next(who for who, e in errors.items() if e)
    assert errors[loser][0]["code"] == "conflict"
    row = await Conversation.objects.select_related("assigned_agent").aget(pk=conversation)
    assert row.assigned_agent.username != loser
    for frames in seen.values():  # both see the one take-over
        holders = [f for f in frames if f["type"] == "holder"]
        assert [h["holder"]["id"] for h in holders] == [row.assigned_agent_id]
    joined = Message.objects.filter(conversation_id=conversation, role="system", text__contains="joined")
    assert await joined.acount() == 1
    for client in (chat, first, second):
        await client.close()


# --- staff-only notes, pushes to the customer ---------------------------------------------------------------------
async def test_notes_are_seen_by_staff_only(demo_kb, customer, sam, bob, fast_answers, cleanup):
    chat, conversation = await answered_conversation(customer)
    first, _ = await staff_console(sam)
    second, _ = await staff_console(bob)
    await watch(second, conversation)
    await first.send({"type": "note", "conversation": conversation, "text": "VIP customer, refund without questions"})
    for client in (first, second):
        note = await client.recv_type("note")
        assert note["note"]["text"] == "VIP customer, refund without questions"
        assert note["note"]["author"] == {"id": sam.pk, "name": "Sam"}
    assert await chat.quiet(0.8)  # nothing at all reaches the customer's socket
    assert await InternalNote.objects.filter(conversation_id=conversation).acount() == 1
    assert not await Message.objects.filter(text__contains="VIP").aexists()

    # A console that opens the conversation later gets the notes with it.
    third, _ = await staff_console(sam)
    await third.send({"type": "watch", "conversation": conversation})
    assert (await third.recv_type("note"))["note"]["text"].startswith("VIP")
    for client in (chat, first, second, third):
        await client.close()


async def test_nudge_and_idle_reminder_reach_the_customer(demo_kb, customer, sam, fast_answers, settings, cleanup):
    settings.CONSOLE_REMINDER_SECONDS = 0.3
    settings.CONSOLE_REMINDER_CHECK_SECONDS = 0.1
    chat, conversation = await answered_conversation(customer)
    staff, _ = await staff_console(sam)
    await staff.send({"type": "nudge", "conversation": conversation})
    nudge = await chat.recv_type("nudge")
    assert "Sam" in nudge["text"] and nudge["agent"] == {"name": "Sam"}

    await staff.send({"type": "take_over", "conversation": conversation})
    await staff.send({"type": "agent_message", "conversation": conversation, "id": "m1", "text": "Which item?"})
    sent = await chat.recv_type("agent_message")
    reminder = await chat.recv_type("reminder", wait=10)
    assert reminder["about"] == sent["message"] and "Sam" in reminder["text"]
    assert await chat.quiet(1.0)  # once per agent message
    agent_message = await Message.objects.aget(pk=sent["message"])
    assert agent_message.reminded_at is not None

    # Answered in time: no reminder.
    settings.CONSOLE_REMINDER_SECONDS = 1.0
    await staff.send({"type": "agent_message", "conversation": conversation, "id": "m2", "text": "And the order?"})
    await chat.recv_type("agent_message")
    await chat.ask("Order 1234, the blue lamp.", conversation=conversation)
    assert "reminder" not in {f["type"] for f in await drain(chat, 2.0)}
    await chat.close()
    await staff.close()


# --- the trace ----------------------------------------------------------------------------------------------------
async def test_trace_frame_has_query_passages_with_scores_timings_and_generator(demo_kb, customer, sam, fast_answers,
                                                                                cleanup):
    chat, conversation = await answered_conversation(customer)
    staff, _ = await staff_console(sam)
    await staff.send({"type": "watch", "conversation": conversation})
    saved = await staff.recv_type("trace")  # finished answers' traces come with the watch
    assert saved["state"] == "complete" and saved["trace"]["query"] == "How do I return an item?"

    ack = await chat.ask("How long does delivery take?", conversation=conversation)
    frames = []
    while not frames or frames[-1]["type"] != "final":
        frames.append(await staff.recv_type_for(ack["message"]))  # the same stream the customer gets
    assert frames == await chat.until_final(ack["message"])
    live = await staff.recv_type("trace")
    assert live["message"] == ack["message"] and live["state"] == "complete"
    trace = live["trace"]
    assert trace["query"] == "How long does delivery take?"
    assert trace["passages"] and all(isinstance(p["score"], float) for p in trace["passages"])
    assert {"vector_score", "keyword_score", "title"} <= set(trace["passages"][0])
    assert {"retrieve_ms", "generate_ms", "total_ms"} <= set(trace["timings"])
    assert trace["generator"] == "extractive"
    await chat.close()
    await staff.close()


async def test_console_frames_are_validated(sam, cleanup):
    staff, _ = await staff_console(sam)
    await staff.send_raw(json.dumps({"type": "take_over"}))
    assert (await staff.recv_type("error"))["code"] == "invalid"
    await staff.send({"type": "take_over", "conversation": str(uuid.uuid4())})
    assert (await staff.recv_type("error"))["code"] == "not_found"
    await staff.send({"type": "ask", "id": "x", "text": "hi"})
    assert (await staff.recv_type("error"))["code"] == "unknown_type"
    await staff.send({"type": "note", "conversation": str(uuid.uuid4()), "text": " "})
    assert (await staff.recv_type("error"))["code"] == "invalid"
    await staff.ping_roundtrip()
    await staff.close()
