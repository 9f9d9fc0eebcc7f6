"""A tool call live in the pages, in a real browser against a real Daphne node and the demo order API as the real
process `make run` starts: the customer watches "Checking Order status: 10432…", then the order's card, then the
answer citing it [1]; a staff member with the console open on that conversation sees the card arrive in the
transcript and the call in the trace (arguments, outcome, HTTP status, latency, the signature as •••). Another
customer asking about the same order gets a failed card, marked, and the offer of a person.

The demo API answers in milliseconds, too fast to see the step; so the tool's base URL points at a gate in front
of it, a real HTTP server that forwards each request unchanged (the signed identity still verified by the demo API)
once the test has looked at the progress line. tests/test_tool_card.py covers a stored answer's replay.
"""

from __future__ import annotations

import http.client
import os
import re
import threading
from http.server import BaseHTTPRequestHandler

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from conversations.views import chip_label
from knowledge.models import KnowledgeBase, Tool
from knowledge.tools import demo_api
from tests.browser import new_page, sign_in
from tests.demo_api_process import SECRET, running_demo_api
from tests.local_http import LocalHTTPServer
from tests.test_chat_page import ANSWER_TIMEOUT_MS, ask, screenshot, wait_for_final
from tests.test_console_page import STAFF_PASSWORD, below_header
from tests.test_tool_card import fits

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-tool-progress-3"
NODE = {"TOOLS_ALLOW_PRIVATE_ADDRESSES": "1", "CHAT_RATE_LIMIT": "0"}
QUESTION = "Where is my order 10432?"
CHECKING = "Checking Order status: 10432…"
COULD_NOT_CHECK = "I could not check this right now. Would you like to talk to a person?"
WIDTHS = ((1280, "1280"), (390, "390"))


class Gate(LocalHTTPServer):
    """Holds each request until ``release`` is set, then forwards it as it came (method, path, headers, body) to
    the API on ``upstream_port`` and answers with what that said. ``arrived`` is set when a request is held."""

    def __init__(self, upstream_port: int) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        gate = self

        class Forward(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gate.arrived.set()
                gate.release.wait(20)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                connection = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=10)
                try:
                    connection.request(self.command, self.path, body=body, headers=dict(self.headers.items()))
                    response = connection.getresponse()
                    data = response.read()
                finally:
                    connection.close()
                self.send_response(response.status)
                self.send_header("Content-Type", response.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Forward)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{demo_api.PREFIX}"


@pytest.fixture
def api(tmp_path):
    with running_demo_api(tmp_path, SECRET) as running:
        yield running


@pytest.fixture
def gate(api):
    with Gate(api.port) as running:
        yield running


@pytest.fixture
def people(demo_kb, gate):
    """Chris and Alex (the demo API knows them by e-mail), Sam of the staff, and the demo tools behind the gate."""
    users = get_user_model().objects
    users.create_user("chris", "chris.miller@example.com", PASSWORD, first_name="Chris")
    users.create_user("alex", "alex.weber@example.com", PASSWORD, first_name="Alex")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    kb = KnowledgeBase.objects.get(name=settings.DEFAULT_KNOWLEDGE_BASE)
    for definition in (demo_api.ORDER_TOOL, demo_api.REFUND_TOOL):
        tool = Tool(**{**definition, "timeout_seconds": 15.0}, base_url=gate.url, secret=SECRET)
        tool.full_clean()
        tool.save()
        tool.knowledge_bases.add(kb)


def open_new_conversation(page, base_url: str, username: str) -> str:
    """Sign in, start a conversation, wait for its socket; its id."""
    sign_in(page, f"{base_url}/", username, PASSWORD)
    page.click("[data-new-conversation]")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    page.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    return page.url.rstrip("/").rsplit("/", 1)[1]


def customer_and_console(browser, errors: list[str], base_url: str, customer: str = "chris"):
    """The customer's page on a new conversation and Sam's console open on it, both connected: ``((context, page),
    conversation id, (context, page))``."""
    chat = new_page(browser, errors, width=1280)
    conversation = open_new_conversation(chat[1], base_url, customer)
    console = new_page(browser, errors, width=1280, height=1000)
    sign_in(console[1], f"{base_url}/console/c/{conversation}/", "sam", STAFF_PASSWORD)
    console[1].wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    return chat, conversation, console


def shoot_at_each_width(page, name: str, target) -> list[str]:
    """A picture at 1280 and 390 px wide with ``target`` just under the header, nothing sticking out sideways;
    the viewport is left at 1280 px."""
    paths = []
    for width, suffix in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        below_header(target)
        fits(page, f"{name}-{suffix}")
        paths.append(str(screenshot(page, f"{name}-{suffix}")))
    page.set_viewport_size({"width": 1280, "height": 900})
    return paths


def test_the_customer_watches_the_order_looked_up_and_cited_and_the_console_traces_it(
    browser, daphne_server, people, gate
):
    site = daphne_server(**NODE, ANSWER_WORDS_PER_SECOND="4")
    errors: list[str] = []
    (chat_context, chat), conversation, (console_context, staff) = customer_and_console(browser, errors, site.url)

    # The progress line while the company's API is still answering, in the chat page and the console alike.
    ask(chat, QUESTION)
    assert gate.arrived.wait(30), "the tool's request never reached the API"
    answer = chat.locator(".msg-assistant").last
    chat.wait_for_function(
        "(t) => [...document.querySelectorAll('.msg-assistant .status')].pop()?.textContent === t", arg=CHECKING
    )
    assert "busy" in answer.locator(".status").get_attribute("class")
    assert answer.get_attribute("data-state") == "streaming" and not answer.locator(".tool-card").count()
    staff.wait_for_function(
        "(t) => [...document.querySelectorAll('.console-chat .msg-assistant .status')].pop()?.textContent === t",
        arg=CHECKING,
    )
    shoot_at_each_width(chat, "live-chat-tool-progress", answer)
    shoot_at_each_width(staff, "live-console-tool-progress", staff.locator(".console-chat .msg-assistant").last)
    gate.release.set()

    # The card with the order's visible fields, then the answer citing it.
    card = answer.locator(".tools .tool-card")
    card.wait_for(timeout=ANSWER_TIMEOUT_MS)
    assert answer.get_attribute("data-state") == "streaming"  # the card comes before the answer's words
    wait_for_final(chat, "complete")
    assert card.count() == 1
    assert card.get_attribute("data-ok") == "true" and card.get_attribute("data-n") == "1"
    assert card.locator(".tool-name").inner_text() == "Order status"
    assert card.locator(".tool-text").inner_text() == "Found it"
    fields = dict(zip(card.locator("dt").all_inner_texts(), card.locator("dd").all_inner_texts(), strict=True))
    assert fields["order_number"] == "10432" and fields["status"] == "shipped" and fields["carrier"] == "DHL"
    assert set(fields) <= set(demo_api.ORDER_TOOL["visible_fields"])
    text = answer.locator(".answer").inner_text()
    assert text.startswith("Order 10432: shipped, carrier DHL, delivery date "), text
    assert answer.locator(".answer .cite a").all_inner_texts() == ["[1]"]
    assert not answer.locator(".handoff-offer").count()
    shoot_at_each_width(chat, "live-chat-tool-card", answer)

    # "[1]" opens the tool's chip: the order's fields, no document to open; the card flashes.
    answer.locator('.cite a[data-n="1"]').click()
    chip = answer.locator('.source[data-n="1"]')
    assert chip.get_attribute("data-kind") == "tool" and "open" in chip.get_attribute("class").split()
    assert chip.locator(".t").inner_text() == "Order status"
    assert "status: shipped" in chip.locator(".source-pop .snippet").inner_text()
    assert not chip.locator(".open-doc").count()
    assert "pulse" in card.get_attribute("class")
    shoot_at_each_width(chat, "live-chat-tool-cited", answer)

    # The console drew the same card live in its transcript, and traces the call.
    transcript = staff.locator(".console-chat .msg-assistant").last
    assert transcript.locator(".tool-card .tool-name").all_inner_texts() == ["Order status"]
    assert transcript.locator(".tool-card dd").all_inner_texts() == card.locator("dd").all_inner_texts()
    staff.wait_for_selector(".trace .tool-call")
    call = staff.locator(".trace .tool-call")
    assert call.count() == 1
    assert call.get_attribute("data-ok") == "true" and call.locator(".mark").inner_text() == "✓"
    assert call.locator(".call-name").inner_text() == "Order status"
    assert call.locator(".outcome").inner_text() == "ok"
    assert call.locator(".call-status").inner_text() == "HTTP 200"
    assert re.fullmatch(r"\d+(\.\d+)? (ms|s)", call.locator(".call-latency").inner_text())
    assert call.locator(".call-args dt").all_inner_texts() == ["order_number"]
    assert call.locator(".call-args dd").all_inner_texts() == ["10432"]
    assert call.locator(".call-request").inner_text() == f"GET {gate.url}/orders/10432"
    names, values = (
        call.locator(".call-headers dt").all_inner_texts(),
        call.locator(".call-headers dd").all_inner_texts(),
    )
    headers = dict(zip(names, values, strict=True))
    assert headers["X-Support-Signature"] == "•••", headers
    assert SECRET not in staff.content()
    stored = Message.objects.get(role="assistant", conversation_id=conversation)
    assert stored.trace["tools"][0]["latency_ms"] >= 0 and stored.citations == [1]
    shoot_at_each_width(staff, "live-console-tool-trace", staff.locator(".trace").last)

    assert errors == []
    chat_context.close()
    console_context.close()


def test_another_customers_order_gets_a_failed_card_and_a_person_and_the_console_labels_chips_alike(
    browser, daphne_server, people, gate, api
):
    gate.release.set()  # nothing to watch on the way: the API refuses
    site = daphne_server(**NODE, ANSWER_WORDS_PER_SECOND="0")
    errors: list[str] = []
    chat_context, chat = new_page(browser, errors, width=1280)
    conversation = open_new_conversation(chat, site.url, "alex")

    ask(chat, QUESTION)  # Chris's order
    wait_for_final(chat, "complete")
    answer = chat.locator(".msg-assistant").last
    card = answer.locator(".tool-card")
    assert card.count() == 1
    assert card.get_attribute("data-ok") == "false" and card.get_attribute("data-outcome") == "http_error"
    assert card.locator(".tool-text").inner_text() == "Could not check right now"
    assert not card.locator("dl").count() and not card.locator(".n").count()
    red, green, blue = map(int, re.findall(r"\d+", card.evaluate("e => getComputedStyle(e).borderLeftColor"))[:3])
    assert red > 2 * max(green, blue), (red, green, blue)  # marked in red
    assert answer.locator(".answer").inner_text().strip() == COULD_NOT_CHECK
    offer = answer.locator(".handoff-offer")
    assert offer.is_visible() and offer.inner_text() == "Talk to a person"
    assert "shipped" not in answer.inner_text()
    assert "GET '/api/orders/10432' 404 user alex.weber@example.com" in api.log.read_text()
    shoot_at_each_width(chat, "live-chat-tool-refused", answer)

    # An article's answer too, so the chips have sections to be labelled by.
    ask(chat, "How do I return an item?")
    chat.wait_for_function("document.querySelectorAll('.msg-assistant').length === 2")
    wait_for_final(chat, "complete")
    article = Message.objects.filter(conversation_id=conversation, role="assistant").order_by("created_at").last()
    labels = [chip_label(item) for item in article.sources]
    assert any(label != item["title"] for label, item in zip(labels, article.sources, strict=True)), labels
    assert chat.locator(".msg-assistant").last.locator(".source .t").all_inner_texts() == labels

    # The console, opened afterwards, renders the history on the server: the same chip words as the customer's page,
    # and the refused call marked in the trace.
    console_context, staff = new_page(browser, errors, width=1280, height=1000)
    sign_in(staff, f"{site.url}/console/c/{conversation}/", "sam", STAFF_PASSWORD)
    server_chips = staff.locator(f'.console-chat .msg-assistant[data-message="{article.pk}"] .source .t')
    assert server_chips.all_inner_texts() == labels
    staff.wait_for_selector(".trace .tool-call")
    call = staff.locator(".trace .tool-call")
    assert call.get_attribute("data-ok") == "false" and call.locator(".mark").inner_text() == "✕"
    assert call.locator(".outcome").inner_text() == "http_error" and "failed" in call.locator(".outcome").get_attribute(
        "class"
    )
    assert call.locator(".call-status").inner_text() == "HTTP 404"
    assert not call.locator(".call-fields").count()
    # Why a person was offered: the call failed, not "nothing relevant found".
    assert "A tool call failed or was refused: offered the customer a person." in staff.locator(".trace").first.inner_text()
    assert Conversation.objects.get(pk=conversation).owner.username == "alex"
    shoot_at_each_width(staff, "live-console-tool-refused-trace", staff.locator(".trace").first)

    assert errors == []
    chat_context.close()
    console_context.close()
