"""The demo order API that `make run` starts beside Daphne (knowledge/tools/demo_api.py), run here as the real
process it is: it answers only for the customer whose identity is signed, refuses everyone else, and the two demo
tools that bootstrap_demo creates call it for the signed-in demo customer and show only their visible fields.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from knowledge import language
from knowledge.ingest.pipeline import get_or_create_knowledge_base
from knowledge.models import KnowledgeBase, Tool
from knowledge.tools import calling, demo_api, signing
from knowledge.tools.signing import Identity
from tests.demo_api_process import SECRET, RunningAPI, running_demo_api

ROOT = Path(__file__).resolve().parent.parent
CHRIS = Identity(user_id="101", email="chris.miller@example.com", name="Chris Miller", kind="user")
ALEX = Identity(user_id="102", email="alex.weber@example.com", name="Alex Weber", kind="user")
VISITOR = Identity(user_id="visitor:9c1e", email="", name="", kind="visitor")
LANGUAGES = {"en", "de", "fr", "es", "zh-hans"}


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[RunningAPI]:
    """``python -m knowledge.tools.demo_api`` on a free port, as `make run` starts it; stopped after the module."""
    with running_demo_api(tmp_path_factory.mktemp("demo-api"), SECRET) as running:
        yield running


def test_it_prints_its_url_and_the_demo_customers_orders(api):
    printed = api.log.read_text()
    assert f"Demo order API on {api.url}\n" in printed
    assert "customer (chris.miller@example.com): orders 10432, 10388, 10517" in printed


def test_a_signed_in_customer_gets_their_own_order(api):
    status, order = api.get("/orders/10432", CHRIS)

    assert status == 200
    assert (order["order_number"], order["status"], order["carrier"]) == ("10432", "shipped", "DHL")
    assert order["tracking_number"] and date.fromisoformat(order["delivery"]["date"]) > date.today()
    # What a customer should not see is in the payload too: the tools' visible fields leave it out.
    assert order["internal_notes"] and order["warehouse"] and order["delivery"]["depot"]


def test_every_demo_customer_has_orders_and_refunds_in_varied_states(api):
    statuses, refunds = set(), set()
    for customer in demo_api.CUSTOMERS:
        identity = Identity("1", customer.email, customer.username, "user")
        assert 2 <= len(customer.orders) <= 3
        for number in (order.number for order in customer.orders):
            status, order = api.get(f"/orders/{number}", identity)
            assert status == 200, (customer.username, number, order)
            statuses.add(order["status"])
            delivery = date.fromisoformat(order["delivery"]["date"])
            # Delivered in the past, expected in the future; tracking once it has left the warehouse.
            assert (delivery < date.today()) == (order["status"] == "delivered"), order
            assert ("tracking_number" in order) == (order["status"] != "processing"), order
            status, refund = api.get(f"/refunds/{number}", identity)
            assert status == 200 and refund["order_number"] == number
            refunds.add(refund["state"])
            assert ("paid_on" in refund) == (refund["state"] == "paid"), refund
    assert statuses == {"processing", "shipped", "delivered"}
    assert refunds == {"none", "requested", "approved", "paid"}


def test_another_customers_order_number_is_not_found(api):
    assert api.get("/orders/10432", ALEX)[0] == 404
    assert api.get("/refunds/10388", ALEX)[0] == 404
    assert api.get("/orders/20871", CHRIS)[0] == 404
    # The same identity with an e-mail the API does not know has no orders at all.
    assert api.get("/orders/10432", Identity("101", "mallory@example.com", "Chris Miller", "user"))[0] == 404


def test_a_request_without_a_valid_signature_is_refused(api):
    assert api.get("/orders/10432", None) == (401, {"error": "the identity signature is missing, wrong or stale"})
    assert api.get("/orders/10432", CHRIS, secret="guessed-secret")[0] == 401
    assert api.get("/orders/10432", CHRIS, path_with_query="/api/orders/10388")[0] == 401  # signed for another
    assert api.get("/orders/10432", CHRIS, now=time.time() - 3600)[0] == 401  # stale


def test_an_anonymous_visitor_is_refused(api):
    assert api.get("/orders/10432", VISITOR) == (403, {"error": "orders are shown to signed-in customers only"})


def test_each_request_is_logged_on_one_line_without_its_signature(api):
    signature = signing.signed_headers(SECRET, "GET", "/api/orders/10517", b"", CHRIS)[signing.SIGNATURE_HEADER]
    assert api.get("/orders/10517", CHRIS)[0] == 200
    assert api.get("/orders/10517", ALEX)[0] == 404

    time.sleep(0.1)  # the line is written after the answer
    log = api.log.read_text()
    assert re.search(r"GET '/api/orders/10517' 200 user chris\.miller@example\.com\n", log)
    assert re.search(r"GET '/api/orders/10517' 404 user alex\.weber@example\.com\n", log)
    assert SECRET not in log and signature not in log and signing.SIGNATURE_HEADER not in log


@pytest.fixture
def help_centre(db, settings) -> KnowledgeBase:
    """The demo knowledge base as a second `make run` finds it: loaded (one article stands for the demo's, so
    bootstrap_demo does not ingest them again; the tools are what is tested here)."""
    kb = get_or_create_knowledge_base(settings.DEFAULT_KNOWLEDGE_BASE)
    kb.documents.create(title="Where is my parcel?", text="Tracking your order.", checksum="0" * 64)
    return kb


@pytest.fixture
def demo_tools(help_centre, settings, api) -> dict[str, Tool]:
    """bootstrap_demo run twice (as every `make run` does) with the demo API of this module and DEBUG on."""
    settings.DEBUG = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the demo accounts, fast
    settings.DEMO_API_URL = api.url
    settings.DEMO_TOOLS_SECRET = SECRET
    settings.TOOLS_ALLOW_PRIVATE_ADDRESSES = True
    for _ in range(2):
        call_command("bootstrap_demo", stdout=io.StringIO())
    return {tool.name: tool for tool in Tool.objects.all()}


def test_bootstrap_demo_creates_the_order_and_refund_tools_once(demo_tools, help_centre, api):
    assert sorted(demo_tools) == ["Order status", "Refund status"]
    for tool in demo_tools.values():
        tool.full_clean()
        assert tool.enabled and tool.needs_signed_in and list(tool.knowledge_bases.all()) == [help_centre]
        assert (tool.base_url, tool.secret, tool.method) == (api.url, SECRET, "GET")
        [parameter] = tool.parameters
        assert (parameter["name"], parameter["pattern"]) == ("order_number", r"\d{5}")
        assert set(parameter["ask"]) == LANGUAGES and "order number" in parameter["ask"]["en"]
        assert set(tool.answer_templates) == LANGUAGES
        for template in tool.answer_templates.values():
            assert set(re.findall(r"{([\w.]+)}", template)) <= set(tool.visible_fields), template
        examples = tool.examples.splitlines()
        assert {language.detect(example) for example in examples} == LANGUAGES, examples
        with_number = [example for example in examples if re.search(r"\d{5}", example)]
        assert 0 < len(with_number) < len(examples)


def test_the_demo_tools_look_up_the_signed_in_customers_order_with_only_its_visible_fields(demo_tools):
    chris = get_user_model().objects.get(username="customer")
    identity = Identity(str(chris.pk), chris.email, chris.get_full_name(), "user")
    spec = demo_tools["Order status"].spec()

    result = asyncio.run(calling.call(spec, {"order_number": "10432"}, identity))

    assert (result.ok, result.outcome, result.status) == (True, "ok", 200)
    assert result.fields["status"] == "shipped" and result.fields["carrier"] == "DHL"
    assert set(result.fields) <= set(spec.visible_fields) and "delivery.date" in result.fields
    assert "internal_notes" not in json.dumps(result.fields) and "Hamburg" not in json.dumps(result.fields)

    alex = get_user_model().objects.get(username="customer2")
    other = Identity(str(alex.pk), alex.email, alex.get_full_name(), "user")
    refused = asyncio.run(calling.call(spec, {"order_number": "10432"}, other))
    assert (refused.ok, refused.outcome, refused.status, refused.fields) == (False, "http_error", 404, {})


def test_every_answer_template_fills_from_every_demo_order(demo_tools):
    """One template per language fits every state: each placeholder is a visible field every answer has."""
    for customer in demo_api.CUSTOMERS:
        identity = Identity("1", customer.email, customer.username, "user")
        for tool in demo_tools.values():
            spec = tool.spec()
            for order in customer.orders:
                result = asyncio.run(calling.call(spec, {"order_number": order.number}, identity))
                assert result.ok, (tool.name, order.number, result.outcome)
                for lang, template in tool.answer_templates.items():
                    filled = re.sub(r"{([\w.]+)}", lambda match, fields=result.fields: str(fields[match[1]]), template)
                    assert order.number in filled and "None" not in filled, (lang, filled)
