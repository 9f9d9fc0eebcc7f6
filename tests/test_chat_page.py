"""The customer chat page in a real browser (headless Chromium) against a real Daphne process.

Covers what a customer sees: sign in, ask on the demo knowledge base, the answer streaming in with a citation
whose source opens, Stop, and a dropped connection that heals and finishes the SAME answer word for word.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import tempfile
import time
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Message
from tests.browser import new_page, sign_in

# Playwright's sync API runs an event loop in this thread; the ORM calls made by the test itself are safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-for-the-browser-1"
QUESTION = "How do I return an item?"
# Streaming is 20 words/s in these tests (daphne_server), so a several-sentence answer takes seconds.
ANSWER_TIMEOUT_MS = 90_000


@pytest.fixture
def site(daphne_server, demo_kb):
    """A running server with the demo knowledge base and one customer account."""
    get_user_model().objects.create_user("customer", password=PASSWORD)
    return daphne_server()


@contextlib.contextmanager
def open_page(browser):
    """A fresh browser context and page whose console errors, failed responses and page errors are kept in
    ``page.console_errors``."""
    errors: list[str] = []
    context, page = new_page(browser, errors)
    page.console_errors = errors
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def page(browser, site):
    with open_page(browser) as page:
        yield page


def screenshot(page, name: str) -> Path:
    """A PNG of the page to look at (SCREENSHOT_DIR, default the temp directory's chat-screens/)."""
    directory = Path(os.environ.get("SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "chat-screens")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def sign_in_and_open_new_conversation(page, base_url: str) -> None:
    sign_in(page, f"{base_url}/", "customer", PASSWORD)
    page.click("[data-new-conversation]")
    page.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    page.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")


def ask(page, text: str) -> None:
    page.fill("#question", text)
    page.press("#question", "Enter")


def last_answer(page):
    return page.locator(".msg-assistant").last


def wait_for_streamed_words(page, words: int) -> None:
    page.wait_for_function(
        """(n) => { const m = [...document.querySelectorAll('.msg-assistant')].pop();
                    return m && (m.dataset.streamed || '').trim().split(/\\s+/).length >= n; }""",
        arg=words,
        timeout=ANSWER_TIMEOUT_MS,
    )


def wait_for_final(page, state: str | None = None) -> str:
    page.wait_for_function(
        "() => { const m = [...document.querySelectorAll('.msg-assistant')].pop();"
        " return m && m.dataset.state && m.dataset.state !== 'streaming'; }",
        timeout=ANSWER_TIMEOUT_MS,
    )
    final_state = last_answer(page).get_attribute("data-state")
    if state is not None:
        assert final_state == state
    return final_state


def letter_words(text: str) -> list[str]:
    """The words of a text without Markdown syntax, list numbers or citation numbers."""
    return re.findall(r"[A-Za-z]{2,}", text)


# A recorder running in the page: every distinct text of the answer and status line until the final arrives.
RECORD_UNTIL_FINAL = """
() => new Promise((resolve) => {
  const answers = [], statuses = [];
  const tick = () => {
    const m = [...document.querySelectorAll('.msg-assistant')].pop();
    if (m) {
      const a = m.querySelector('.answer').textContent;
      const s = m.querySelector('.status').textContent;
      if (m.dataset.state === 'streaming' && a && answers[answers.length - 1] !== a) answers.push(a);
      if (s && statuses[statuses.length - 1] !== s) statuses.push(s);
      if (m.dataset.state && m.dataset.state !== 'streaming') { resolve({answers, statuses, state: m.dataset.state}); return; }
    }
    setTimeout(tick, 20);
  };
  tick();
})
"""


def test_ask_streams_a_cited_answer_whose_source_opens(page, site):
    sign_in_and_open_new_conversation(page, site.url)
    ask(page, QUESTION)
    # The question shows at once (pending until acked), the answer streams in.
    assert page.locator(".msg-user .bubble").last.inner_text() == QUESTION
    record = page.evaluate(RECORD_UNTIL_FINAL)

    assert record["state"] == "complete"
    partials = record["answers"]
    assert len(partials) >= 2, f"expected to watch the answer grow, saw {partials!r}"
    assert all(later.startswith(earlier) for earlier, later in zip(partials, partials[1:], strict=False))
    assert "Searching the knowledge base…" in record["statuses"]
    assert any(re.match(r"Found \d+ passages? in \d+ documents? · Writing the answer…", s) for s in record["statuses"])

    answer = last_answer(page)
    message = Message.objects.get(pk=answer.get_attribute("data-message"))
    assert message.state == "complete"
    assert answer.get_attribute("data-streamed") == message.text
    # The final HTML (rendered from the Markdown) replaced the streamed text, same words; [n] link to the chips.
    assert letter_words(answer.locator(".answer").inner_text()) == letter_words(message.text)
    cite = answer.locator(".answer sup.cite a").first
    assert re.fullmatch(rf"#src-{message.pk}-\d+", cite.get_attribute("href"))
    cite.click()  # a citation opens its source chip's passage (tap-friendly, no hover needed)
    assert page.locator(cite.get_attribute("href") + " .snippet").is_visible()
    page.mouse.click(5, 5)
    assert answer.locator(".answer").get_attribute("aria-live") == "polite"
    assert not answer.locator(".status").inner_text()
    assert page.locator("[data-stop]").is_hidden()

    chips = answer.locator(".source")
    assert chips.count() >= 1
    cited = answer.locator(".source:has(.chip.used)").first
    cited.locator(".chip").hover()
    snippet = cited.locator(".snippet")
    assert snippet.is_visible()
    link = cited.locator("a.open-doc")
    href = link.get_attribute("href")
    assert re.match(r"^/kb/documents/\d+/", href), href
    assert page.request.get(site.url + href).status == 200

    with page.context.expect_page() as opened:
        link.click()
    document_page = opened.value
    document_page.wait_for_load_state()
    assert document_page.url.startswith(site.url + href.split("#")[0])
    words = " ".join(snippet.inner_text().replace("…", " ").split()[:6])
    assert words and words in " ".join(document_page.inner_text("body").split())
    assert page.console_errors == []


def test_stop_keeps_the_partial_answer(page, site):
    sign_in_and_open_new_conversation(page, site.url)
    ask(page, QUESTION)
    wait_for_streamed_words(page, 3)
    stop = page.locator("[data-stop]")
    assert stop.is_visible()
    stop.click()
    wait_for_final(page, "cancelled")

    answer = last_answer(page)
    assert "Stopped" in answer.locator(".state-note").inner_text()
    partial = answer.get_attribute("data-streamed")
    assert partial and len(partial.split()) >= 3
    message = Message.objects.get(pk=answer.get_attribute("data-message"))
    assert message.state == "cancelled"
    assert message.text == partial
    assert answer.locator(".answer").inner_text().strip()
    # Reloading shows the same cancelled answer, rendered by the server.
    page.reload()
    reloaded = last_answer(page)
    assert reloaded.get_attribute("data-state") == "cancelled"
    assert "Stopped" in reloaded.locator(".state-note").inner_text()
    assert page.console_errors == []


def test_dropped_connection_reconnects_and_finishes_the_same_answer(page, site):
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    sign_in_and_open_new_conversation(page, site.url)
    ask(page, QUESTION)
    wait_for_streamed_words(page, 3)

    page.evaluate("window.__chat.socket.close()")
    banner = page.locator("[data-banner]")
    banner.wait_for(state="visible", timeout=5_000)
    assert banner.inner_text().startswith("Reconnecting…")
    banner.wait_for(state="hidden", timeout=30_000)
    wait_for_final(page, "complete")

    assert len(sockets) >= 2, "the page should have opened a second WebSocket"
    answer = last_answer(page)
    message = Message.objects.get(pk=answer.get_attribute("data-message"))
    streamed = answer.get_attribute("data-streamed")
    assert message.state == "complete"
    assert streamed == message.text, "tokens were repeated or lost across the reconnect"
    assert answer.get_attribute("data-text") == message.text
    assert page.locator(".msg-assistant").count() == 1
    assert page.locator(".msg-user").count() == 1
    assert page.console_errors == []


def test_questions_asked_while_streaming_are_queued_and_answered_in_order(page, site):
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))))
    sign_in_and_open_new_conversation(page, site.url)
    ask(page, QUESTION)
    wait_for_streamed_words(page, 2)
    ask(page, "How long does a refund take?")
    assert page.locator("#question").is_enabled()
    second_user = page.locator(".msg-user").nth(1)
    second_user.locator(".pending-note").wait_for(state="visible")
    assert second_user.locator(".pending-note").inner_text() in {"Sending…", "Queued — answered next"}
    page.wait_for_function("document.querySelectorAll('.msg-assistant').length === 2", timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function(
        "[...document.querySelectorAll('.msg-assistant')].every((m) => m.dataset.state === 'complete')",
        timeout=ANSWER_TIMEOUT_MS,
    )
    order = page.eval_on_selector_all(".msg", "els => els.map((e) => e.dataset.role)")
    assert order == ["user", "assistant", "user", "assistant"]
    answers = page.locator(".msg-assistant")
    first = Message.objects.get(pk=answers.nth(0).get_attribute("data-message"))
    second = Message.objects.get(pk=answers.nth(1).get_attribute("data-message"))
    # Answered in order: the second answer's first frame comes after the first answer's final.
    first_final = next(i for i, f in enumerate(frames) if f["type"] == "final" and f["message"] == str(first.pk))
    second_start = next(i for i, f in enumerate(frames) if f.get("message") == str(second.pk) and "seq" in f)
    assert first_final < second_start
    assert second.reply_to.text == "How long does a refund take?"
    assert answers.nth(1).get_attribute("data-streamed") == second.text
    assert page.console_errors == []


# --- Issue 7: nothing found, done right; the page around the answer --------------------------------------------

OFF_TOPIC = "Can you recommend a good pizza recipe with pineapple?"
NOTHING_FOUND = "I couldn't find anything about that in the knowledge base. Would you like to talk to a person?"


def frames_sent(page) -> list[dict]:
    """Every frame the page sends on any of its sockets (from now on)."""
    sent: list[dict] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(json.loads(payload))))
    return sent


def popover_visible(page, source) -> bool:
    return page.locator(source).locator(".source-pop").is_visible()


def test_source_popover_closes_on_escape_and_on_a_click_outside(page, site):
    sign_in_and_open_new_conversation(page, site.url)
    ask(page, QUESTION)
    wait_for_final(page, "complete")
    answer = last_answer(page)
    source = f"#{answer.locator('.source').first.get_attribute('id')}"
    chip = page.locator(f"{source} .chip")

    chip.click()
    assert popover_visible(page, source) and chip.get_attribute("aria-expanded") == "true"
    page.keyboard.press("Escape")  # the pointer is still on the chip and it has focus: closed all the same
    assert not popover_visible(page, source) and chip.get_attribute("aria-expanded") == "false"

    chip.click()
    assert popover_visible(page, source)
    page.locator("[data-title]").click()  # a click outside the popover
    assert not popover_visible(page, source) and chip.get_attribute("aria-expanded") == "false"

    cite = answer.locator(".answer sup.cite a").first
    cite.click()  # a citation opens its passage; Escape closes it
    target = cite.get_attribute("href")
    assert popover_visible(page, target)
    page.keyboard.press("Escape")
    assert not popover_visible(page, target)

    chip.hover()  # hovering still shows the passage
    assert popover_visible(page, source)
    assert page.console_errors == []


def gap_below(page) -> float:
    """Pixels of the page below the viewport (0: scrolled to the end)."""
    return page.evaluate("document.documentElement.scrollHeight - (window.scrollY + window.innerHeight)")


def test_the_view_follows_a_streaming_answer_unless_the_reader_scrolled_up(page, site):
    page.set_viewport_size({"width": 390, "height": 640})
    sign_in_and_open_new_conversation(page, site.url)
    ask(page, QUESTION)
    # While it streams, the newest text stays in view (sampled in the page until the final arrives).
    gaps = page.evaluate("""() => new Promise((resolve) => {
      const gaps = [];
      const tick = () => {
        const m = [...document.querySelectorAll('.msg-assistant')].pop();
        const d = document.documentElement;
        if (m && m.dataset.streamed) gaps.push(d.scrollHeight - (window.scrollY + window.innerHeight));
        if (m && m.dataset.state && m.dataset.state !== 'streaming') { resolve(gaps); return; }
        setTimeout(tick, 25);
      };
      tick();
    })""")
    assert len(gaps) > 5 and max(gaps) < 120, gaps
    assert page.evaluate("window.scrollY") > 0, "a long answer on a phone should have scrolled the page"
    # Finished: the chips and the buttons under the answer are fully visible, above the input.
    page.wait_for_timeout(300)
    composer_top = page.locator("[data-composer]").bounding_box()["y"]
    header_bottom = page.locator(".site-header").bounding_box()
    header_bottom = header_bottom["y"] + header_bottom["height"]
    answer = last_answer(page)
    for part in (answer.locator(".sources"), answer.locator(".msg-actions")):
        box = part.bounding_box()
        assert box["y"] >= header_bottom and box["y"] + box["height"] <= composer_top + 1, (box, composer_top)

    # The reader scrolls up while the next answer streams: the page stays where they put it.
    ask(page, "How long does a refund take?")
    page.wait_for_function("document.querySelectorAll('.msg-assistant').length === 2")
    wait_for_streamed_words(page, 2)
    page.mouse.wheel(0, -5000)
    page.wait_for_function("window.scrollY === 0")
    wait_for_final(page, "complete")
    page.wait_for_timeout(300)
    assert page.evaluate("window.scrollY") == 0
    assert gap_below(page) > 200
    # Back at the end, it follows again.
    page.mouse.wheel(0, 20000)
    page.wait_for_function("document.documentElement.scrollHeight - (window.scrollY + window.innerHeight) < 2")
    assert page.console_errors == []


def test_the_input_has_focus_and_grows_with_its_text(page, site):
    sign_in_and_open_new_conversation(page, site.url)
    assert page.evaluate("document.activeElement.id") == "question"
    box = page.locator("#question")
    one_line = box.bounding_box()["height"]
    assert 40 <= one_line <= 48
    page.keyboard.type("First line")  # typed straight away: it has focus
    for _ in range(2):
        page.keyboard.press("Shift+Enter")
    page.keyboard.type("Third line")
    three_lines = box.bounding_box()["height"]
    assert three_lines > one_line + 30
    assert page.evaluate("(() => { const t = document.getElementById('question'); return t.scrollHeight <= t.clientHeight; })()")
    box.fill("\n".join(f"line {i}" for i in range(20)))
    assert box.bounding_box()["height"] == pytest.approx(160, abs=1)  # its max-height, then it scrolls
    assert page.evaluate("(() => { const t = document.getElementById('question'); return t.scrollHeight > t.clientHeight && getComputedStyle(t).overflowY === 'auto'; })()")
    box.fill("How long does a refund take?")
    assert box.bounding_box()["height"] == pytest.approx(one_line, abs=1)
    page.keyboard.press("Enter")
    assert box.input_value() == "" and box.bounding_box()["height"] == pytest.approx(one_line, abs=1)
    assert page.evaluate("document.activeElement.id") == "question"
    assert page.console_errors == []


def _streaming_answer(conversation, question: str) -> Message:
    """An answer another node is generating (a live lease): this page shows it streaming and waits for it."""
    from datetime import timedelta

    from django.utils import timezone

    asked = Message.objects.create(conversation=conversation, role="user", text=question, client_id="q-1")
    return Message.objects.create(
        conversation=conversation, role="assistant", reply_to=asked, state="streaming",
        lease_owner="specific.node-in-the-test!", lease_expires_at=timezone.now() + timedelta(hours=1),
    )


def _finish_as_nothing_found(message: Message) -> None:
    """What the streaming layer saves for a nothing-found answer (trace.offer_handoff, no sources)."""
    Message.objects.filter(pk=message.pk).update(
        state="complete", text=NOTHING_FOUND, html=f"<p>{NOTHING_FOUND}</p>", citations=[], sources=[],
        frames=[{"type": "status", "stage": "retrieving", "text": "Searching the knowledge base…"},
                {"type": "status", "stage": "retrieved", "text": "No matching passages found"},
                {"type": "sources", "items": []},
                {"type": "status", "stage": "generating", "text": "Writing the answer…"},
                len(NOTHING_FOUND)],
        seq_last=6, lease_owner="", lease_expires_at=None,
        trace={"query": "x", "passages": [], "timings": {}, "offer_handoff": True},
    )


def test_a_nothing_found_answer_offers_a_person_and_its_button_sends_handoff(page, site):
    """The final (replayed from the database after a reconnect) carries offer_handoff: the answer gets its own
    "Talk to a person", which sends `handoff`; while a person is asked for, no such button shows, also after a
    reload (rendered by the server)."""
    from conversations.models import Conversation

    sent = frames_sent(page)
    sign_in_and_open_new_conversation(page, site.url)
    conversation = Conversation.objects.get()
    message = _streaming_answer(conversation, OFF_TOPIC)
    page.reload()
    page.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    answer = last_answer(page)
    assert answer.get_attribute("data-state") == "streaming"
    _finish_as_nothing_found(message)
    page.evaluate("window.__chat.socket.close()")  # the reconnect resumes it: the final comes from the database
    wait_for_final(page, "complete")

    offer = answer.locator(".bubble [data-action=handoff]")
    assert offer.is_visible() and offer.inner_text() == "Talk to a person"
    assert answer.locator(".source").count() == 0
    assert NOTHING_FOUND in answer.locator(".answer").inner_text()
    offer.click()
    page.wait_for_function("document.querySelector('[data-chat]').dataset.status === 'waiting_for_agent'")
    handoffs = [f for f in sent if f["type"] == "handoff"]
    assert handoffs == [{"type": "handoff", "conversation": str(conversation.pk)}]
    assert offer.is_hidden() and page.locator("[data-handoff]").is_hidden()
    # Nobody has the console open: instead of "we have asked", the page says so and asks for an address
    # (tests/test_leave_a_message.py).
    page.wait_for_selector("[data-leave-message]:not([hidden])")
    assert page.locator("[data-agent-banner]").is_hidden()
    conversation.refresh_from_db()
    assert conversation.status == "waiting_for_agent"

    page.reload()  # the server renders the same answer, its offer hidden while a person is asked for
    reloaded = last_answer(page)
    assert reloaded.locator("[data-action=handoff]").count() == 1
    assert reloaded.locator("[data-action=handoff]").is_hidden()
    assert page.console_errors == []


def test_an_off_topic_question_gets_no_chips_and_a_talk_to_a_person_button(page, site):
    sent = frames_sent(page)
    sign_in_and_open_new_conversation(page, site.url)
    ask(page, OFF_TOPIC)
    wait_for_final(page, "complete")
    answer = last_answer(page)
    assert answer.locator(".source").count() == 0
    offer = answer.locator(".bubble [data-action=handoff]")
    assert offer.is_visible()
    offer.click()
    page.wait_for_function("document.querySelector('[data-chat]').dataset.status === 'waiting_for_agent'")
    assert any(f["type"] == "handoff" for f in sent)
    assert offer.is_hidden()
    assert page.console_errors == []


def test_a_network_lost_without_a_close_shows_reconnecting_within_3_s_and_finishes(browser, daphne_server, demo_kb):
    """The server stops answering (SIGSTOP: no close, no frames), as on a dead Wi-Fi: the page's watchdog
    notices within 3 s, says so, and once the server is back the same answer finishes word for word."""
    get_user_model().objects.create_user("customer", password=PASSWORD)
    site = daphne_server(ANSWER_WORDS_PER_SECOND="4")  # the answer is still streaming when the server freezes
    with open_page(browser) as page:
        sign_in_and_open_new_conversation(page, site.url)
        ask(page, QUESTION)
        wait_for_streamed_words(page, 2)
        site.process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            banner = page.locator("[data-banner]")
            banner.wait_for(state="visible", timeout=5_000)
            noticed_after = time.monotonic() - frozen_at
            assert banner.inner_text().startswith("Reconnecting…")
            assert noticed_after < 3.5, f"the lost connection was shown after {noticed_after:.1f} s"
            screenshot(page, "chat-reconnecting")
        finally:
            site.process.send_signal(signal.SIGCONT)
        page.locator("[data-banner]").wait_for(state="hidden", timeout=30_000)
        wait_for_final(page, "complete")
        answer = last_answer(page)
        message = Message.objects.get(pk=answer.get_attribute("data-message"))
        assert answer.get_attribute("data-streamed") == message.text
        assert page.locator(".msg-assistant").count() == 1
        assert page.console_errors == []


def test_questions_refused_as_busy_are_shown_once_and_sent_again_by_themselves(browser, daphne_server, demo_kb):
    """A conversation with a queue limit of 1: two questions asked while one streams are refused (busy, with
    retry_after). The page says so once, for both, counts down, and sends them again itself until answered."""
    get_user_model().objects.create_user("customer", password=PASSWORD)
    node = daphne_server(CHAT_QUEUE_LIMIT="1", CHAT_BUSY_RETRY_AFTER_SECONDS="2")
    with open_page(browser) as page:
        sign_in_and_open_new_conversation(page, node.url)
        ask(page, QUESTION)
        wait_for_streamed_words(page, 2)
        ask(page, "How long does a refund take?")
        ask(page, "Can I exchange an item?")
        held = page.locator("[data-held]")
        held.wait_for(state="visible", timeout=10_000)
        page.wait_for_function("document.querySelector('[data-held]').textContent.includes('2 questions')")
        text = held.inner_text()
        assert "still answering your earlier questions" in text and "same id" not in text
        assert page.locator(".pending-note", has_text="Waiting to send…").count() == 2
        screenshot(page, "chat-held-questions")
        page.set_viewport_size({"width": 390, "height": 844})
        screenshot(page, "chat-held-questions-390")
        page.set_viewport_size({"width": 1100, "height": 900})
        page.wait_for_function(
            "document.querySelectorAll('.msg-assistant').length === 3 && [...document.querySelectorAll("
            "'.msg-assistant')].every((m) => m.dataset.state === 'complete')",
            timeout=ANSWER_TIMEOUT_MS,
        )
        assert held.is_hidden()
        questions = list(Message.objects.filter(role=Message.Role.USER).order_by("created_at").values_list("text", flat=True))
        assert questions == [QUESTION, "How long does a refund take?", "Can I exchange an item?"]  # each saved once
        assert page.console_errors == []
