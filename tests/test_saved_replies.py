"""Saved replies (issue 21, point 4): managed in the admin, inserted with "/" in the console's reply box.

A reply's placeholders are a small fixed set, and an unknown one is refused when it is saved, in the admin where staff
can fix it. The conversation page carries the enabled replies and what each placeholder is for that conversation;
the browser fills them in (static/console/saved_replies.js), an unknown value left out rather than shown as
"{customer_name}". End to end: a staff member types "/ret", picks a reply with the keyboard, sees it filled with the
customer's name, sends it, and the customer receives it.
"""

from __future__ import annotations

import json
import os
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse

from conversations.models import Conversation, Message, SavedReply, Site, SiteCustomer
from tests.browser import new_page, sign_in
from tests.test_chat_page import PASSWORD, screenshot
from tests.test_console_page import STAFF_PASSWORD

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

RETURNS = (
    "Hi {customer_name}, you can return any item within 30 days: open Orders and choose Return. "
    "{agent_name} from {site} support"
)


def reply(**fields) -> SavedReply:
    defaults = {"shortcut": "returns", "title": "How to return an item", "text": RETURNS}
    return SavedReply(**{**defaults, **fields})


def errors_of(candidate: SavedReply) -> dict[str, list[str]]:
    try:
        candidate.full_clean(validate_unique=False)
    except ValidationError as error:
        return error.message_dict
    return {}


# --- The model ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        RETURNS,
        "Thanks for waiting!",  # no placeholder at all
        "Use the format {1,2} or { } or {} in the form.",  # braces around no word are plain text
        "{customer_name}{agent_name}{site}",
    ],
)
def test_a_reply_with_known_placeholders_only_is_valid(text):
    assert errors_of(reply(text=text)) == {}


@pytest.mark.parametrize(
    "text, named",
    [
        ("Hi {custmer_name}!", "{custmer_name}"),  # a typo
        ("Hi {Customer_Name}!", "{Customer_Name}"),  # names are exact
        ("Your order {order_id} is late, {customer_name}.", "{order_id}"),
        ("{email} and {phone}", "{email}, {phone}"),
    ],
)
def test_an_unknown_placeholder_is_refused_and_named(text, named):
    errors = errors_of(reply(text=text))
    assert list(errors) == ["text"]
    assert f"Unknown placeholder {named}:" in errors["text"][0]
    assert "{customer_name}, {agent_name}, {site}" in errors["text"][0]  # what may be used instead


@override_settings(CHAT_MAX_QUESTION_CHARS=50)
def test_a_reply_longer_than_a_message_may_be_is_refused():
    assert "At most 50 characters" in errors_of(reply(text="x" * 51))["text"][0]
    assert errors_of(reply(text="x" * 50)) == {}


@pytest.mark.parametrize("shortcut", ["Returns", "two words", "-returns", "ret/urns", ""])
def test_a_shortcut_is_what_can_be_typed_after_the_slash(shortcut):
    assert "shortcut" in errors_of(reply(shortcut=shortcut))


# --- The admin ---------------------------------------------------------------------------------------------------


def form(**overrides) -> dict:
    return {
        "shortcut": "returns",
        "title": "How to return an item",
        "text": RETURNS,
        "language": "en",
        "enabled": "on",
    } | overrides


@pytest.mark.django_db
def test_the_admin_adds_a_reply_and_refuses_an_unknown_placeholder(admin_client):
    add = reverse("admin:conversations_savedreply_add")
    page = admin_client.get(add).content.decode()
    assert "{customer_name}" in page and "{agent_name}" in page and "{site}" in page  # the help lists them

    response = admin_client.post(add, form(text="Hello {name}"))
    assert response.status_code == 200 and not SavedReply.objects.exists()
    assert "Unknown placeholder {name}" in " ".join(response.context["adminform"].form.errors["text"])

    assert admin_client.post(add, form()).status_code == 302
    saved = SavedReply.objects.get()
    assert (saved.shortcut, saved.text, saved.language, saved.enabled) == ("returns", RETURNS, "en", True)
    # A second reply with the same shortcut could never be typed: refused.
    again = admin_client.post(add, form(title="Another"))
    assert again.status_code == 200 and "shortcut" in again.context["adminform"].form.errors
    assert SavedReply.objects.count() == 1


@pytest.mark.django_db
def test_the_admin_list_searches_and_filters(admin_client):
    reply().save()
    reply(shortcut="refund-time", title="When the refund arrives", text="5 to 10 days.", language="de").save()
    reply(shortcut="old-greeting", title="Old greeting", text="Hello!", enabled=False).save()
    changelist = reverse("admin:conversations_savedreply_changelist")

    def shown(query: str) -> list[str]:
        page = admin_client.get(f"{changelist}?{query}").content.decode()
        return sorted(s for s in ("/returns", "/refund-time", "/old-greeting") if f">{s.lstrip('/')}<" in page)

    assert shown("") == ["/old-greeting", "/refund-time", "/returns"]
    assert shown("q=refund") == ["/refund-time"]  # by title or shortcut
    assert shown("q=Orders") == ["/returns"]  # by text
    assert shown("enabled__exact=0") == ["/old-greeting"]
    assert shown("language__exact=de") == ["/refund-time"]


# --- What the console page carries -------------------------------------------------------------------------------


def page_config(client, conversation: Conversation) -> dict:
    page = client.get(reverse("console:detail", args=[conversation.pk])).content.decode()
    found = re.search(r'<script id="console-config" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


@pytest.fixture
def staff_client(client, django_user_model):
    django_user_model.objects.create_user(
        "sam", password=STAFF_PASSWORD, first_name="Sam", last_name="Berg", is_staff=True
    )
    client.login(username="sam", password=STAFF_PASSWORD)
    return client


@pytest.mark.django_db
def test_the_page_carries_the_enabled_replies_and_this_conversations_values(staff_client, django_user_model):
    reply().save()
    reply(shortcut="refund-time", title="When the refund arrives", text="5 to 10 days.", language="de").save()
    reply(shortcut="old-greeting", title="Old greeting", text="Hello!", enabled=False).save()
    carol = django_user_model.objects.create_user("carol", first_name="Carol", last_name="Jones")
    config = page_config(staff_client, Conversation.objects.create(owner=carol))
    assert config["saved_replies"] == [
        {"shortcut": "refund-time", "title": "When the refund arrives", "text": "5 to 10 days.", "language": "de"},
        {"shortcut": "returns", "title": "How to return an item", "text": RETURNS, "language": ""},
    ]
    # A customer of this site's own chat page: no widget site.
    assert config["placeholders"] == {"customer_name": "Carol Jones", "agent_name": "Sam Berg", "site": ""}
    # Without a full name, the username, as the console shows them everywhere.
    dan = django_user_model.objects.create_user("dan")
    assert page_config(staff_client, Conversation.objects.create(owner=dan))["placeholders"]["customer_name"] == "dan"


@pytest.mark.django_db
def test_a_visitor_or_a_nameless_verified_customer_has_no_name_to_fill(staff_client, django_user_model):
    northwind = Site.objects.create(name="Northwind", slug="northwind", allowed_origins="https://shop.example")
    visitor = Conversation.objects.create(anonymous_session_key="visitor-1", site=northwind)
    assert page_config(staff_client, visitor)["placeholders"] == {
        "customer_name": "",
        "agent_name": "Sam Berg",
        "site": "Northwind",
    }
    # A verified customer the host site sent no name for: their username is one we made up, not a name.
    nameless = django_user_model.objects.create_user("site-1-0a1b2c")
    SiteCustomer.objects.create(site=northwind, external_id="42", user=nameless)
    conversation = Conversation.objects.create(owner=nameless, site=northwind)
    assert page_config(staff_client, conversation)["placeholders"]["customer_name"] == ""
    nameless.first_name = "Eve"
    nameless.save()
    assert page_config(staff_client, conversation)["placeholders"]["customer_name"] == "Eve"


# --- In the browser ----------------------------------------------------------------------------------------------

# The page's own module, given texts and values; returns what it fills in.
FILL = """
async (cases) => {
  const { fillPlaceholders } = await import("/static/console/saved_replies.js");
  return cases.map(([text, values]) => fillPlaceholders(text, values));
}
"""
FULL = {"customer_name": "Carol Jones", "agent_name": "Sam", "site": "Northwind"}
EMPTY = {"customer_name": "", "agent_name": "Sam", "site": ""}
FILLING = [
    (
        RETURNS,
        FULL,
        "Hi Carol Jones, you can return any item within 30 days: open Orders and choose Return. "
        "Sam from Northwind support",
    ),  # fmt: skip
    # No value: empty text, never the placeholder; a space before it goes when punctuation or a space follows.
    ("Hi {customer_name}, thanks!", EMPTY, "Hi, thanks!"),
    ("Thanks {customer_name}!", EMPTY, "Thanks!"),
    ("Hello {customer_name} and welcome", EMPTY, "Hello and welcome"),
    ("Hi {customer_name}", EMPTY, "Hi"),
    ("Our {site}team", EMPTY, "Our team"),  # a word follows directly: the space stays
    # Values are text: markup and "{…}" inside a value are not interpreted again.
    ("Hi {customer_name}.", {"customer_name": "<b>{agent_name}</b>", "agent_name": "Sam"}, "Hi <b>{agent_name}</b>."),
    # A name the server sent no value for at all stays as written (the admin refuses such replies).
    ("Order {order_id}", FULL, "Order {order_id}"),
    ("Braces {1,2} and { } stay", FULL, "Braces {1,2} and { } stay"),
]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_placeholders_are_filled_by_the_pages_module(browser, daphne_server):
    site = daphne_server()
    errors: list[str] = []
    context, page = new_page(browser, errors)
    page.goto(f"{site.url}/accounts/login/")
    filled = page.evaluate(FILL, [[text, values] for text, values, _ in FILLING])
    assert filled == [expected for _, _, expected in FILLING]
    assert errors == []
    context.close()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_agent_inserts_a_saved_reply_with_the_keyboard_and_the_customer_receives_it(browser, daphne_server):
    users = get_user_model().objects
    carol = users.create_user("customer", password=PASSWORD, first_name="Carol", last_name="Jones")
    users.create_user("sam", password=STAFF_PASSWORD, first_name="Sam", is_staff=True)
    reply().save()
    reply(
        shortcut="return-label", title="Printing a return label", text="The label is in the e-mail we sent you."
    ).save()
    reply(shortcut="exchange", title="Exchange or return", text="We can exchange it, {customer_name}.").save()
    reply(shortcut="refund-old", title="Old refund text", text="Retired.", enabled=False).save()
    conversation = Conversation.objects.create(
        owner=carol, title="Returning a lamp", status=Conversation.Status.WAITING_FOR_AGENT
    )
    Message.objects.create(conversation=conversation, role=Message.Role.USER, text="How do I send the lamp back?")
    site = daphne_server()
    errors: list[str] = []
    customer_context, customer = new_page(browser, errors)
    sign_in(customer, f"{site.url}/c/{conversation.pk}/", "customer", PASSWORD)
    customer.wait_for_function("document.querySelector('[data-chat]').dataset.connection === 'open'")
    staff_context, staff = new_page(browser, errors, width=1280)
    sign_in(staff, f"{site.url}/console/c/{conversation.pk}/", "sam", STAFF_PASSWORD)
    staff.wait_for_function("document.querySelector('[data-connection-state]').dataset.state === 'open'")
    staff.click("[data-action=take_over]")
    staff.wait_for_function("document.querySelector('[data-holder]').textContent.includes('You are answering')")
    customer.wait_for_selector(".msg-system[data-kind=agent_joined]")

    box = staff.locator("#agent-text")
    listbox = staff.locator("#saved-replies-list")
    options = listbox.locator("[role=option]")
    assert box.get_attribute("role") == "combobox" and box.get_attribute("aria-expanded") == "false"
    assert "Type / for a saved reply" in box.get_attribute("placeholder")

    # "/" alone lists every enabled reply; Escape closes the list and typing on does not reopen it.
    box.press_sequentially("/")
    listbox.wait_for()
    assert options.evaluate_all("os => os.map(o => o.dataset.shortcut)") == ["exchange", "return-label", "returns"]
    box.press("Escape")
    assert not listbox.is_visible() and box.get_attribute("aria-expanded") == "false"
    box.press_sequentially("re")
    assert not listbox.is_visible()
    box.fill("")

    # "/ret": shortcuts starting with it first, then a title holding it; the first is active.
    box.press_sequentially("/ret")
    listbox.wait_for()
    assert box.get_attribute("aria-expanded") == "true"
    assert options.evaluate_all("os => os.map(o => o.dataset.shortcut)") == ["return-label", "returns", "exchange"]
    assert options.nth(0).get_attribute("aria-selected") == "true"
    # Each option previews its text as it will be sent: filled, the empty site left out.
    assert options.nth(1).locator(".saved-reply-preview").inner_text().startswith("Hi Carol Jones, you can return")
    box.press("ArrowDown")
    assert options.nth(1).get_attribute("aria-selected") == "true"
    assert options.nth(0).get_attribute("aria-selected") == "false"
    assert box.get_attribute("aria-activedescendant") == options.nth(1).get_attribute("id")
    for width, name in ((1280, "saved-replies-list-desktop"), (390, "saved-replies-list-390")):
        staff.set_viewport_size({"width": width, "height": 900})
        listbox.scroll_into_view_if_needed()
        assert staff.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), name
        screenshot(staff, name)
    staff.set_viewport_size({"width": 1280, "height": 900})

    # Enter inserts the chosen reply in place of "/ret", filled; it is not sent yet.
    box.press("Enter")
    expected = "Hi Carol Jones, you can return any item within 30 days: open Orders and choose Return. Sam from support"
    assert box.input_value() == expected
    assert not listbox.is_visible() and box.get_attribute("aria-expanded") == "false"
    assert not Message.objects.filter(role=Message.Role.AGENT).exists()
    screenshot(staff, "saved-replies-inserted-desktop")

    # The next Enter sends it; the customer receives it as from the person.
    box.press("Enter")
    customer.wait_for_selector(".msg-agent")
    assert customer.locator(".msg-agent .bubble").last.inner_text() == expected
    assert Message.objects.get(role=Message.Role.AGENT).text == expected
    screenshot(customer, "saved-replies-received-customer")

    # A click works too, after other words, and Tab inserts as Enter does.
    box.press_sequentially("One more thing: /exch")
    listbox.wait_for()
    options.nth(0).click()
    assert box.input_value() == "One more thing: We can exchange it, Carol Jones."
    assert box.evaluate("e => document.activeElement === e")
    box.fill("")
    box.press_sequentially("/return-")
    box.press("Tab")
    assert box.input_value() == "The label is in the e-mail we sent you."
    assert errors == []
    customer_context.close()
    staff_context.close()
