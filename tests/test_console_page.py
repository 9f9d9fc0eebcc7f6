"""The handoff end to end in a real browser: a customer and a staff member, two browser contexts, one real Daphne.

The customer asks and clicks "Talk to a person"; the staff console's list shows the conversation waiting without a
reload; the staff member opens it, takes over and replies; the customer sees the reply as from a person and
answers; the staff page shows that; the staff member hands back and the bot answers the customer's next question.
A follow-up's trace card lists both of its searches and marks the one used.
"""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from tests.browser import new_page, sign_in
from tests.test_chat_page import ANSWER_TIMEOUT_MS, PASSWORD, QUESTION, ask, screenshot, wait_for_final

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

STAFF_PASSWORD = "pw-for-the-staff-1"


@pytest.fixture
def site(daphne_server, demo_kb):
    users = get_user_model().objects
    users.create_user("customer", password=PASSWORD, first_name="Carol")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    return daphne_server()


def test_customer_to_person_handoff_and_back_to_the_bot(browser, site):
    errors: list[str] = []
    customer_context, customer = new_page(browser, errors)
    staff_context, staff = new_page(browser, errors)

    # The staff member has the console open before anything happens.
    sign_in(staff, f"{site.url}/console/", "sam", STAFF_PASSWORD)
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")

    sign_in(customer, f"{site.url}/", "customer", PASSWORD)
    customer.click("[data-new-conversation]")
    customer.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    customer.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    ask(customer, QUESTION)
    wait_for_final(customer, "complete")
    conversation = str(Conversation.objects.get().pk)
    row = f'.console-row[data-conversation="{conversation}"]'

    # A new question shows up live in the list; "Talk to a person" moves it to the waiting queue, no reload.
    staff.wait_for_selector(f'[data-section-list="recent"] {row}')
    customer.click("[data-handoff]")
    staff.wait_for_selector(f'[data-section-list="waiting"] {row}')
    assert "waiting" in staff.locator(f"{row} [data-waited]").inner_text()
    assert staff.locator(f"{row} [data-badge]").inner_text() == "Waiting for a person"

    # Open it, take over: the customer is told a person joined.
    staff.click(f"{row} a.row-title")
    staff.wait_for_url(f"{site.url}/console/c/{conversation}/")
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    staff.wait_for_selector(".trace .generator")  # the answer's trace beside the transcript, sent with `watch`
    assert staff.locator(".trace").count() == 1
    assert "extractive" in staff.locator(".trace .generator").inner_text()
    staff.click("[data-action=take_over]")
    staff.wait_for_function("document.querySelector('[data-holder]').textContent.includes('You are answering')")
    customer.wait_for_selector(".msg-system[data-kind=agent_joined]")
    assert "Sam" in customer.locator(".msg-system[data-kind=agent_joined]").inner_text()

    # The staff member's reply reaches the customer as from a person.
    staff.fill("#agent-text", "Hi Carol, I'm Sam. Which item would you like to return?")
    staff.press("#agent-text", "Enter")
    customer.wait_for_selector(".msg-agent")
    agent = customer.locator(".msg-agent").last
    assert agent.locator(".bubble").inner_text() == "Hi Carol, I'm Sam. Which item would you like to return?"
    assert "Sam" in agent.locator(".who").inner_text()
    assert "Assistant" not in agent.locator(".who").inner_text()

    # The customer answers; the staff page shows it, and the bot stays quiet.
    answers_before = customer.locator(".msg-assistant").count()
    ask(customer, "The blue lamp, order 1234.")
    staff.wait_for_function(
        "() => [...document.querySelectorAll('.msg-user .bubble')].some(b => b.textContent === 'The blue lamp, order 1234.')"
    )
    assert staff.locator(".msg-user .who").last.inner_text() == "Customer"
    assert customer.locator(".msg-assistant").count() == answers_before

    # Hand back: the bot answers the next question again.
    staff.click("[data-action=hand_back]")
    customer.wait_for_selector(".msg-system[data-kind=agent_left]")
    ask(customer, "How long does delivery take?")
    customer.wait_for_function(f"document.querySelectorAll('.msg-assistant').length === {answers_before + 1}")
    wait_for_final(customer, "complete")
    assert customer.locator(".msg-assistant").last.locator(".answer").inner_text().strip()
    # ...and the staff member watched it stream in, with its trace.
    staff.wait_for_function("document.querySelectorAll('.trace').length === 2", timeout=ANSWER_TIMEOUT_MS)

    assert Message.objects.filter(conversation_id=conversation, role="agent").count() == 1
    assert Conversation.objects.get().status == "bot"
    assert errors == []
    customer_context.close()
    staff_context.close()


def below_header(locator) -> None:
    """Scroll the page so the element's top is just under the sticky site header (a picture shows its head)."""
    locator.evaluate(
        "e => window.scrollBy(0, e.getBoundingClientRect().top"
        " - document.querySelector('.site-header').getBoundingClientRect().bottom - 8)"
    )


def test_a_follow_ups_trace_lists_both_searches_and_marks_the_one_used(browser, daphne_server, demo_kb):
    users = get_user_model().objects
    users.create_user("customer", password=PASSWORD)
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    site = daphne_server(ANSWER_WORDS_PER_SECOND="0")  # the answers themselves are not what is tested here
    errors: list[str] = []
    customer_context, customer = new_page(browser, errors)
    sign_in(customer, f"{site.url}/", "customer", PASSWORD)
    customer.click("[data-new-conversation]")
    customer.wait_for_url(re.compile(r"/c/[0-9a-f-]{36}/$"))
    customer.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    ask(customer, "How do I reset my password?")
    wait_for_final(customer, "complete")
    ask(customer, "How long is it valid?")
    customer.wait_for_function("document.querySelectorAll('.msg-assistant').length === 2")
    wait_for_final(customer, "complete")
    follow_up = Message.objects.filter(role="assistant").order_by("created_at").last()
    asked, rewritten = follow_up.trace["searches"]  # the pipeline rewrote the follow-up and kept the rewrite
    assert rewritten["used"] and not asked["used"]

    staff_context, staff = new_page(browser, errors)
    sign_in(staff, f"{site.url}/console/c/{follow_up.conversation_id}/", "sam", STAFF_PASSWORD)
    staff.wait_for_function("document.querySelectorAll('.trace .generator').length === 2")
    card = staff.locator(f'.trace[data-message="{follow_up.pk}"]')
    lines = card.locator(".searches .search")
    assert lines.count() == 2
    first, second = lines.nth(0), lines.nth(1)
    assert first.get_attribute("data-used") == "false" and first.locator(".mark").inner_text() == "–"
    assert first.locator(".query").inner_text() == "“How long is it valid?”"
    assert first.locator(".sim").inner_text() == f"best {asked['best_similarity']:.3f}"
    assert not first.locator(".why").count()
    assert second.get_attribute("data-used") == "true" and second.locator(".mark").inner_text() == "✓"
    assert second.locator(".query").inner_text() == f"“{rewritten['query']}”"
    assert second.locator(".sim").inner_text() == f"best {rewritten['best_similarity']:.3f}"
    assert second.locator(".why").inner_text() == rewritten["why"]
    # The first answer searched once: its card has no list, and no "searched as" line.
    first_card = staff.locator(".trace").first
    assert not first_card.locator(".searches").count() and "searched as" not in first_card.inner_text()

    # Nothing in the card sticks out of the side panel, on a desktop and on a phone.
    for width, name in ((1280, "console-trace-searches-desktop"), (390, "console-trace-searches-390")):
        staff.set_viewport_size({"width": width, "height": 900})
        below_header(card)
        assert staff.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
        panel = staff.locator(".trace-panel").bounding_box()
        for box in (lines.nth(i).bounding_box() for i in range(2)):
            assert box["x"] >= panel["x"] and box["x"] + box["width"] <= panel["x"] + panel["width"] + 0.5, name
        path = screenshot(staff, name)
        staff.set_viewport_size({"width": width, "height": 1600})  # the whole card, clear of the sticky header
        below_header(card)
        card.screenshot(path=str(path.with_name(f"{name}-card.png")))
    assert errors == []
    customer_context.close()
    staff_context.close()
