"""The console for a day's work in real browsers (issue 21, point 4): three browser contexts — a customer and two
staff members — on two Daphne nodes sharing PostgreSQL and Redis, one scenario so the nodes start once.

Bob (node 2) keeps the list open with the title and sound alerts on; the customer (node 1) asks for a person: Bob's
tab title counts it and a beep sounds, until he clicks in the page. Sam (node 1) sees the customer panel and
assigns the conversation to Bob: Bob's list shows it live. Bob filters "mine" and searches (the URL keeps both, a
reload too); Sam taking the assignment back removes the row from Bob's filtered list live, and giving it back
brings it in again. A saved reply inserted with "/" sends one typing frame. Screenshots at 1280 and 390 px, light
and dark, of the filtered list and of the conversation with its customer panel.
"""

from __future__ import annotations

import os
import uuid

import pytest
from django.contrib.auth import get_user_model

from conversations.models import Conversation, Message, Site, SiteCustomer
from tests.browser import new_page, sign_in
from tests.test_chat_page import PASSWORD, screenshot
from tests.test_console_page import STAFF_PASSWORD

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REDIS = "redis://127.0.0.1:6379/0"
OPEN = "document.querySelector('[data-connection-state]').dataset.state === 'open'"

# The console's own modules, on a detached reply box: a saved reply inserted with "/" tells the customer once that
# the agent types (typing.js hears the picker's input event), and a second insert within 2 s sends nothing more.
TYPING_ON_INSERT = """
async () => {
  const { TypingSender } = await import("/static/chat/typing.js");
  const { attachSavedReplies } = await import("/static/console/saved_replies.js");
  const form = document.createElement("form");
  const area = document.createElement("textarea");
  form.append(area);
  const sent = [];
  new TypingSender(area, { send: (frame) => { sent.push(frame); return true; }, conversation: () => "c1" });
  const picker = attachSavedReplies(area, [{ shortcut: "hi", title: "Hello", text: "Hello {customer_name}!" }],
                                    { customer_name: "Carol" });
  area.value = "/";  // as typed, but without its own input event: only the insert can send the frame
  area.setSelectionRange(1, 1);
  picker.update();
  picker.insert(picker.shown[0]);
  const afterFirst = sent.length;
  area.value += " /";
  area.setSelectionRange(area.value.length, area.value.length);
  picker.update();
  picker.insert(picker.shown[0]);
  return { afterFirst, sent, value: area.value };
}
"""


@pytest.fixture
def people_and_conversations():
    users = get_user_model().objects
    carol = users.create_user("customer", password=PASSWORD, first_name="Carol", last_name="Jones",
                              email="carol@example.org")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    bob = users.create_user("bob", password=STAFF_PASSWORD, first_name="Bob", is_staff=True)
    northwind = Site.objects.create(name="Northwind", slug="northwind", allowed_origins="https://shop.example")
    eve = users.create_user("site-1-e5", first_name="Eve Stone", email="eve@shop.example")
    SiteCustomer.objects.create(site=northwind, external_id="cust-77", user=eve)

    def conversation(text: str, **fields) -> Conversation:
        row = Conversation.objects.create(**fields)
        Message.objects.create(conversation=row, role=Message.Role.USER, text=text)
        return row

    O, S = Conversation.Outcome, Conversation.Status  # noqa: E741, N806
    conversation("The lamp arrived broken", owner=carol, title="Broken lamp", status=S.RESOLVED,
                 outcome=O.AGENT_RESOLVED)
    conversation("When does it ship?", owner=eve, site=northwind, page_url="https://shop.example/delivery/",
                 title="Delivery times", outcome=O.BOT_RESOLVED)
    conversation("Open on Sunday?", anonymous_session_key="visitor-0f1e", site=northwind, title="Opening hours",
                 status=S.WAITING_FOR_AGENT, page_url="https://shop.example/contact/")
    conversation("Please change my invoice address", owner=bob, title="Bob's own test", assigned_agent=bob)
    parcel = conversation("Where is my parcel? Order 1042", owner=carol, title="Where is my parcel?")
    return parcel


def wait_title(page, prefix: str) -> None:
    page.wait_for_function("p => document.title.startsWith(p)", arg=prefix)


def test_alerts_assignment_filters_search_and_the_customer_panel(browser, daphne_server, people_and_conversations,
                                                                monkeypatch):
    monkeypatch.setenv("SCREENSHOT_DIR", "/tmp/shots/console")
    parcel = str(people_and_conversations.pk)
    prefix = f"workday-{uuid.uuid4().hex[:8]}"
    node1 = daphne_server(REDIS_URL=REDIS, CHANNEL_PREFIX=prefix)
    node2 = daphne_server(REDIS_URL=REDIS, CHANNEL_PREFIX=prefix)
    errors: list[str] = []
    bob_context, bob = new_page(browser, errors, width=1280)
    sam_context, sam = new_page(browser, errors, width=1280)
    customer_context, customer = new_page(browser, errors)
    row = f'.console-row[data-conversation="{parcel}"]'

    # Bob's list, on node 2, alerts on (ticking the box is the gesture that lets the page play sound).
    sign_in(bob, f"{node2.url}/console/", "bob", STAFF_PASSWORD)
    bob.wait_for_function(OPEN)
    base_title = bob.title()
    assert not base_title.startswith("(")
    bob.check("[data-alert-toggle=title]")
    bob.check("[data-alert-toggle=sound]")
    assert bob.evaluate("Object.keys(localStorage).filter(k => k.startsWith('console.alerts.'))") != []
    bob.wait_for_selector(f'[data-section-list="recent"] {row}')

    # Sam has the conversation open on node 1: the customer panel says who Carol is and what she asked before.
    sign_in(sam, f"{node1.url}/console/c/{parcel}/", "sam", STAFF_PASSWORD)
    sam.wait_for_function(OPEN)
    panel = sam.locator("[data-customer-panel]")
    assert panel.locator("[data-customer-name]").inner_text() == "Carol Jones"
    assert panel.locator("[data-customer-email]").inner_text() == "carol@example.org"
    assert panel.locator("[data-customer-verified]").get_attribute("data-customer-verified") == "false"
    assert panel.locator("[data-past] li").count() == 1
    assert panel.locator("[data-past] a").inner_text() == "Broken lamp"
    assert panel.locator("[data-past] [data-outcome]").inner_text() == "Resolved by a person"

    # The customer asks for a person: Bob's title counts it and the page beeps, with no click of his.
    sign_in(customer, f"{node1.url}/c/{parcel}/", "customer", PASSWORD)
    customer.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    customer.click("[data-handoff]")
    bob.wait_for_selector(f'[data-section-list="waiting"] {row}')
    wait_title(bob, "(1) ")
    assert bob.title() == f"(1) {base_title}"
    assert int(bob.evaluate("document.documentElement.dataset.alertBeeps || '0'")) == 1

    # Sam assigns it to Bob: Bob's list shows it live (another node), the assistant still has it, the title waits.
    sam.select_option("[data-assign-select]", label="Bob")
    bob.wait_for_function(
        "sel => { const a = document.querySelector(sel); return a && !a.hidden && a.textContent.includes('Bob'); }",
        arg=f"{row} [data-assignee]",
    )
    assert Conversation.objects.get(pk=parcel).status == Conversation.Status.WAITING_FOR_AGENT
    sam.wait_for_function("document.querySelector('[data-assign-select]').value !== ''")
    assert bob.title() == f"(1) {base_title}"
    bob.click("h1")  # Bob looks: seen
    wait_title(bob, base_title)

    # Filters and search: in the URL, kept by a reload, narrowing the list.
    bob.select_option("#filter-assigned", "mine")
    bob.wait_for_url("**/console/?assigned=mine")
    bob.wait_for_function(OPEN)
    titles = bob.locator(".console-row .row-title").all_inner_texts()
    assert sorted(titles) == ["Bob's own test", "Where is my parcel?"]
    bob.fill("#console-q", "parcel 1042")
    bob.press("#console-q", "Enter")
    bob.wait_for_url("**/console/?q=parcel+1042&assigned=mine")
    bob.reload()
    bob.wait_for_function(OPEN)
    assert bob.locator(".console-row .row-title").all_inner_texts() == ["Where is my parcel?"]
    assert bob.input_value("#console-q") == "parcel 1042" and bob.input_value("#filter-assigned") == "mine"
    assert bob.locator("[data-filter-summary]").inner_text() == "1 matching conversation"
    assert bob.is_checked("[data-alert-toggle=title]")  # his alert choice, kept

    # Live updates respect the filters: assigned back to Sam, the row leaves Bob's "mine" list; to Bob, it returns.
    sam.select_option("[data-assign-select]", label="Me (Sam)")
    bob.wait_for_selector(row, state="detached")
    sam.select_option("[data-assign-select]", label="Bob")
    bob.wait_for_selector(f'[data-section-list="waiting"] {row}')
    assert bob.locator(".console-row").count() == 1

    # A saved reply inserted with "/" fires one (throttled) typing frame.
    typed = sam.evaluate(TYPING_ON_INSERT)
    assert typed["afterFirst"] == 1 and len(typed["sent"]) == 1
    assert typed["sent"][0] == {"type": "typing", "conversation": "c1", "typing": True}
    assert typed["value"] == "Hello Carol! Hello Carol!"

    # Screenshots: the filtered list and the conversation with its panel, 1280 and 390 px, light and dark.
    bob.goto(f"{node2.url}/console/?status=waiting&site={Site.objects.get().pk}")
    bob.wait_for_function(OPEN)
    assert bob.locator(".console-row .row-title").all_inner_texts() == ["Opening hours"]
    bob.goto(f"{node2.url}/console/?q=carol")
    bob.wait_for_function(OPEN)
    bob.wait_for_timeout(2000)  # the snapshot's rows pulse (1.2 s, then a 0.6 s transition): shoot them at rest
    for scheme in ("light", "dark"):
        for page, name in ((bob, "list-search"), (sam, "conversation-panel")):
            page.emulate_media(color_scheme=scheme)
            page.wait_for_timeout(700)  # the rows' 0.6 s background transition to the new scheme's colours
            for width in (1280, 390):
                page.set_viewport_size({"width": width, "height": 900})
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, (name, scheme, width, overflow)
                if name == "conversation-panel" and width == 390:
                    page.locator("[data-customer-panel]").scroll_into_view_if_needed()
                screenshot(page, f"{name}-{width}-{scheme}")
                page.evaluate("window.scrollTo(0, 0)")
    # A verified customer of a widget site: the panel says so, with the site, the page and their id there.
    eve = Conversation.objects.get(title="Delivery times")
    sam.emulate_media(color_scheme="light")
    sam.goto(f"{node1.url}/console/c/{eve.pk}/")
    sam.wait_for_function(OPEN)
    panel = sam.locator("[data-customer-panel]")
    assert panel.locator("[data-customer-verified]").inner_text() == "Verified by the site"
    assert panel.locator("[data-customer-site]").inner_text() == "Northwind"
    assert panel.locator("[data-customer-page]").inner_text() == "https://shop.example/delivery/"
    assert "id cust-77 on Northwind" in panel.inner_text()
    assert panel.locator("[data-past-empty]").is_visible()
    panel.scroll_into_view_if_needed()
    screenshot(sam, "conversation-panel-verified-390-light")
    assert errors == []
    for context in (bob_context, sam_context, customer_context):
        context.close()
