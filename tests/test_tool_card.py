"""A tool's result in the pages, in a real browser against a real Daphne: the compact card in the answer's bubble (the
chat page and the console's transcript), the tool's chip among the sources, and each call in the console's trace.

The answer is stored as a finished one would be (its tool_result frame in ``Message.frames``, a tool source, a trace
with the calls), so what is tested is the replay: the server renders the card after a reload, and the browser's own
stream renderer (static/chat/stream.js) draws the same card and chips from the same frames live.
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from knowledge.answering import render_answer_html
from tests.browser import new_page, sign_in
from tests.test_chat_page import PASSWORD, screenshot
from tests.test_console_page import STAFF_PASSWORD, below_header

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ORDER_TOOL = {
    "n": 1,
    "name": "Order status",
    "outcome": "ok",
    "ok": True,
    "text": "Found it",
    "fields": [{"name": "status", "value": "shipped"}, {"name": "delivery.eta", "value": "2026-12-09"}],
}
REFUND_TOOL = {
    "n": None,
    "name": "Refund status",
    "outcome": "timeout",
    "ok": False,
    "text": "Could not check right now",
    "fields": [],
}
SOURCES = [
    {
        "n": 1,
        "kind": "tool",
        "title": "Order status",
        "heading": "",
        "page": None,
        "snippet": "status: shipped · delivery.eta: 2026-12-09",
        "score": None,
        "url": None,
        "document": None,
    },
    {
        "n": 2,
        "kind": "document",
        "title": "Returns and refunds",
        "heading": "Returns and refunds > Refund times",
        "page": None,
        "snippet": "Refunds reach your account within 5 working days.",
        "score": 0.71,
        "url": "/kb/documents/1/",
        "document": 1,
    },
]
ANSWER = "Your order 10432 has shipped and should arrive on 2026-12-09 [1]. Refunds take 5 working days [2]."
CALLS = [
    {
        "name": "Order status",
        "arguments": {"order_number": "10432"},
        "outcome": "ok",
        "ok": True,
        "status": 200,
        "latency_ms": 12.3,
        "fields": {"status": "shipped", "delivery.eta": "2026-12-09"},
        "request": {
            "method": "GET",
            "url": "http://127.0.0.1:8765/api/orders/10432",
            "headers": {
                "X-Support-Signature": "•••",
                "X-Support-Identity": "user=7",
                "X-Support-Timestamp": "1765000000",
            },
        },
    },
    {
        "name": "Refund status",
        "arguments": {"order_number": "10432"},
        "outcome": "timeout",
        "ok": False,
        "status": None,
        "latency_ms": 2003.9,
        "fields": {},
        "request": {
            "method": "GET",
            "url": "http://127.0.0.1:8765/api/refunds/10432",
            "headers": {"X-Support-Signature": "•••"},
        },
    },
]


@pytest.fixture
def site(daphne_server):
    users = get_user_model().objects
    users.create_user("customer", password=PASSWORD, first_name="Carol")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    return daphne_server()


@pytest.fixture
def answer() -> Message:
    """A finished answer that looked up an order (found) and a refund (timed out), as the pipeline stores it."""
    customer = get_user_model().objects.get(username="customer")
    conversation = Conversation.objects.create(owner=customer, title="Where is my order 10432?")
    question = Message.objects.create(conversation=conversation, role="user", text="Where is my order 10432?")
    frames = [
        {"type": "status", "stage": "tool", "text": "Looking up order 10432…"},
        {"type": "status", "stage": "tool", "text": "Found it"},
        {"type": "tool_result", "tool": ORDER_TOOL},
        {"type": "tool_result", "tool": REFUND_TOOL},
        {"type": "sources", "items": SOURCES},
        len(ANSWER),
    ]
    trace = {
        "query": question.text,
        "passages": [],
        "timings": {"tools_ms": 2016.2},
        "generator": "extractive",
        "tools": CALLS,
    }
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        reply_to=question,
        state="complete",
        text=ANSWER,
        html=render_answer_html(ANSWER, len(SOURCES)),
        citations=[1, 2],
        sources=SOURCES,
        trace=trace,
        frames=frames,
        seq_last=len(frames) + 1,
    )


def fits(page, name: str) -> None:
    """Nothing sticks out sideways (a phone's 390 px included)."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name


# The card and chips as a tree of (tag, sorted attributes, text), whitespace between tags ignored: the server's
# markup and the browser's, compared for what they are rather than how they were serialised.
SHAPE = """
(root) => {
  const shape = (node) => node.nodeType === Node.TEXT_NODE ? node.nodeValue.trim() : [
    node.tagName,
    [...node.attributes].map((a) => `${a.name}=${a.value}`).sort().join(" "),
    [...node.childNodes].map(shape).filter((c) => c !== ""),
  ];
  return shape(root);
}
"""
# Elements and their attribute names only (but those that come and go with the values: `hidden` on a zero unread
# count, a waiting row's data-waiting-since): a row before and after its values changed.
SKELETON = """
(root) => {
  const names = (node) => [...node.attributes].map((a) => a.name).filter((n) => !["hidden", "data-waiting-since"].includes(n));
  const shape = (node) => [node.tagName, names(node).sort(), [...node.children].map(shape)];
  return shape(root);
}
"""
# The stored frames, numbered as a replay numbers them, drawn by the page's own stream renderer into a bubble that
# is not in the page; returns its card and chips as SHAPE does.
DRAW_LIVE = """
async ({message, frames, shape}) => {
  const { AnswerStream, ORDER } = await import("/static/chat/stream.js");
  const stream = AnswerStream.create({ messageId: message, question: "" });
  for (const frame of frames) if (stream.order(frame) === ORDER.NEXT) stream.apply(frame);
  const toShape = new Function(`return ${shape}`)();
  return { tools: toShape(stream.el.querySelector(".tools")), sources: toShape(stream.el.querySelector(".sources")),
           state: stream.el.dataset.state };
}
"""


def test_a_finished_answer_shows_its_tool_card_after_a_reload_and_cites_it(browser, site, answer):
    errors: list[str] = []
    context, page = new_page(browser, errors, width=1280)
    sign_in(page, f"{site.url}/c/{answer.conversation_id}/", "customer", PASSWORD)
    page.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    bubble = page.locator(f'.msg-assistant[data-message="{answer.pk}"] .bubble')

    cards = bubble.locator(".tools .tool-card")
    assert cards.count() == 2
    rendered = {
        "tools": bubble.locator(".tools").evaluate(SHAPE),
        "sources": bubble.locator(".sources").evaluate(SHAPE),
    }
    found, failed = cards.nth(0), cards.nth(1)
    assert found.get_attribute("data-ok") == "true" and found.get_attribute("data-n") == "1"
    assert found.locator(".n").inner_text() == "[1]"
    assert found.locator(".tool-name").inner_text() == "Order status"
    assert found.locator(".tool-text").inner_text() == "Found it"
    assert found.locator("dt").all_inner_texts() == ["status", "delivery.eta"]
    assert found.locator("dd").all_inner_texts() == ["shipped", "2026-12-09"]
    # The failed look-up is marked and says so; it has no number (nothing to cite) and no fields.
    assert failed.get_attribute("data-ok") == "false" and failed.get_attribute("data-outcome") == "timeout"
    assert failed.locator(".tool-text").inner_text() == "Could not check right now"
    assert not failed.locator(".n").count() and not failed.locator("dl").count()
    assert failed.evaluate("e => getComputedStyle(e).borderLeftColor") != found.evaluate(
        "e => getComputedStyle(e).borderLeftColor"
    )

    # The tool is a source like a document, but has no page to open.
    tool_chip = bubble.locator('.source[data-kind="tool"]')
    assert tool_chip.locator(".t").inner_text() == "Order status"
    assert not tool_chip.locator(".open-doc").count()
    assert bubble.locator('.source[data-kind="document"] .open-doc').count() == 1

    # The card sits inside the bubble and nothing sticks out, on a desktop and on a phone.
    for width, name in ((1280, "chat-tool-card-desktop"), (390, "chat-tool-card-390")):
        page.set_viewport_size({"width": width, "height": 800})
        below_header(page.locator(f'.msg-assistant[data-message="{answer.pk}"]'))
        fits(page, name)
        box, card = bubble.bounding_box(), found.bounding_box()
        assert box["x"] <= card["x"] and card["x"] + card["width"] <= box["x"] + box["width"] + 0.5, name
        screenshot(page, name)

    # "[1]" in the answer points at the tool: its chip opens and its card flashes.
    bubble.locator('.cite a[data-n="1"]').click()
    assert tool_chip.get_attribute("class").split().count("open") == 1
    assert "pulse" in found.get_attribute("class")
    assert tool_chip.locator(".source-pop .snippet").inner_text() == SOURCES[0]["snippet"]
    screenshot(page, "chat-tool-cited-390")
    page.keyboard.press("Escape")
    page.mouse.click(5, 5)

    # The browser's stream renderer draws the same card and chips from the same frames.
    stored = Message.objects.get(pk=answer.pk)
    frames, seq = [], 0
    for item in stored.frames:
        seq += 1
        if isinstance(item, int):
            frames.append({"type": "token", "message": str(answer.pk), "seq": seq, "text": ANSWER})
        else:
            frames.append({**item, "message": str(answer.pk), "seq": seq})
    frames.append(
        {
            "type": "final",
            "message": str(answer.pk),
            "seq": seq + 1,
            "state": "complete",
            "text": ANSWER,
            "html": stored.html,
            "citations": stored.citations,
        }
    )
    live = page.evaluate(DRAW_LIVE, {"message": str(answer.pk), "frames": frames, "shape": SHAPE.strip()})
    assert live["state"] == "complete"
    assert live["tools"] == rendered["tools"]
    assert live["sources"] == rendered["sources"]

    assert errors == []
    context.close()


def test_the_console_shows_the_card_and_traces_every_tool_call(browser, site, answer):
    errors: list[str] = []
    context, staff = new_page(browser, errors, width=1280, height=1000)
    sign_in(staff, f"{site.url}/console/c/{answer.conversation_id}/", "sam", STAFF_PASSWORD)
    staff.wait_for_selector(".trace .tool-call")

    # The transcript shows the card as the customer sees it.
    transcript = staff.locator(f'.console-chat .msg-assistant[data-message="{answer.pk}"]')
    assert transcript.locator(".tool-card .tool-name").all_inner_texts() == ["Order status", "Refund status"]
    assert transcript.locator('.tool-card[data-ok="false"] .tool-text').inner_text() == "Could not check right now"

    card = staff.locator(f'.trace[data-message="{answer.pk}"]')
    calls = card.locator(".tool-call")
    assert calls.count() == 2
    ok, failed = calls.nth(0), calls.nth(1)
    assert ok.get_attribute("data-ok") == "true" and ok.locator(".mark").inner_text() == "✓"
    assert ok.locator(".call-name").inner_text() == "Order status"
    assert ok.locator(".outcome").inner_text() == "ok"
    assert ok.locator(".call-status").inner_text() == "HTTP 200"
    assert ok.locator(".call-latency").inner_text() == "12.3 ms"
    assert ok.locator(".call-args dt").all_inner_texts() == ["order_number"]
    assert ok.locator(".call-args dd").all_inner_texts() == ["10432"]
    assert ok.locator(".call-fields dd").all_inner_texts() == ["shipped", "2026-12-09"]
    assert ok.locator(".call-request").inner_text() == "GET http://127.0.0.1:8765/api/orders/10432"
    names, values = ok.locator(".call-headers dt").all_inner_texts(), ok.locator(".call-headers dd").all_inner_texts()
    headers = dict(zip(names, values, strict=True))
    assert headers["X-Support-Signature"] == "•••" and set(headers) == set(CALLS[0]["request"]["headers"])
    # The failed call is marked, says why and that nothing answered.
    assert failed.get_attribute("data-ok") == "false" and failed.locator(".mark").inner_text() == "✕"
    assert failed.locator(".outcome").inner_text() == "timeout"
    assert "failed" in failed.locator(".outcome").get_attribute("class")
    assert failed.locator(".call-status").inner_text() == "no response"
    assert not failed.locator(".call-fields").count()

    panel = staff.locator(".trace-panel")
    for width, name in ((1280, "console-tool-trace-desktop"), (390, "console-tool-trace-390")):
        staff.set_viewport_size({"width": width, "height": 1000})
        below_header(card)
        fits(staff, name)
        side = panel.bounding_box()
        for box in (calls.nth(i).bounding_box() for i in range(2)):
            assert side["x"] <= box["x"] and box["x"] + box["width"] <= side["x"] + side["width"] + 0.5, name
        path = screenshot(staff, name)
        staff.set_viewport_size({"width": width, "height": 1800})  # the whole card, clear of the sticky header
        below_header(card)
        card.screenshot(path=str(path.with_name(f"{name}-card.png")))
    assert errors == []
    context.close()


def test_a_live_console_row_is_the_servers_row(browser, site, answer):
    """The list's rows exist once (templates/console/_row.html): a live row is cloned from the <template> the server
    rendered from that include, so it has the server's elements and attributes, filled with the new values."""
    errors: list[str] = []
    context, staff = new_page(browser, errors)
    sign_in(staff, f"{site.url}/console/", "sam", STAFF_PASSWORD)
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    row = f'.console-row[data-conversation="{answer.conversation_id}"]'
    server = staff.locator(row).evaluate(SKELETON)
    assert staff.locator(f"{row} [data-last]").inner_text() == "assistant: " + ANSWER

    # Resolved from the conversation's page: the list redraws the row live, in its new section.
    detail = context.new_page()
    detail.goto(f"{site.url}/console/c/{answer.conversation_id}/")
    detail.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    detail.click("[data-action=resolve]")
    staff.wait_for_selector(f'[data-section-list="resolved"] {row}')
    live = staff.locator(row)
    assert live.evaluate(SKELETON) == server
    assert live.locator(".row-title").inner_text() == "Where is my order 10432?"
    assert live.locator(".row-title").get_attribute("href") == f"/console/c/{answer.conversation_id}/"
    assert live.locator("[data-customer]").inner_text() == "Carol"
    assert live.locator("[data-badge]").inner_text() == "Resolved"
    assert "resolved" in live.locator("[data-badge]").get_attribute("class")
    assert live.locator("[data-last-role]").inner_text() == "system:"
    assert staff.locator(".console-row").count() == 1
    assert errors == []
    context.close()
