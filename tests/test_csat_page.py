"""CSAT in a real browser (issue 21, point 1; static/chat/csat.js): the customer ends the chat in the chat page and
rates it with the mouse; a visitor ends it in the widget on a company's site and rates it with the keyboard; staff
resolving a conversation asks the customer too. A reload shows the rating again. One real Daphne node, the demo host
on another site, Debian's Chromium; screenshots at 1280 and 390 px are looked at.
"""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, ConversationRating
from tests.browser import new_page, sign_in
from tests.test_chat_page import PASSWORD, ask, screenshot, sign_in_and_open_new_conversation, wait_for_final
from tests.test_console_page import STAFF_PASSWORD
from tests.widget_support import DemoHost, make_site, open_widget, widget_frame

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PANEL = "[data-csat]"
THANKS = "[data-csat-thanks-text]"


@pytest.fixture
def node(daphne_server, demo_kb):
    users = get_user_model().objects
    users.create_user("customer", password=PASSWORD, first_name="Carol")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    return daphne_server(CHAT_RATE_LIMIT="0", ANSWER_WORDS_PER_SECOND="0")


def test_the_customer_ends_the_chat_rates_it_and_sees_the_rating_after_a_reload(browser, node):
    errors: list[str] = []
    context, page = new_page(browser, errors, width=1280, height=860)
    sign_in_and_open_new_conversation(page, node.url)
    assert page.locator("[data-end]").is_hidden()  # nothing to end before the first question
    ask(page, "How do I return an item?")
    wait_for_final(page, "complete")
    assert page.locator(PANEL).is_hidden()
    # At 390 px the title keeps its width and the header's buttons wrap under it (not the title letter by letter).
    page.set_viewport_size({"width": 390, "height": 760})
    head = page.locator(".chat-head")
    assert page.locator(".chat-head h1").bounding_box()["width"] >= 150
    assert page.locator("[data-end]").is_visible() and page.locator("[data-handoff]").is_visible()
    head.screenshot(path=str(screenshot(page, "chat-head-390")))  # the header itself, wherever the page scrolled
    page.set_viewport_size({"width": 1280, "height": 860})

    page.click("[data-end]")
    page.wait_for_selector(f"{PANEL}:not([hidden])")
    assert page.locator("[data-end]").is_hidden()
    assert page.locator(f"{PANEL} [role=radio]").count() == 5
    assert page.locator(f"{PANEL} button[type=submit]").is_disabled()  # a score first
    conversation = Conversation.objects.get()
    assert (conversation.status, conversation.outcome) == ("resolved", "bot_resolved")
    screenshot(page, "csat-chat-1280")
    page.set_viewport_size({"width": 390, "height": 760})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    screenshot(page, "csat-chat-390")
    page.set_viewport_size({"width": 1280, "height": 860})

    page.click(f"{PANEL} [data-score='4']")
    assert page.locator(f"{PANEL} [data-score='4']").get_attribute("aria-checked") == "true"
    page.fill("[data-csat-comment]", "Clear answer, thanks")
    page.click(f"{PANEL} button[type=submit]")
    page.wait_for_selector(f"{THANKS}:text('rated this conversation 4 out of 5')")
    rating = ConversationRating.objects.get()
    assert (rating.score, rating.comment, rating.by_person) == (4, "Clear answer, thanks", False)
    screenshot(page, "csat-thanks-1280")

    page.reload()  # the rating is the conversation's: shown again, not asked again
    page.wait_for_selector(f"{THANKS}:text('4 out of 5')")
    assert page.locator("[data-csat-form]").is_hidden() and page.locator("[data-end]").is_hidden()

    # Asking again opens the conversation: no panel, "End chat" is back; the outcome says the customer came back.
    ask(page, "How long does a refund take?")
    page.wait_for_selector(f"{PANEL}[hidden]", state="attached")
    page.wait_for_selector("[data-end]:not([hidden])")
    wait_for_final(page, "complete")
    conversation.refresh_from_db()
    assert conversation.ended_at is None and conversation.outcome == ""  # it helped (4/5): not "reopened"
    context.close()
    assert errors == []


def test_a_visitor_rates_in_the_widget_with_the_keyboard_and_staff_resolving_asks_a_customer_too(
    browser, node, demo_kb
):
    errors: list[str] = []
    with DemoHost(node.url) as host:
        make_site(demo_kb, host.origin)
        context, page = new_page(browser, errors, width=1280, height=860)
        frame = open_widget(page, f"{host.origin}/")
        ask(frame, "How do I return an item?")
        frame.wait_for_function(
            "() => [...document.querySelectorAll('.msg-assistant')].pop()?.dataset.state === 'complete'",
            timeout=90_000,
        )
        frame.click("[data-end]")
        frame.wait_for_selector(f"{PANEL}:not([hidden])")
        screenshot(page, "csat-widget-1280")
        frame.focus(f"{PANEL} [data-score='1']")
        for _ in range(2):
            frame.press(f"{PANEL} [role=radiogroup]", "ArrowRight")
        assert frame.locator(f"{PANEL} [aria-checked=true]").get_attribute("data-score") == "3"
        frame.press("[data-csat-comment]", "Tab")
        frame.locator(f"{PANEL} button[type=submit]").press("Enter")
        frame.wait_for_selector(f"{THANKS}:text('3 out of 5')")
        rating = ConversationRating.objects.get()
        assert rating.score == 3 and rating.conversation.site is not None

        page.reload()  # the host page again: the frame shows the rating from the server
        page.wait_for_selector("iframe")
        frame = widget_frame(page)
        frame.locator("[data-chat][data-connection=open]").wait_for()
        frame.wait_for_selector(f"{THANKS}:text('3 out of 5')")
        page.set_viewport_size({"width": 390, "height": 760})
        screenshot(page, "csat-widget-390")
        context.close()

    # Staff resolve a signed-in customer's conversation they answered: the customer is asked, the rating is theirs.
    customer_context, customer = new_page(browser, errors, width=390, height=760)
    sign_in_and_open_new_conversation(customer, node.url)
    ask(customer, "I need a person please")
    wait_for_final(customer)
    customer.click("[data-handoff]")
    conversation = Conversation.objects.filter(owner__username="customer").get()
    staff_context, staff = new_page(browser, errors, width=1280, height=860)
    sign_in(staff, f"{node.url}/console/c/{conversation.pk}/", "sam", STAFF_PASSWORD)
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    staff.click("[data-action=take_over]")
    staff.fill("#agent-text", "Here is how returns work.")
    staff.press("#agent-text", "Enter")
    customer.wait_for_selector(".msg-agent")
    staff.click("[data-action=resolve]")
    customer.wait_for_selector(f"{PANEL}:not([hidden])")
    customer.click(f"{PANEL} [data-score='5']")
    customer.click(f"{PANEL} button[type=submit]")
    customer.wait_for_selector(f"{THANKS}:text('5 out of 5')")
    conversation.refresh_from_db()
    assert conversation.outcome == "agent_resolved"
    assert ConversationRating.objects.get(conversation=conversation).by_person is True
    customer_context.close()
    staff_context.close()
    assert errors == []
