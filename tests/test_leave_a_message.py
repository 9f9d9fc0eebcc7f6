"""Leave a message (issue 20, point 5; conversations/leave_message.py, docs/widget.md "Leave a message"): a customer
who asks for a person when nobody can answer — no staff member has the console open on any node, or it is outside
the business hours of the conversation's site — is told so and leaves an e-mail address; the conversation waits for
staff, marked "customer offline" in every console, and a staff reply is e-mailed there too (Django's backend:
``locmem`` here, a stand-in SMTP server that fails, the file backend on a real node). Sending never holds up the
reply.

In-process sockets on the real ASGI stack for the frames; real Daphne nodes sharing Redis for "is anyone there?"
across nodes; a real browser on a real node for the chat page and the console.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socketserver
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.utils import timezone, translation
from django.utils.translation.trans_real import DjangoTranslation

from conversations import leave_message, protocol, reminders, staff_presence
from conversations.models import Conversation, InternalNote, Message, Site
from conversations.sites import WEEKDAYS
from tests.browser import new_page, sign_in
from tests.chat_support import PROTOCOL_JS, connect, protocol_js_names, stop_generation
from tests.node_client import get_token
from tests.test_access_ends import redis_available  # noqa: F401 - a fixture: the machine's Redis is up
from tests.test_chat_page import ANSWER_TIMEOUT_MS, PASSWORD, ask, screenshot, wait_for_final
from tests.test_console import console, drain, staff_console, update_for
from tests.test_console_page import STAFF_PASSWORD
from tests.test_revocation import accepted
from tests.test_tool_progress_page import shoot_at_each_width
from tests.test_widget_page import FINISHED
from tests.widget_support import DemoHost, make_site, open_widget

# The browser test reads the database beside Playwright's sync API (as tests/test_tool_progress_page.py does).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = pytest.mark.django_db(transaction=True)

REDIS = "redis://127.0.0.1:6379/0"
BERLIN = ZoneInfo("Europe/Berlin")
OFFICE_HOURS = {day: [["09:00", "17:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
ADDRESS = "carol@example.com"
LEAVE_JS = PROTOCOL_JS.parent / "leave_message.js"


# The panel is on screen above the composer: the page scrolled to it when it appeared.
PANEL_IN_VIEW = """() => { const r = document.querySelector('[data-leave-message]').getBoundingClientRect();
  const composer = document.querySelector('[data-composer]').getBoundingClientRect();
  return r.height > 0 && r.top >= 0 && r.bottom <= composer.top + 1; }"""


@dataclass
class People:
    carol: object  # the customer
    sam: object  # of the staff
    bob: object  # of the staff too


@pytest.fixture
def people(transactional_db) -> People:
    make = get_user_model().objects.create_user
    return People(
        carol=make("carol", password="pw-carol-123", first_name="Carol"),
        sam=make("sam", password="pw-sam-123", first_name="Sam", is_staff=True),
        bob=make("bob", password="pw-bob-123", first_name="Bob", is_staff=True),
    )


@pytest.fixture
async def cleanup():
    """This process is one node: it starts with nobody's console open, and nothing it started outlives the test."""
    staff_presence._local.clear()
    yield
    await leave_message.finish_sending()
    await reminders.stop()
    await stop_generation()


async def waiting_conversation(customer, text: str = "How do I return an item?"):
    """A customer socket whose question was answered and who then asked for a person; the socket, the conversation
    id and the ``conversation`` frame the handoff got."""
    chat = await connect(customer)
    ack = await chat.ask(text)
    await chat.until_final(ack["message"])
    await chat.send({"type": "handoff", "conversation": ack["conversation"]})
    return chat, ack["conversation"], await chat.recv_type("conversation")


async def leave(chat, conversation: str, email: str = ADDRESS, **extra) -> dict:
    """Send ``leave_message``; the frame the socket gets back (``conversation``, or an ``error``)."""
    frame = {"type": "leave_message", "conversation": conversation, "id": str(uuid.uuid4()), "email": email, **extra}
    await chat.send(frame)
    while (reply := await chat.recv())["type"] not in ("conversation", "error"):
        pass
    return reply


async def reply_as(staff, conversation: str, text: str) -> None:
    await staff.send({"type": "agent_message", "conversation": conversation, "id": str(uuid.uuid4()), "text": text})


# --- is anyone there? -------------------------------------------------------------------------------------------
async def test_nobody_can_answer_outside_business_hours_or_without_an_active_staff_member_online(people, cleanup):
    conversation = await Conversation.objects.acreate(owner=people.carol, title="Where is my parcel?")
    assert await leave_message.away_reason(conversation) == leave_message.NOBODY_ONLINE

    staff = await console(people.sam)  # the real console socket: open, someone is there
    await staff.recv_type("conversations")
    assert await leave_message.away_reason(conversation) is None

    # A site's business hours, on its wall clock: a Monday 10:00 in Berlin is open, 18:00 and Sunday are not.
    site = await Site.objects.acreate(name="North Shop", slug="north-shop", business_hours=OFFICE_HOURS,
                                      time_zone="Europe/Berlin")  # fmt: skip
    conversation.site = site
    assert await leave_message.away_reason(conversation, datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)) is None
    for closed in (datetime(2026, 3, 2, 18, 0, tzinfo=BERLIN), datetime(2026, 3, 1, 10, 0, tzinfo=BERLIN)):
        assert await leave_message.away_reason(conversation, closed) == leave_message.CLOSED
    assert await leave_message.away_reason(conversation, datetime(2026, 3, 2, 8, 30, tzinfo=ZoneInfo("UTC"))) is None

    # Open but nobody online: said as such. A console whose user is no longer active staff does not count.
    await staff.close()
    assert await leave_message.away_reason(conversation, datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)) == (
        leave_message.NOBODY_ONLINE
    )
    other = await console(people.bob)
    await other.recv_type("conversations")
    assert await leave_message.staff_online()
    await get_user_model().objects.filter(pk=people.bob.pk).aupdate(is_staff=False)  # no signal: the socket stays open
    assert await staff_presence.online_user_ids() == {people.bob.pk}
    assert not await leave_message.staff_online()
    await other.close()
    assert await staff_presence.online_user_ids() == set()


@pytest.mark.multinode
@pytest.mark.usefixtures("redis_available")
async def test_a_console_on_one_node_counts_on_the_other_and_a_dead_nodes_stop_counting(daphne_server, people):
    env = {"REDIS_URL": REDIS, "CHANNEL_PREFIX": f"lam-{uuid.uuid4().hex[:10]}", "CONSOLE_PRESENCE_SECONDS": "2"}
    node_a, node_b = daphne_server(**env), daphne_server(**env)
    conversation = await Conversation.objects.acreate(owner=people.carol, title="Where is my parcel?")
    customer = await accepted(
        node_b, "/ws/chat/", token=await asyncio.to_thread(get_token, node_b, "carol", "pw-carol-123")
    )
    staff_token = await asyncio.to_thread(get_token, node_a, "sam", "pw-sam-123")

    async def away() -> str | None:
        """Ask for a person (again) on node B: why nobody can answer, as its ``conversation`` frame says."""
        await customer.send(json.dumps({"type": "handoff", "conversation": str(conversation.pk)}))
        async with asyncio.timeout(10):
            while (frame := json.loads(await customer.recv()))["type"] != "conversation":
                pass
        assert frame["status"] == "waiting_for_agent"
        return frame["away"]

    assert await away() == "nobody_online"
    staff = await accepted(node_a, "/ws/console/", token=staff_token)
    assert await away() is None  # Sam's console on node A: someone is there, for node B too
    await staff.close()
    closed = time.monotonic()
    while (why := await away()) is None:  # until the close has reached node A's record in Redis
        assert time.monotonic() - closed < 1.0, "a closed console still counts after a second"
        await asyncio.sleep(0.1)
    assert why == "nobody_online"  # closed: within a second, not when the 2 s heartbeat lapses

    _kept_open = await accepted(node_a, "/ws/console/", token=staff_token)
    await asyncio.sleep(2.5)  # longer than the presence: node A's heartbeat keeps Sam online
    assert await away() is None
    node_a.kill()  # no code runs on node A: its record of Sam stays in Redis until it lapses
    killed = time.monotonic()
    while await away() is None:
        assert time.monotonic() - killed < 2 + 1, "a dead node's console still counts past CONSOLE_PRESENCE_SECONDS"
        await asyncio.sleep(0.2)
    await customer.close()


# --- leaving an address ---------------------------------------------------------------------------------------
async def test_told_that_nobody_is_online_the_customer_leaves_an_address_and_every_console_marks_them_offline(
    demo_kb, people, fast_answers, cleanup
):
    chat, conversation, told = await waiting_conversation(people.carol)
    assert told["status"] == "waiting_for_agent" and told["away"] == "nobody_online" and told["left_message"] is None
    first, _ = await staff_console(people.sam)
    second, _ = await staff_console(people.bob)

    refused = await leave(chat, conversation, "carol@", id="bad-1")
    assert refused["code"] == "invalid" and refused["id"] == "bad-1"
    assert refused["detail"] == "leave_message.email is not an e-mail address: 'carol@'. Nothing was saved."
    no_id = await leave(chat, conversation, id="")
    assert no_id["code"] == "invalid" and "leave_message.id" in no_id["detail"]
    assert (await Conversation.objects.aget(pk=conversation)).left_message_at is None

    before = timezone.now()
    saved = await leave(chat, conversation, f"  {ADDRESS} ")
    assert saved["left_message"]["email"] == ADDRESS and saved["status"] == "waiting_for_agent"
    assert saved["away"] is None  # two consoles are open now: someone can answer
    row = await Conversation.objects.aget(pk=conversation)
    assert row.contact_email == ADDRESS and row.left_message_at >= before
    assert saved["left_message"]["at"] == row.left_message_at.isoformat()
    for staff in (first, second):  # live, to every console
        item = await update_for(staff, conversation, left_message=saved["left_message"])
        assert item["section"] == "waiting"

    # Not for a conversation nobody was asked to join, and someone else's looks absent.
    other = await chat.ask("How long does delivery take?")
    await chat.until_final(other["message"])
    forbidden = await leave(chat, other["conversation"])
    assert forbidden["code"] == "forbidden" and "ask for a person first" in forbidden["detail"]
    dave = await get_user_model().objects.acreate(username="dave")
    stranger = await connect(dave)
    assert (await leave(stranger, conversation, "dave@example.com"))["code"] == "not_found"
    assert (await Conversation.objects.aget(pk=conversation)).contact_email == ADDRESS
    for client in (chat, first, second, stranger):
        await client.close()


async def test_customer_offline_lasts_while_they_wait_and_ends_when_they_write_to_a_person(
    demo_kb, people, fast_answers, cleanup
):
    chat, conversation, _ = await waiting_conversation(people.carol)
    await leave(chat, conversation)
    staff, _ = await staff_console(people.sam)

    # More details while still waiting for a person: part of the request, the address stays in use.
    await chat.ask("It is the blue lamp, order 1234.", conversation=conversation)
    await update_for(staff, conversation, unread=2)
    assert (await Conversation.objects.aget(pk=conversation)).left_message_at is not None

    await staff.send({"type": "take_over", "conversation": conversation})
    taken = await chat.recv_type("conversation")
    assert taken["status"] == "agent" and taken["left_message"]["email"] == ADDRESS and taken["away"] is None
    await chat.ask("I'm back: is it refunded?", conversation=conversation)  # to a person: they are in the chat again
    item = await update_for(staff, conversation, left_message=None)
    assert item["status"] == "agent"
    row = await Conversation.objects.aget(pk=conversation)
    assert row.left_message_at is None and row.contact_email == ADDRESS
    await chat.close()
    await staff.close()


# --- e-mailing the reply --------------------------------------------------------------------------------------
async def test_a_reply_to_an_offline_customer_is_e_mailed_in_their_language_with_where_to_continue(
    demo_kb, people, fast_answers, settings, cleanup
):
    settings.PUBLIC_URL = "https://support.example.com"
    settings.DEFAULT_FROM_EMAIL = "North Shop support <support@example.com>"
    mail.outbox.clear()
    chat, conversation, _ = await waiting_conversation(people.carol, "Wie kann ich einen Artikel zurückgeben?")
    await leave(chat, conversation)
    staff, _ = await staff_console(people.sam)
    await staff.send({"type": "take_over", "conversation": conversation})

    await reply_as(staff, conversation, "Hallo Carol, ich habe Ihnen das Rücksendeetikett geschickt.")
    delivered = await chat.recv_type("agent_message")  # on the socket as always
    note = await staff.recv_type("note")  # and the console says where it went
    assert note["note"]["text"] == f"Reply e-mailed to {ADDRESS} (the customer is offline)."
    assert note["note"]["author"] == {"id": people.sam.pk, "name": "Sam"}

    (sent,) = mail.outbox
    assert sent.to == [ADDRESS] and sent.from_email == "North Shop support <support@example.com>"
    assert sent.subject == "Antwort unseres Support-Teams: Wie kann ich einen Artikel zurückgeben?"
    assert sent.body.splitlines()[:5] == [
        "Hallo,", "", "Sam aus unserem Support-Team hat geantwortet:", "", delivered["text"],
    ]  # fmt: skip
    assert f"Setzen Sie das Gespräch hier fort: https://support.example.com/c/{conversation}/" in sent.body
    assert "weil Sie diese Adresse in unserem Chat hinterlassen haben" in sent.body

    # Back in the chat, the customer is no longer offline: the next reply goes on the socket only.
    await chat.ask("Danke, angekommen!", conversation=conversation)
    await staff.recv_type("question")
    await reply_as(staff, conversation, "Gern geschehen!")
    await chat.recv_type("agent_message")
    await leave_message.finish_sending()
    assert not [f for f in await drain(staff, 0.5) if f["type"] == "note"]
    assert len(mail.outbox) == 1 and await InternalNote.objects.filter(conversation_id=conversation).acount() == 1
    await chat.close()
    await staff.close()


def test_a_widget_reply_links_to_the_host_page_while_its_site_allows_it(people, settings):
    settings.PUBLIC_URL = "https://support.example.com"
    site = Site.objects.create(name="North Shop", slug="north-shop", allowed_origins="https://shop.example.com")
    conversation = Conversation.objects.create(
        owner=people.carol, title="Returns", site=site, page_url="https://shop.example.com/help/returns?from=menu",
        contact_email=ADDRESS, left_message_at=timezone.now(),
    )  # fmt: skip
    reply = Message.objects.create(conversation=conversation, role="agent", author=people.sam, text="Done!")
    assert leave_message.continue_url(conversation) == "https://shop.example.com/help/returns?from=menu"
    assert "Continue the conversation here: https://shop.example.com/help/returns?from=menu" in (
        leave_message.reply_mail(reply.pk).body
    )
    site.allowed_origins = "https://www.example.com"  # the page's site no longer lists it: no link at all
    site.save()
    conversation.refresh_from_db()
    body = leave_message.reply_mail(reply.pk).body
    assert "To continue the conversation, open the chat where you asked." in body and "http" not in body
    Conversation.objects.filter(pk=conversation.pk).update(left_message_at=None)
    assert leave_message.reply_mail(reply.pk) is None  # not offline: nothing to e-mail


class MailServer(socketserver.ThreadingTCPServer):
    """A stand-in for a broken mail server on a free port, failing as real ones do: ``frozen`` accepts the
    connection and never says a word; ``refusing`` greets with SMTP's 554 and hangs up."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        self.released = threading.Event()
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                if mode == "refusing":
                    self.request.sendall(b"554 5.3.2 stand-in: not accepting mail\r\n")
                else:
                    server.released.wait(30)

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]

    def __enter__(self) -> MailServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.shutdown()
        self.server_close()


@pytest.mark.parametrize("mode", ["frozen", "refusing"])
async def test_a_failing_mail_server_never_holds_up_or_loses_the_reply_and_the_console_is_told(
    demo_kb, people, fast_answers, settings, caplog, cleanup, mode
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_TIMEOUT = 2.0
    chat, conversation, _ = await waiting_conversation(people.carol)
    await leave(chat, conversation)
    staff, _ = await staff_console(people.sam)
    await staff.send({"type": "take_over", "conversation": conversation})
    with MailServer(mode) as server:
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
        sent_at = time.monotonic()
        await reply_as(staff, conversation, "Your refund is on its way.")
        delivered = await chat.recv_type("agent_message")
        await staff.ping_roundtrip()  # the console's socket takes its next frame at once, the mail still under way
        await chat.ping_roundtrip()
        took = time.monotonic() - sent_at
        assert delivered["text"] == "Your refund is on its way." and took < 1.0, took
        assert await Message.objects.filter(conversation_id=conversation, role="agent").acount() == 1
        note = (await staff.recv_type("note", wait=10))["note"]["text"]
    assert note.startswith(f"Could not e-mail this reply to {ADDRESS} (")
    assert note.endswith("It is saved: the customer sees it when they come back to the chat.")
    why = {"frozen": "timed out", "refusing": "SMTPConnectError"}[mode]
    assert why in note, note
    logged = [r.getMessage() for r in caplog.records if r.name == "conversations.leave_message"]
    assert any(m.startswith("could not e-mail the reply") and why in m for m in logged), logged
    if mode == "frozen":
        assert time.monotonic() - sent_at >= 2.0  # it waited for the server (EMAIL_TIMEOUT), on its own thread
    await chat.ping_roundtrip()  # the customer's socket and the console's are as they were
    await staff.ping_roundtrip()
    await chat.close()
    await staff.close()


# --- the pages' words and names -----------------------------------------------------------------------------
def test_every_sentence_is_translated_in_every_language():
    js_ids = re.findall(r'gettext\("([^"]+)"\)', LEAVE_JS.read_text())
    assert len(js_ids) >= 10
    source = Path(leave_message.__file__).read_text()
    py_ids = [re.sub(r'"\s+"', "", m) for m in re.findall(r'_\(\s*"((?:[^"]|"\s+")+)"\s*\)', source)]
    assert len(py_ids) == 7, py_ids
    for language in ("de", "fr", "es", "zh-hans"):
        catalog = DjangoTranslation(language, domain="djangojs")
        for text in js_ids:
            translated = catalog.gettext(text)
            assert translated != text, (language, text)
            assert re.findall(r"%\(\w+\)s", translated) == re.findall(r"%\(\w+\)s", text), (language, text)
        with translation.override(language):
            for text in py_ids:
                assert translation.gettext(text) != text, (language, text)


def test_the_pages_know_why_nobody_can_answer_and_the_new_frame():
    assert protocol_js_names("AWAY") == {"CLOSED": protocol.AWAY_CLOSED, "NOBODY_ONLINE": protocol.AWAY_NOBODY_ONLINE}
    assert protocol_js_names("FRAME")["LEAVE_MESSAGE"] == protocol.LEAVE_MESSAGE
    assert protocol.LEAVE_MESSAGE in protocol.CHAT.types


# --- the chat page and the console, in a browser --------------------------------------------------------------
@pytest.mark.e2e
def test_nobody_online_the_customer_leaves_an_address_and_the_staff_reply_arrives_by_e_mail(
    browser, daphne_server, demo_kb, tmp_path
):
    users = get_user_model().objects
    users.create_user("customer", password=PASSWORD, first_name="Carol")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    outbox = tmp_path / "mail"
    node = daphne_server(
        ANSWER_WORDS_PER_SECOND="0", EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(outbox), PUBLIC_URL="https://support.example.com",
    )  # fmt: skip
    errors: list[str] = []
    chat_context, chat = new_page(browser, errors, width=1280)
    sign_in(chat, f"{node.url}/", "customer", PASSWORD)
    chat.click("[data-new-conversation]")
    chat.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    chat.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    conversation = chat.url.rstrip("/").rsplit("/", 1)[1]
    ask(chat, "How do I return an item?")
    wait_for_final(chat, "complete")

    # Nobody has the console open: asking for a person says so and asks for an address, instead of "we have asked".
    chat.click("[data-handoff]")
    panel = chat.locator("[data-leave-message]")
    panel.wait_for()
    chat.wait_for_function(PANEL_IN_VIEW)
    assert panel.locator("[data-why]").inner_text() == "Nobody from our support team is online right now."
    assert chat.locator("[data-agent-banner]").is_hidden()
    assert panel.locator("label").inner_text() == "Your e-mail address"
    shoot_at_each_width(chat, "leave-message-form", panel)

    # A bad address is refused by the server, said at the field; nothing is saved.
    panel.locator("input").fill("carol@")
    panel.locator("button[type=submit]").click()
    error = panel.locator(".field-error")
    error.wait_for()
    assert error.inner_text() == "This does not look like an e-mail address. Please check it."
    assert panel.locator("input").get_attribute("aria-invalid") == "true"
    assert Conversation.objects.get(pk=conversation).left_message_at is None
    shoot_at_each_width(chat, "leave-message-invalid", panel)

    panel.locator("input").fill(ADDRESS)
    panel.locator("input").press("Enter")
    left = panel.locator("[data-left]")
    left.wait_for()
    assert left.locator("[data-left-text]").inner_text() == (
        f"We will e-mail our reply to {ADDRESS}. You can close this page; your request stays in our queue."
    )
    assert panel.locator("form").is_hidden()
    shoot_at_each_width(chat, "leave-message-left", panel)
    chat_context.close()  # the customer goes away

    # The console: the conversation waits, marked "customer offline" with the address.
    staff_context, staff = new_page(browser, errors, width=1280, height=1000)
    sign_in(staff, f"{node.url}/console/", "sam", STAFF_PASSWORD)
    row = staff.locator(f'[data-section-list="waiting"] .console-row[data-conversation="{conversation}"]')
    mark = row.locator("[data-offline]")
    assert mark.is_visible() and mark.inner_text() == f"customer offline · {ADDRESS}"
    shoot_at_each_width(staff, "leave-message-console-list", row)
    row.locator("a.row-title").click()
    staff.wait_for_url(f"{node.url}/console/c/{conversation}/")
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    bar_mark = staff.locator(".console-bar [data-offline]")
    assert bar_mark.is_visible() and ADDRESS in bar_mark.inner_text()
    staff.click("[data-action=take_over]")
    staff.wait_for_function("document.querySelector('[data-holder]').textContent.includes('You are answering')")
    staff.fill("#agent-text", "Hi Carol, I'm Sam. The return label is in your account under Orders.")
    staff.press("#agent-text", "Enter")
    note = staff.locator(".notes .note-text")
    note.wait_for()
    assert note.inner_text() == f"Reply e-mailed to {ADDRESS} (the customer is offline)."
    shoot_at_each_width(staff, "leave-message-console-replied", staff.locator(".console-detail"))

    (sent,) = outbox.iterdir()
    text = sent.read_text()
    assert f"To: {ADDRESS}" in text and "Subject: Reply from our support team: How do I return an item?" in text
    assert "Sam from our support team replied:" in text
    assert "Hi Carol, I'm Sam. The return label is in your account under Orders." in text
    assert f"Continue the conversation here: https://support.example.com/c/{conversation}/" in text
    assert errors == []
    staff_context.close()


@pytest.mark.e2e
def test_outside_business_hours_a_widget_visitor_leaves_an_address_and_the_reply_links_back_to_the_host_page(
    browser, daphne_server, demo_kb, tmp_path
):
    """The widget runs the chat page's modules: the same panel, on the demo host from another site, for the other
    reason — the site is closed today, so even a staff member with the console open is not asked for."""
    get_user_model().objects.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    outbox = tmp_path / "mail"
    node = daphne_server(
        CHAT_RATE_LIMIT="0", ANSWER_WORDS_PER_SECOND="0", EMAIL_FILE_PATH=str(outbox),
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
    )  # fmt: skip
    another_day = WEEKDAYS[(timezone.now().weekday() + 3) % 7]  # open only then: closed all of today
    with DemoHost(node.url) as host:
        make_site(demo_kb, host.origin, business_hours={another_day: [["09:00", "17:00"]]}, time_zone="UTC")
        errors: list[str] = []
        staff_context, staff = new_page(browser, errors, width=1280, height=1000)
        sign_in(staff, f"{node.url}/console/", "sam", STAFF_PASSWORD)
        staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
        visitor_context, page = new_page(browser, errors, width=1280)
        frame = open_widget(page, f"{host.origin}/delivery/")
        ask(frame, "How do I return an item?")
        frame.wait_for_function(FINISHED, timeout=ANSWER_TIMEOUT_MS)

        frame.click("[data-handoff]")
        panel = frame.locator("[data-leave-message]")
        panel.wait_for()
        frame.wait_for_function(PANEL_IN_VIEW)
        why = "Our support team is not available right now: it is outside our business hours."
        assert panel.locator("[data-why]").inner_text() == why
        assert frame.locator("[data-agent-banner]").is_hidden()
        screenshot(page, "leave-message-widget-closed-1280")
        page.set_viewport_size({"width": 390, "height": 844})  # the panel full screen
        frame.evaluate("window.scrollTo({top: document.documentElement.scrollHeight})")
        screenshot(page, "leave-message-widget-closed-390")
        panel.locator("input").fill(ADDRESS)
        panel.locator("button[type=submit]").click()
        panel.locator("[data-left]").wait_for()
        screenshot(page, "leave-message-widget-left-390")
        visitor_context.close()

        conversation = Conversation.objects.get()
        assert conversation.site_id is not None and conversation.contact_email == ADDRESS
        row = staff.locator(f'[data-section-list="waiting"] .console-row[data-conversation="{conversation.pk}"]')
        row.locator("[data-offline]").wait_for()  # live, on the list the staff member had open
        row.locator("a.row-title").click()
        staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
        staff.click("[data-action=take_over]")
        staff.wait_for_function("document.querySelector('[data-holder]').textContent.includes('You are answering')")
        staff.fill("#agent-text", "We are back on Monday; your return label is attached to your order.")
        staff.press("#agent-text", "Enter")
        staff.locator(".notes .note-text").wait_for()
        assert (
            staff.locator(".notes .note-text").inner_text() == f"Reply e-mailed to {ADDRESS} (the customer is offline)."
        )
        (sent,) = outbox.iterdir()
        assert f"Continue the conversation here: {host.origin}/delivery/" in sent.read_text()
        assert errors == []
        staff_context.close()
