"""The console's customer panel (issue 21, point 4; conversations/customer_panel.py), on real PostgreSQL: who the
customer is and how sure we are of it (verified by the host site's signed identity, signed in here, or an anonymous
visitor), where they chat from, and their other conversations with their outcomes, linked; rendered in the
conversation's page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from conversations.customer_panel import PAST_LIMIT, panel
from conversations.models import Conversation, ConversationRating, Site, SiteCustomer

pytestmark = pytest.mark.django_db
O = Conversation.Outcome  # noqa: E741


@pytest.fixture
def northwind() -> Site:
    return Site.objects.create(name="Northwind", slug="northwind", allowed_origins="https://shop.example")


def test_a_verified_customer_of_a_site(northwind):
    eve = get_user_model().objects.create_user("site-1-ab12", first_name="Eve Stone", email="eve@shop.example")
    SiteCustomer.objects.create(site=northwind, external_id="cust-77", user=eve)
    earlier = Conversation.objects.create(owner=eve, site=northwind, title="Late parcel", outcome=O.BOT_RESOLVED)
    now = Conversation.objects.create(owner=eve, site=northwind, page_url="https://shop.example/cart/")
    shown = panel(now)
    assert {k: shown[k] for k in ("kind", "verified", "name", "email", "email_verified", "external_id", "verified_by",
                                  "site", "page_url")} == {
        "kind": "verified", "verified": True, "name": "Eve Stone", "email": "eve@shop.example", "email_verified": True,
        "external_id": "cust-77", "verified_by": "Northwind", "site": "Northwind",
        "page_url": "https://shop.example/cart/",
    }
    assert [(p["title"], p["outcome"], p["outcome_label"]) for p in shown["past"]] == [
        ("Late parcel", "bot_resolved", "Resolved by the assistant")
    ]
    assert shown["past"][0]["url"] == reverse("console:detail", args=[earlier.pk])
    # A verified customer the site sent no name for: their made-up username is not a name.
    eve.first_name = ""
    eve.save()
    assert panel(now)["name"] == ""


def test_a_signed_in_customer_and_their_past_conversations_newest_first_at_most_ten():
    carol = get_user_model().objects.create_user("carol", first_name="Carol", last_name="Jones", email="c@example.org")
    other = get_user_model().objects.create_user("dan")
    Conversation.objects.create(owner=other, title="Not Carol's")
    for n in range(PAST_LIMIT + 2):
        Conversation.objects.create(owner=carol, title=f"Question {n}", outcome=O.AGENT_RESOLVED if n % 2 else "")
    current = Conversation.objects.create(owner=carol, title="Now")
    shown = panel(current)
    assert (shown["kind"], shown["verified"], shown["name"], shown["email"]) == ("signed_in", False, "Carol Jones",
                                                                                 "c@example.org")
    titles = [p["title"] for p in shown["past"]]
    assert titles == [f"Question {n}" for n in range(PAST_LIMIT + 1, 1, -1)]  # newest first, not this one
    assert [p["outcome_label"] for p in shown["past"][:2]] == ["Resolved by a person", "Open"]



def test_the_panel_shows_this_conversations_outcome_and_csat_and_the_past_ones_scores():
    carol = get_user_model().objects.create_user("carol")
    rated = Conversation.objects.create(owner=carol, title="Rated", outcome=O.BOT_RESOLVED)
    ConversationRating.objects.create(conversation=rated, score=2, comment="Too slow")
    Conversation.objects.create(owner=carol, title="Unrated", outcome=O.ABANDONED)
    current = Conversation.objects.create(owner=carol, title="Now", outcome=O.AGENT_RESOLVED)
    ConversationRating.objects.create(conversation=current, score=5, comment="Great", by_person=True)
    shown = panel(current)
    assert (shown["outcome_label"], shown["rating"]) == ("Resolved by a person", {"score": 5, "comment": "Great"})
    assert {p["title"]: p["score"] for p in shown["past"]} == {"Rated": 2, "Unrated": None}
    assert panel(Conversation.objects.create(owner=carol))["rating"] is None


def test_an_anonymous_visitor_with_a_left_address(northwind):
    before = Conversation.objects.create(anonymous_session_key="visitor-9a8b", site=northwind, outcome=O.ABANDONED)
    Conversation.objects.create(anonymous_session_key="visitor-other", site=northwind)
    now = Conversation.objects.create(anonymous_session_key="visitor-9a8b", site=northwind,
                                      contact_email="left@mail.example", page_url="https://shop.example/")
    shown = panel(now)
    assert (shown["kind"], shown["verified"], shown["name"]) == ("visitor", False, "")
    assert (shown["email"], shown["email_verified"]) == ("left@mail.example", False)
    assert [p["conversation"] for p in shown["past"]] == [str(before.pk)]
    assert shown["past"][0]["outcome_label"] == "Abandoned"


def test_the_conversation_page_shows_the_panel(client, northwind):
    sam = get_user_model().objects.create_user("sam", first_name="Sam", is_staff=True)
    eve = get_user_model().objects.create_user("site-1-cd34", first_name="Eve", email="eve@shop.example")
    SiteCustomer.objects.create(site=northwind, external_id="cust-8", user=eve)
    past = Conversation.objects.create(owner=eve, site=northwind, title="Late parcel", outcome=O.HANDED_OFF)
    now = Conversation.objects.create(owner=eve, site=northwind, page_url="https://shop.example/cart/")
    client.force_login(sam)
    page = client.get(reverse("console:detail", args=[now.pk])).content.decode()
    assert 'data-customer-verified="true">Verified by the site<' in page
    assert "eve@shop.example" in page and "id cust-8 on Northwind" in page
    assert 'href="https://shop.example/cart/"' in page
    assert f'href="{reverse("console:detail", args=[past.pk])}">Late parcel</a>' in page
    assert 'data-outcome="handed_off">Handed to a person<' in page
    # The assign menu: nobody yet, every active staff member offered, the viewer as "Me".
    assert '<option value="">Nobody</option>' in page and f'<option value="{sam.pk}">Me (Sam)</option>' in page
