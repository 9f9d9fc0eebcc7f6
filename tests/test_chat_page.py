"""The customer chat page in a real browser (headless Chromium) against a real Daphne process.

Covers what a customer sees: sign in, ask on the demo knowledge base, the answer streaming in with a citation
whose source opens, Stop, and a dropped connection that heals and finishes the SAME answer word for word.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Message

# Playwright's sync API runs an event loop in this thread; the ORM calls made by the test itself are safe.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "pw-for-the-browser-1"
QUESTION = "How do I return an item?"
# Streaming is 20 words/s in these tests (daphne_server), so a several-sentence answer takes seconds.
ANSWER_TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (never `playwright install`).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def site(daphne_server, demo_kb):
    """A running server with the demo knowledge base and one customer account."""
    get_user_model().objects.create_user("customer", password=PASSWORD)
    return daphne_server()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.console_errors = []
    page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
    page.on("response", lambda r: r.status >= 400 and page.console_errors.append(f"HTTP {r.status} {r.url}"))
    page.on("pageerror", lambda exc: page.console_errors.append(str(exc)))
    yield page
    context.close()


def sign_in_and_open_new_conversation(page, base_url: str) -> None:
    page.goto(f"{base_url}/")
    assert "/accounts/login/" in page.url  # not signed in yet: sent to the sign-in page
    page.fill("#id_username", "customer")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")
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
