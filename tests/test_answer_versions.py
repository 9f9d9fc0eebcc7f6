"""Regenerate keeps versions (issue 21, point 5): another version of an answer beside the earlier ones, over a real
Daphne node (real WebSocket clients, PostgreSQL, the node's frame log), and in a real browser: the chat page's
‹ n/m ›, a reload, and the staff console.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from conversations.streaming.generation import history
from tests.browser import new_page, sign_in
from tests.node_client import Client, assert_contiguous, get_token, text_of

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the browser test's own ORM calls

QUESTION = "How do I return an item?"
PASSWORD = "pw-versions-123"
SHOTS = Path(os.environ.get("SCREENSHOT_DIR") or "/tmp/shots/versions")


@pytest.fixture
def node(daphne_server, demo_kb):
    for name in ("carol", "dave"):
        get_user_model().objects.create_user(name, password=PASSWORD)
    return daphne_server()


@pytest.fixture
def carol(node) -> str:
    return get_token(node, "carol", PASSWORD)


async def answered(client: Client, text: str = QUESTION, **fields) -> tuple[dict, list[dict]]:
    ack = await client.ask(text, **fields)
    return ack, await client.until_final(ack["message"])


async def regenerate(client: Client, message: str, id: str | None = None) -> dict:
    frame = {"type": "regenerate", "message": message}
    if id is not None:
        frame["id"] = id
    await client.send(frame)
    reply = await client.recv()
    while reply["type"] not in ("answer_version", "error"):
        reply = await client.recv()
    return reply


@database_sync_to_async
def rows(conversation: str) -> list[tuple[str, str | None, int, str]]:
    """(role, reply_to, version, state) of every message of the conversation, oldest first."""
    return [
        (m.role, str(m.reply_to_id) if m.reply_to_id else None, m.version, m.state)
        for m in Message.objects.filter(conversation_id=conversation).order_by("created_at")
    ]


@pytest.mark.django_db(transaction=True)
async def test_regenerate_streams_version_2_of_the_same_question_and_never_asks_it_again(node, carol):
    customer = await Client.open(node, carol)
    ack, first = await answered(customer)
    other_tab = await Client.open(node, carol)
    await other_tab.join(ack["conversation"])

    version = await regenerate(customer, ack["message"], id="regen-1")
    assert version["type"] == "answer_version", version
    assert (version["conversation"], version["question"]) == (ack["conversation"], ack["question"])
    assert (version["version"], version["versions"], version["id"]) == (2, 2, "regen-1")
    assert version["message"] != ack["message"]
    frames = await customer.until_final(version["message"])
    assert_contiguous(frames)
    final = frames[-1]
    assert (final["state"], final["version"]) == ("complete", 2)
    assert final["text"] == text_of(frames) and final["text"]
    assert [f["type"] for f in frames][:1] == ["status"]  # an answer's stream like any other, from seq 1
    assert first[-1]["version"] == 1
    # The other tab is told where the new stream belongs, then gets the same frames.
    told = await other_tab.recv_type("answer_version")
    assert told == {**version, "id": "regen-1"}
    assert await other_tab.until_final(version["message"]) == frames

    assert await rows(ack["conversation"]) == [
        ("user", None, 1, "complete"),
        ("assistant", ack["question"], 1, "complete"),
        ("assistant", ack["question"], 2, "complete"),
    ]
    # The same id again (a socket reconnected before it heard back): the same version and its frames, never a third.
    reconnected = await Client.open(node, carol)
    again = await regenerate(reconnected, ack["message"], id="regen-1")
    assert again["message"] == version["message"] and again["version"] == 2
    assert await reconnected.until_final(version["message"]) == frames
    await reconnected.close()
    # Regenerating version 1 (any finished version) makes version 3; a replay from the database says its version.
    third = await regenerate(customer, ack["message"])
    assert (third["version"], third["versions"], third["id"]) == (3, 3, "")
    await customer.until_final(third["message"])
    await customer.send({"type": "resume", "message": version["message"], "after": 0})
    assert (await customer.until_final(version["message"]))[-1]["version"] == 2
    assert len(await rows(ack["conversation"])) == 4
    for client in (customer, other_tab):
        await client.close()


@pytest.mark.django_db(transaction=True)
async def test_a_version_streaming_when_the_socket_drops_is_resumed_on_a_new_socket(daphne_server, demo_kb):
    get_user_model().objects.create_user("carol", password=PASSWORD)
    slow = daphne_server(ANSWER_WORDS_PER_SECOND="8")
    token = get_token(slow, "carol", PASSWORD)
    customer = await Client.open(slow, token)
    ack, _ = await answered(customer)
    version = await regenerate(customer, ack["message"], id="regen-drop")
    seen = await customer.tokens(version["message"], 3)
    await customer.close()  # the answer goes on without any socket

    back = await Client.open(slow, token)
    await back.send({"type": "resume", "message": version["message"], "after": seen[-1]["seq"]})
    rest = await back.until_final(version["message"])
    frames = seen + rest
    assert_contiguous(frames)
    assert rest[0]["seq"] == seen[-1]["seq"] + 1
    assert rest[-1]["version"] == 2 and rest[-1]["text"] == text_of(frames)
    row = await database_sync_to_async(Message.objects.get)(pk=version["message"])
    assert (row.version, row.text, str(row.reply_to_id)) == (2, rest[-1]["text"], ack["question"])
    await back.close()


@pytest.mark.django_db(transaction=True)
async def test_someone_elses_answer_unknown_ids_and_garbage_are_refused_cleanly(node, carol):
    customer = await Client.open(node, carol)
    ack, _ = await answered(customer)
    intruder = await Client.open(node, get_token(node, "dave", PASSWORD))

    refused = await regenerate(intruder, ack["message"], id="steal")
    assert (refused["code"], refused["id"]) == ("not_found", "steal")  # someone else's looks missing
    assert (await regenerate(customer, str(uuid.uuid4())))["code"] == "not_found"
    question = await regenerate(customer, ack["question"], id="q")
    assert question["code"] == "forbidden" and "Only an assistant" in question["detail"], question
    for frame, field in (
        ({"type": "regenerate"}, "regenerate.message"),
        ({"type": "regenerate", "message": "nope"}, "regenerate.message"),
        ({"type": "regenerate", "message": 7}, "regenerate.message"),
        ({"type": "regenerate", "message": ack["message"], "id": "x" * 65}, "regenerate.id"),
        ({"type": "regenerate", "message": ack["message"], "id": ""}, "regenerate.id"),
    ):
        await customer.send(frame)
        error = await customer.recv_type("error")
        assert error["code"] == "invalid" and field in error["detail"], (frame, error)
    await customer.send({"type": "ping", "t": 1})
    assert (await customer.recv_type("pong"))["t"] == 1  # still open and working
    assert len(await rows(ack["conversation"])) == 2  # nothing saved
    for client in (customer, intruder):
        await client.close()


@pytest.mark.django_db(transaction=True)
async def test_no_new_version_while_a_person_is_asked_for_or_while_one_is_being_written(node, carol):
    customer = await Client.open(node, carol)
    ack, _ = await answered(customer)
    await customer.send({"type": "handoff", "conversation": ack["conversation"]})
    assert (await customer.recv_type("conversation"))["status"] == "waiting_for_agent"
    refused = await regenerate(customer, ack["message"], id="during-handoff")
    assert refused["code"] == "forbidden" and "person" in refused["detail"], refused
    assert refused["id"] == "during-handoff"
    assert [r[0] for r in await rows(ack["conversation"])] == ["user", "assistant", "system"]

    back_to_bot = await database_sync_to_async(Conversation.objects.filter(pk=ack["conversation"]).update)(status="bot")
    assert back_to_bot == 1
    version = await regenerate(customer, ack["message"])
    busy = await regenerate(customer, ack["message"])  # version 2 is still being written
    assert busy["code"] == "forbidden" and "still being written" in busy["detail"]
    await customer.until_final(version["message"])
    await customer.close()


@pytest.mark.django_db
def test_a_follow_up_reads_only_the_latest_version_of_each_earlier_answer():
    conversation = Conversation.objects.create(anonymous_session_key="s")

    def say(role: str, text: str, **fields) -> Message:
        return Message.objects.create(conversation=conversation, role=role, text=text, **fields)

    first = say("user", "How do I return an item?")
    say("assistant", "Old answer.", reply_to=first)
    second = say("user", "And exchanges?")
    say("assistant", "Exchanges answer.", reply_to=second)
    say("assistant", "New answer.", reply_to=first, version=2)  # regenerated after the second question
    third = say("user", "Thanks, and refunds?")
    follow_up = say("assistant", "", reply_to=third, state="streaming")

    # Version 2 of the first answer, in its place after its question; version 1 nowhere.
    assert [turn["text"] for turn in history(follow_up)] == [
        "How do I return an item?", "New answer.", "And exchanges?", "Exchanges answer."
    ]
    version_3 = say("assistant", "", reply_to=first, version=3, state="streaming")
    assert history(version_3) == []  # a version of the first answer reads what came before its question


@pytest.mark.django_db(transaction=True)
async def test_new_versions_meet_the_same_queue_and_rate_limits_as_questions(daphne_server, demo_kb):
    get_user_model().objects.create_user("carol", password=PASSWORD)
    tight = daphne_server(CHAT_QUEUE_LIMIT="1", CHAT_RATE_LIMIT="3", ANSWER_WORDS_PER_SECOND="5")
    customer = await Client.open(tight, get_token(tight, "carol", PASSWORD))
    ack, _ = await answered(customer)
    second = await customer.ask("How long does delivery take?", conversation=ack["conversation"])
    await customer.tokens(second["message"], 1)
    busy = await regenerate(customer, ack["message"], id="while-busy")
    assert (busy["code"], busy["id"]) == ("busy", "while-busy") and busy["retry_after"] > 0, busy
    await customer.send({"type": "cancel", "message": second["message"]})
    await customer.until_final(second["message"])

    version = await regenerate(customer, ack["message"])  # 2 questions and this version: 3 in the minute
    assert version["type"] == "answer_version"
    await customer.until_final(version["message"])
    limited = await regenerate(customer, ack["message"], id="one-too-many")
    assert (limited["code"], limited["id"]) == ("rate_limited", "one-too-many") and limited["retry_after"] > 0
    assert [r[2] for r in await rows(ack["conversation"]) if r[1] == ack["question"]] == [1, 2]
    await customer.close()


# --- In a real browser (last: the Playwright loop then stays in this thread) ---------------------------------
def shown_answers(page) -> list[str]:
    return page.eval_on_selector_all(".msg-assistant:not([hidden])", "els => els.map(e => e.dataset.message)")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_regenerate_in_the_chat_page_keeps_both_versions_and_the_console_shows_them(browser, node):
    get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
    errors: list[str] = []
    context, page = new_page(browser, errors, width=1280)
    sign_in(page, f"{node.url}/", "carol", PASSWORD)
    page.click("[data-new-conversation]")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    page.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    page.fill("#question", QUESTION)
    page.press("#question", "Enter")
    # Stopped after a few words: version 1 is short, so the two versions differ on screen.
    page.wait_for_function("(document.querySelector('.msg-assistant')?.dataset.streamed || '').split(' ').length > 4")
    page.click("[data-stop]")
    page.wait_for_function("document.querySelector('.msg-assistant').dataset.state === 'cancelled'")
    first = page.locator(".msg-assistant").first
    first_id, first_text = first.get_attribute("data-message"), first.get_attribute("data-text")

    first.locator('[data-action="regenerate"]').click()
    page.wait_for_function("document.querySelectorAll('.msg-assistant').length === 2")
    newest = page.locator(".msg-assistant:not([hidden])")
    assert newest.locator(".version-count").inner_text() == "2/2"
    page.wait_for_function("document.querySelector('.msg-assistant:not([hidden])').dataset.state === 'complete'")
    second_id = newest.get_attribute("data-message")
    second_text = newest.get_attribute("data-text")
    assert shown_answers(page) == [second_id] and second_id != first_id
    assert len(second_text) > len(first_text) and page.locator(".msg-user").count() == 1  # not asked again
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "chat-version-2-desktop.png"))

    page.get_by_role("button", name="Previous version").click()
    assert shown_answers(page) == [first_id]
    shown = page.locator(".msg-assistant:not([hidden])")
    assert shown.locator(".version-count").inner_text() == "1/2"
    assert shown.locator(".answer").inner_text().strip().startswith(first_text.split()[0])
    assert shown.locator(".state-note").is_visible()  # "Stopped — …" is version 1's own
    focused = page.evaluate("document.activeElement.closest('.versions') !== null")
    assert focused  # the focus stays on the control (the ‹ it moved from is disabled now)
    page.keyboard.press("ArrowRight")
    assert shown_answers(page) == [second_id]
    page.screenshot(path=str(SHOTS / "chat-versions-desktop.png"))

    page.reload()
    page.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    assert page.locator(".msg-assistant").count() == 2  # both versions, the latest shown
    assert shown_answers(page) == [second_id]
    assert page.locator(".msg-assistant:not([hidden]) .version-count").inner_text() == "2/2"
    page.get_by_role("button", name="Previous version").click()
    assert shown_answers(page) == [first_id]
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(SHOTS / "chat-versions-390.png"))

    staff_context, staff = new_page(browser, errors, width=1280)
    conversation = Message.objects.get(pk=first_id).conversation_id
    sign_in(staff, f"{node.url}/console/c/{conversation}/", "sam", PASSWORD)
    staff.wait_for_function("document.querySelectorAll('.trace .trace-version').length === 2")
    assert staff.locator(".msg-assistant:not([hidden]) .version-count").inner_text() == "2/2"
    labels = staff.locator(".trace .trace-version").all_inner_texts()
    assert labels == ["version 1 of 2", "version 2 of 2"]
    staff.screenshot(path=str(SHOTS / "console-versions-desktop.png"))
    staff.set_viewport_size({"width": 390, "height": 844})
    staff.screenshot(path=str(SHOTS / "console-versions-390.png"), full_page=True)
    assert errors == []
    context.close()
    staff_context.close()
