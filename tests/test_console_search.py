"""The console list's search and filters (issue 21, point 4; conversations/console_search.py), on real PostgreSQL.

The same rules decide the page's snapshot (``narrow`` on the rows' query) and a live row (``matches_item`` from
its fields, ``matches_text`` by one lookup): every case below is checked both ways, so a row never appears live
in a list that a reload would not show, or the other way round. The filtered list costs the same fixed number of
queries as the whole one.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations import inbox
from conversations.console_search import ListQuery
from conversations.models import Conversation, Message, Site, SiteCustomer
from knowledge.models import KnowledgeBase

pytestmark = pytest.mark.django_db

DAN_ID = uuid.UUID("dada1234-5678-4abc-8def-0123456789ab")
S = Conversation.Status
O = Conversation.Outcome  # noqa: E741


@pytest.fixture
def world():
    """Five conversations with different customers, statuses, assignees, sites, knowledge bases and outcomes."""
    users = get_user_model().objects
    sam = users.create_user("sam", first_name="Sam", is_staff=True)
    bob = users.create_user("bob", first_name="Bob", is_staff=True)
    carol = users.create_user("carol", first_name="Carol", last_name="Jones", email="carol@example.org")
    dan = users.create_user("dan", email="dan@mail.example")
    northwind = Site.objects.create(name="Northwind", slug="northwind", allowed_origins="https://shop.example")
    eve = users.create_user("site-1-abc", first_name="Eve", email="eve@shop.example")
    SiteCustomer.objects.create(site=northwind, external_id="cust-4242", user=eve)
    billing = KnowledgeBase.objects.create(name="Billing")

    def conversation(key, **fields) -> Conversation:
        text = fields.pop("text")
        row = Conversation.objects.create(**fields)
        Message.objects.create(conversation=row, role=Message.Role.USER, text=text)
        return row

    rows = {
        "carol": conversation("carol", owner=carol, title="Lamp arrived broken", status=S.WAITING_FOR_AGENT,
                              text="The lamp arrived with a cracked shade"),
        "dan": conversation("dan", id=DAN_ID, owner=dan, title="Invoice address", status=S.AGENT, assigned_agent=sam,
                            knowledge_base=billing, outcome=O.HANDED_OFF, text="Please change my invoice address"),
        "eve": conversation("eve", owner=eve, site=northwind, page_url="https://shop.example/delivery/",
                            title="Delivery times", status=S.BOT, outcome=O.BOT_RESOLVED, text="When will it ship?"),
        "visitor": conversation("visitor", anonymous_session_key="visitor-0f1e2d", site=northwind,
                                title="Opening hours", status=S.WAITING_FOR_AGENT, assigned_agent=bob,
                                text="Are you open on Sunday?"),
        "old": conversation("old", owner=carol, title="Old question", status=S.RESOLVED, outcome=O.AGENT_RESOLVED,
                            text="Thanks, the refund came"),
    }
    return {"sam": sam, "bob": bob, "northwind": northwind, "billing": billing, **rows}


def shown(world, **params) -> list[str]:
    """The conversations the list shows for these query-string params, by their fixture names; checked to be
    exactly what the live rules let through too."""
    query = ListQuery.from_params({k: str(v) for k, v in params.items()}, world["sam"].pk)
    names = {str(row.pk): name for name, row in world.items() if isinstance(row, Conversation)}
    listed = sorted(names[item["conversation"]] for item in inbox.list_items(narrow=query.narrow))
    everything = inbox.list_items()
    live = sorted(
        names[item["conversation"]]
        for item in everything
        if query.matches_item(item) and query.matches_text(item["conversation"])
    )
    assert live == listed, params
    return listed


@pytest.mark.parametrize(
    "q, expected",
    [
        ("carol", ["carol", "old"]),  # username
        ("Carol Jones", ["carol", "old"]),  # full name: every word somewhere
        ("JONES", ["carol", "old"]),  # case does not matter
        ("dan@mail", ["dan"]),  # e-mail
        ("cust-4242", ["eve"]),  # the customer's id on the host site (SiteCustomer)
        ("Eve", ["eve"]),  # a verified customer's name
        ("visitor", ["visitor"]),  # every anonymous visitor
        ("visitor-0f1e", ["visitor"]),  # a visitor's key
        ("northwind", ["eve", "visitor"]),  # the site
        ("shop.example/delivery", ["eve"]),  # the page URL
        ("cracked shade", ["carol"]),  # text inside a message
        ("jones shade", ["carol"]),  # words anywhere: the customer's name and a message's text
        ("shade refund", []),  # ...but every word in the same conversation
        ("invoice", ["dan"]),  # title and message
        ("refund came", ["old"]),
        ("nothing like this", []),
    ],
)
def test_search_finds_customers_text_and_titles(world, q, expected):
    assert shown(world, q=q) == expected


def test_search_by_conversation_id_whole_or_prefix(world):
    pk = str(DAN_ID)
    assert shown(world, q=pk) == ["dan"]
    assert shown(world, q=pk.upper()) == ["dan"]
    assert shown(world, q="dada1234-56") == ["dan"]  # a prefix, dashes as in the id or not
    assert shown(world, q="dada123456") == ["dan"]
    assert shown(world, q="dada") == ["dan"]
    assert shown(world, q="dad") == []  # shorter than 4 hex digits: not read as an id (nor any name here)


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"status": "waiting"}, ["carol", "visitor"]),
        ({"status": "resolved"}, ["old"]),
        ({"status": "active"}, ["dan"]),
        ({"assigned": "mine"}, ["dan"]),  # sam's
        ({"assigned": "unassigned"}, ["carol", "eve", "old"]),
        ({"outcome": "open"}, ["carol", "visitor"]),
        ({"outcome": "bot_resolved"}, ["eve"]),
        ({"outcome": "agent_resolved"}, ["old"]),
        # Filters combine with each other and with the search.
        ({"status": "waiting", "assigned": "unassigned"}, ["carol"]),
        ({"q": "carol", "status": "resolved"}, ["old"]),
        ({"q": "northwind", "outcome": "open"}, ["visitor"]),
        # Unknown values are no filter (a search box, not an API): never an error page.
        ({"status": "everything", "assigned": "someone", "outcome": "x", "site": "abc"}, None),
    ],
)
def test_filters_and_their_combinations(world, params, expected):
    everything = ["carol", "dan", "eve", "old", "visitor"]
    assert shown(world, **params) == (everything if expected is None else expected)


def test_site_and_knowledge_base_filters(world):
    assert shown(world, site=world["northwind"].pk) == ["eve", "visitor"]
    assert shown(world, kb=world["billing"].pk) == ["dan"]
    assert shown(world, kb=world["billing"].pk, site=world["northwind"].pk) == []


def test_query_string_round_trip_and_what_a_socket_reads():
    query = ListQuery.from_query_string(b"q=carol%20%20jones&status=waiting&assigned=mine&site=3&kb=&outcome=open", 7)
    assert query == ListQuery(agent_id=7, text="carol jones", status="waiting", assigned="mine", site=3,
                              outcome="open")
    assert query.params() == {"q": "carol jones", "status": "waiting", "assigned": "mine", "site": "3",
                              "outcome": "open"}
    assert query.active and not ListQuery.from_query_string(b"", 7).active
    assert ListQuery.from_params({"q": "x" * 500}, 7).text == "x" * 200


def test_a_filtered_list_costs_the_same_queries_as_the_whole_list(world):
    def count(narrow) -> int:
        with CaptureQueriesContext(connection) as queries:
            inbox.list_items(narrow=narrow)
        return len(queries)

    # "e" is in every conversation (titles, names): the same rows, searched, filtered and through every join.
    query = ListQuery.from_params({"q": "e", "assigned": "", "kb": "", "outcome": ""}, world["sam"].pk)
    assert len(inbox.list_items(narrow=query.narrow)) == len(inbox.list_items()) == 5
    assert count(query.narrow) == count(None)
    narrow = ListQuery.from_params({"q": "carol jones", "status": "waiting", "outcome": "open"}, world["sam"].pk)
    assert count(narrow.narrow) <= count(None)


def test_the_list_page_searches_filters_and_keeps_them_in_its_form(client, world):
    client.force_login(world["sam"])
    page = client.get(reverse("console:list"), {"q": "carol", "status": "resolved"}).content.decode()
    assert "Old question" in page and "Lamp arrived broken" not in page
    assert 'value="carol"' in page
    assert re.search(r'<option value="resolved" selected>', page)
    assert "1 matching conversation<" in page
    assert 'data-clear-filters' in page
    whole = client.get(reverse("console:list")).content.decode()
    assert "Lamp arrived broken" in whole and "data-clear-filters" not in whole
    assert "assigned to <span data-assignee-name>Bob</span>" in whole  # the visitor's row, assigned, not held
