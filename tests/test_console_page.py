"""The handoff end to end in a real browser: a customer and a staff member, two browser contexts, one real Daphne.

The customer asks and clicks "Talk to a person"; the staff console's list shows the conversation waiting without a
reload; the staff member opens it, takes over and replies; the customer sees the reply as from a person and
answers; the staff page shows that; the staff member hands back and the bot answers the customer's next question.
"""

from __future__ import annotations

import os
import re

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message
from tests.browser import new_page, sign_in
from tests.test_chat_page import ANSWER_TIMEOUT_MS, PASSWORD, QUESTION, ask, wait_for_final

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
