"""Dark mode following the system setting, and every message's time (issue 21, point 5), in a real browser.

Debian's Chromium with ``prefers-color-scheme: dark`` (Playwright's ``color_scheme``) against a real Daphne node: the
chat page, the staff console (list and conversation), a knowledge-base document and the widget on the demo host
take their dark colours from static/chat/chat.css's variables — different from light, and every text checked
against the background it is drawn on keeps at least 4.5:1. Every message, saved (server-rendered) or live
(render.js), carries a ``<time datetime>`` of when it was written, in the reader's language in its title, shown on
hovering the message or with the keyboard's focus on the log; the console's rows show their last message's time.
Screenshots at 1280 and 390 px are looked at.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from conversations.models import Conversation, Message
from tests import test_console_page
from tests.browser import new_page, sign_in
from tests.test_chat_page import QUESTION, ask, screenshot, sign_in_and_open_new_conversation, wait_for_final
from tests.test_console_page import STAFF_PASSWORD
from tests.test_tool_card import fits
from tests.widget_support import DemoHost, make_site, open_widget, widget_frame

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

site = test_console_page.site  # its fixture: a node with the demo knowledge base, customer Carol and staff Sam

MIN_CONTRAST = 4.5  # WCAG AA for normal text
REPLY = "Hi Carol, I'm Sam. Which item would you like to return?"

# For each selector, the text's colour, the background it is drawn on (the nearest ancestor with an opaque one)
# and their contrast ratio (WCAG's relative luminance); null when nothing matches.
CONTRAST = """
(selectors) => {
  const rgb = (value) => {
    const m = /rgba?\\(([^)]+)\\)/.exec(value);
    if (!m) return null;
    const [r, g, b, a = 1] = m[1].split(/[\\s,/]+/).filter(Boolean).map(Number);
    return { r, g, b, a };
  };
  const luminance = ({ r, g, b }) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const ground = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const out = {};
  for (const selector of selectors) {
    const el = document.querySelector(selector);
    if (!el) { out[selector] = null; continue; }
    const fg = rgb(getComputedStyle(el).color), bg = ground(el);
    const [a, b] = [luminance(fg), luminance(bg)];
    out[selector] = { ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), color: getComputedStyle(el).color,
                      background: `rgb(${bg.r}, ${bg.g}, ${bg.b})`, luminance: luminance(bg) };
  }
  return out;
}
"""
# Every message of the log: its id (saved ones), role, and its <time>'s datetime, title and text.
TIMES = """
() => [...document.querySelectorAll('[data-log] .msg')].map((m) => {
  const t = m.querySelector('time.msg-time');
  return { id: m.dataset.message || null, role: m.dataset.role, datetime: t?.getAttribute('datetime') || null,
           title: t?.title || '', text: t?.textContent || '' };
})
"""
CHAT_TEXTS = [
    ".brand",
    ".chat-head h1",
    ".msg-user .bubble",
    ".msg-assistant .answer",
    ".msg-head .who",
    ".msg-time",
    ".chip .t",
    ".chip .n",
    ".msg-system .bubble",
    ".msg-agent .bubble",
    ".msg-agent .who",
    ".btn-primary",
    ".banner.agent",
    ".answer pre",
]
CONSOLE_ROW_TEXTS = [".row-title", ".row-customer", ".row-time", ".console-section h2", "[data-badge]", ".unread"]
CONSOLE_TEXTS = [".msg-user .bubble", ".msg-assistant .answer", ".msg-agent .bubble", ".msg-time", ".trace",
                 ".badge", ".console-side h2", "#agent-text"]  # fmt: skip


def readable(page, selectors: list[str]) -> dict:
    """The contrast of each text that is on the page, each at least MIN_CONTRAST; the measures."""
    measured = page.evaluate(CONTRAST, selectors)
    for selector, m in measured.items():
        if m is not None:
            assert m["ratio"] >= MIN_CONTRAST, (page.url, selector, m)
    return measured


#: Longer than the longest colour transition of the pages (a console row's background, 0.6 s).
SETTLE_MS = 800


def dark_unlike_light(page, selectors: list[str], tab=None) -> None:
    """The page (or frame, in the browser tab ``tab``) is dark, its texts readable, its colours not light mode's."""
    dark = readable(page, [*selectors, "body"])
    assert dark["body"]["luminance"] < 0.02, dark["body"]  # the page's own ground
    present = [s for s, m in dark.items() if m is not None]
    assert len(present) > len(selectors) // 2, dark
    (tab or page).emulate_media(color_scheme="light")
    page.wait_for_timeout(SETTLE_MS)  # a console row's background eases over 0.6 s (console.css): not mid-way
    light = readable(page, [*selectors, "body"])
    (tab or page).emulate_media(color_scheme="dark")
    page.wait_for_timeout(SETTLE_MS)
    assert light["body"]["luminance"] > 0.8, light["body"]
    for s in present:
        assert (dark[s]["color"], dark[s]["background"]) != (light[s]["color"], light[s]["background"]), s


def with_code_block(page) -> None:
    """A code block in the last answer (the demo articles have none): its colours are measured too."""
    page.evaluate(
        "() => { const pre = document.createElement('pre'); pre.textContent = 'return --order 10432';"
        " [...document.querySelectorAll('.msg-assistant .answer')].pop().append(pre); }"
    )


def near_now(iso: str | None) -> bool:
    return iso is not None and abs(datetime.fromisoformat(iso) - datetime.now(UTC)) < timedelta(minutes=2)


def same_instant(iso: str | None, when: datetime) -> bool:
    return iso is not None and abs(datetime.fromisoformat(iso) - when) < timedelta(seconds=1)


def saved_times_match(page) -> list[dict]:
    """Every message in the log has its time, the instant it was saved, the full date in its title."""
    times = page.evaluate(TIMES)
    assert times
    saved = {str(m.pk): m.created_at for m in Message.objects.all()}
    for t in times:
        assert t["id"] in saved and same_instant(t["datetime"], saved[t["id"]]), t
        assert str(saved[t["id"]].year) in t["title"] and t["text"].strip(), t
    return times


def time_shows_on_hover(page, message) -> None:
    time = message.locator("time.msg-time")
    page.mouse.move(0, 0)
    page.wait_for_function("(t) => getComputedStyle(t).opacity === '0'", arg=time.element_handle())
    message.hover()
    page.wait_for_function("(t) => getComputedStyle(t).opacity === '1'", arg=time.element_handle())
    page.mouse.move(0, 0)


def times_show_with_the_keyboard(page) -> None:
    """Tab (backwards from the composer) to the log itself: every time shows."""
    page.mouse.move(0, 0)
    page.focus("textarea")
    for _ in range(40):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("document.activeElement.matches('[data-log]')"):
            break
    else:
        pytest.fail("the log is not reachable with the keyboard")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-log] time.msg-time')].every((t) => getComputedStyle(t).opacity === '1')"
    )


def at_both_widths(page, name: str) -> None:
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 900})
        fits(page, f"{name}-{width}")
        screenshot(page, f"{name}-{width}")
    page.set_viewport_size({"width": 1280, "height": 900})


def test_the_chat_page_console_and_documents_in_dark_mode_with_every_messages_time(browser, site):
    errors: list[str] = []
    staff_context, staff = new_page(browser, errors, width=1280, color_scheme="dark")
    sign_in(staff, f"{site.url}/console/", "sam", STAFF_PASSWORD)
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    chat_context, chat = new_page(browser, errors, width=1280, color_scheme="dark")
    sign_in_and_open_new_conversation(chat, site.url)

    # Live: the question has its time at once, the answer when it starts.
    ask(chat, QUESTION)
    chat.locator(".msg-assistant time.msg-time").wait_for(state="attached")
    live = chat.evaluate(TIMES)
    assert [t["role"] for t in live] == ["user", "assistant"] and all(near_now(t["datetime"]) for t in live), live
    assert all(t["title"] and t["text"] for t in live), live
    wait_for_final(chat, "complete")
    conversation = str(Conversation.objects.get().pk)
    row = f'.console-row[data-conversation="{conversation}"]'

    # The console's row: its last message's time; no unread count for a question the assistant answered.
    staff.wait_for_function(
        "(row) => document.querySelector(`${row} [data-last-role]`)?.textContent === 'assistant:'", arg=row
    )
    answer = Message.objects.get(role="assistant")
    assert same_instant(staff.locator(f"{row} [data-last-at]").get_attribute("datetime"), answer.created_at)
    assert staff.locator(f"{row} [data-unread]").is_hidden()

    # Asking for a person: the notice's time live; the console counts the question no person has seen.
    chat.click("[data-handoff]")
    staff.wait_for_selector(f'[data-section-list="waiting"] {row}')
    assert staff.locator(f"{row} [data-unread]").inner_text() == "1"
    dark_unlike_light(staff, CONSOLE_ROW_TEXTS)
    at_both_widths(staff, "dark-console-list")

    # The staff member takes over and replies: the customer sees the reply with the time it was saved.
    staff.click(f"{row} a.row-title")
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    staff.click("[data-action=take_over]")
    chat.wait_for_selector(".msg-system[data-kind=agent_joined] time.msg-time")
    staff.fill("#agent-text", REPLY)
    staff.press("#agent-text", "Enter")
    chat.wait_for_selector(".msg-agent time.msg-time")
    reply = Message.objects.get(role="agent")
    assert same_instant(chat.locator(".msg-agent time.msg-time").get_attribute("datetime"), reply.created_at)
    assert same_instant(staff.locator(".msg-agent time.msg-time").get_attribute("datetime"), reply.created_at)
    ask(chat, "The blue lamp, order 1234.")
    staff.wait_for_function(
        "() => [...document.querySelectorAll('.msg-user')].pop()?.querySelector('.bubble').textContent"
        " === 'The blue lamp, order 1234.'"
    )
    assert near_now(staff.locator(".msg-user time.msg-time").last.get_attribute("datetime"))
    assert all(t["datetime"] for t in chat.evaluate(TIMES))

    # Saved: after a reload every message's time is the instant it was saved, on both sides.
    chat.reload()
    chat.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    roles = [t["role"] for t in saved_times_match(chat)]
    assert {"user", "assistant", "system", "agent"} <= set(roles), roles
    staff.reload()
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    saved_times_match(staff)

    # Shown on hovering a message, or for every message with the keyboard's focus on the log.
    time_shows_on_hover(chat, chat.locator(".msg-user").first)
    time_shows_on_hover(staff, staff.locator(".msg-agent").first)
    times_show_with_the_keyboard(chat)
    chat.locator("[data-log]").evaluate("(log) => log.blur()")

    # Dark, readable: the chat page (a code block too) and the console's conversation.
    with_code_block(chat)
    dark_unlike_light(chat, CHAT_TEXTS)
    chat.locator(".msg-agent").first.hover()
    at_both_widths(chat, "dark-chat")
    dark_unlike_light(staff, CONSOLE_TEXTS)
    at_both_widths(staff, "dark-console-conversation")

    # A source's document page.
    href = chat.locator(".msg-assistant .open-doc").first.get_attribute("href")
    chat.goto(f"{site.url}{href}" if href.startswith("/") else href)
    dark_unlike_light(chat, [".kb-doc h1", ".kb-doc .chunk .text", ".kb-doc .meta", ".brand"])
    at_both_widths(chat, "dark-document")
    assert errors == []
    chat_context.close()
    staff_context.close()


def test_the_widget_in_dark_mode_with_its_messages_times(browser, daphne_server, demo_kb):
    node = daphne_server(CHAT_RATE_LIMIT="0")
    with DemoHost(node.url) as host:
        make_site(demo_kb, host.origin)
        errors: list[str] = []
        context, page = new_page(browser, errors, width=1280, color_scheme="dark")
        frame = open_widget(page, f"{host.origin}/")

        # Live messages in the frame have their times.
        frame.fill("#question", QUESTION)
        frame.press("#question", "Enter")
        wait_for_final(frame, "complete")
        live = frame.evaluate(TIMES)
        assert [t["role"] for t in live] == ["user", "assistant"] and all(near_now(t["datetime"]) for t in live)

        # The frame is dark, from the same variables, its texts readable; the site's own colour (the demo host's
        # data-color) stays in its head and the visitor's bubbles, in both schemes.
        dark_unlike_light(
            frame, [".msg-assistant .answer", ".msg-time", ".chip .t", ".chip .n", ".msg-head .who"], page
        )
        readable(frame, [".widget-head h1", ".msg-user .bubble", ".btn-primary"])
        frame.locator(".msg-assistant").hover()
        screenshot(page, "dark-widget-1280")

        # Back on the host page: the saved messages' times, from the server.
        page.reload()
        frame = widget_frame(page)
        frame.locator("[data-chat][data-connection=open]").wait_for()
        assert [t["role"] for t in saved_times_match(frame)] == ["user", "assistant"]
        page.set_viewport_size({"width": 390, "height": 844})
        frame.locator(".msg-user").hover()
        screenshot(page, "dark-widget-390")
        assert errors == []
        context.close()
