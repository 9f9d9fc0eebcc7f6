"""Tools defined by staff in the admin (issue 19, point 1): the company's API, its parameters with the patterns
their values must match, and write-only secrets — header values and the signing secret are stored but never shown
again, not even masked in the page's HTML.
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from knowledge.models import KnowledgeBase, Tool

pytestmark = pytest.mark.django_db

API_KEY = "sk-live-4f9a0c77e1"
SECRET = "signing-secret-93b1d2"


@pytest.fixture
def staff_client(client, django_user_model):
    django_user_model.objects.create_superuser("manager", "manager@example.com", "pw-manager-123")
    client.login(username="manager", password="pw-manager-123")
    return client


def order_tool_form(**overrides) -> dict:
    kb, _ = KnowledgeBase.objects.get_or_create(name="Shop help", defaults={"slug": "shop-help"})
    form = {
        "name": "Order status",
        "enabled": "on",
        "description": "Where an order is and when it arrives. Use when the customer asks about their order.",
        "examples": "where is my order 10432?\nwo ist meine Bestellung?\n我的订单到哪了？",
        "knowledge_bases": [kb.pk],
        "needs_signed_in": "on",
        "method": "GET",
        "base_url": "https://api.example.com/support",
        "path_template": "/orders/{order_number}",
        "parameters": json.dumps(
            [
                {
                    "name": "order_number",
                    "type": "string",
                    "pattern": r"\d{5}",
                    "ask": {"en": "What is your order number?"},
                }
            ]
        ),  # fmt: skip
        "timeout_seconds": "5",
        "visible_fields": json.dumps(["status", "delivery.eta"]),
        "answer_templates": json.dumps({"en": "Order {order_number} is {status}."}),
        "new_headers": f"Authorization: Bearer {API_KEY}\nX-Shop: north",
        "new_secret": SECRET,
    }
    form.update(overrides)
    return form


def test_staff_define_a_tool_and_its_secrets_are_stored_but_never_shown(staff_client):
    response = staff_client.post(reverse("admin:knowledge_tool_add"), order_tool_form())
    assert response.status_code == 302, response.content.decode()[:2000]
    tool = Tool.objects.get(name="Order status")
    assert tool.headers == {"Authorization": f"Bearer {API_KEY}", "X-Shop": "north"}
    assert tool.secret == SECRET
    assert tool.parameters[0]["pattern"] == r"\d{5}" and list(tool.knowledge_bases.all())

    page = staff_client.get(reverse("admin:knowledge_tool_change", args=[tool.pk])).content.decode()
    assert API_KEY not in page and SECRET not in page and "north" not in page
    assert "Authorization: •••" in page and "X-Shop: •••" in page  # which headers are set, not their values
    listing = staff_client.get(reverse("admin:knowledge_tool_changelist")).content.decode()
    assert "Authorization, X-Shop" in listing and API_KEY not in listing


def test_saving_without_new_secrets_keeps_them_and_clearing_removes_the_headers(staff_client):
    staff_client.post(reverse("admin:knowledge_tool_add"), order_tool_form())
    tool = Tool.objects.get(name="Order status")
    change = reverse("admin:knowledge_tool_change", args=[tool.pk])

    edited = order_tool_form(timeout_seconds="8", new_headers="", new_secret="")
    assert staff_client.post(change, edited).status_code == 302
    tool.refresh_from_db()
    assert tool.timeout_seconds == 8 and tool.secret == SECRET and tool.headers["X-Shop"] == "north"

    cleared = {**edited, "clear_headers": "on"}
    assert staff_client.post(change, cleared).status_code == 302
    tool.refresh_from_db()
    assert tool.headers == {} and tool.secret == SECRET


@pytest.mark.parametrize(
    "overrides, field, message",
    [
        ({"parameters": json.dumps([{"name": "order_number", "pattern": "(\\d{5"}])}, "__all__", "does not compile"),
        ({"parameters": json.dumps([{"name": "order_number"}])}, "parameters", "a pattern is required"),
        ({"path_template": "/orders/{order_id}"}, "path_template", "names each parameter once"),
        ({"path_template": "orders/{order_number}"}, "__all__", "must start with /"),
        ({"base_url": "https://user:pw@api.example.com"}, "__all__", "may not carry credentials"),
        ({"new_secret": ""}, "__all__", "A secret is needed"),
        ({"new_headers": "Bearer abc"}, "new_headers", "Name: value"),
    ],
)
def test_a_tool_that_could_not_be_called_safely_is_refused_when_saved(staff_client, overrides, field, message):
    response = staff_client.post(reverse("admin:knowledge_tool_add"), order_tool_form(**overrides))
    assert response.status_code == 200 and not Tool.objects.exists()
    errors = response.context["adminform"].form.errors
    assert field in errors and message in " ".join(errors[field]), errors


@pytest.mark.e2e
def test_the_tool_page_in_a_browser_holds_no_secret(transactional_db, live_server, django_user_model, monkeypatch):
    """Real Chromium on the change page, desktop and 390 px wide: the page's whole HTML, as the browser holds it,
    names the headers but not their values; screenshots to look at (SCREENSHOT_DIR)."""
    import os
    import tempfile
    from pathlib import Path

    from django.db import connection
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, LAUNCH_ARGS

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls between sync Playwright calls
    django_user_model.objects.create_superuser("manager", "manager@example.com", "pw-manager-123")
    form = order_tool_form()
    tool = Tool.objects.create(
        name=form["name"], description=form["description"], examples=form["examples"],
        base_url=form["base_url"], path_template=form["path_template"], parameters=json.loads(form["parameters"]),
        headers={"Authorization": f"Bearer {API_KEY}"}, secret=SECRET,
        visible_fields=["status", "delivery.eta"], answer_templates={"en": "Order {order_number} is {status}."},
    )  # fmt: skip
    directory = Path(os.environ.get("SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "chat-screens")
    directory.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:  # not the `browser` fixture: its event loop would outlive this test's ORM permit
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1100})
            page.goto(f"{live_server.url}{reverse('admin:login')}")
            page.fill("#id_username", "manager")
            page.fill("#id_password", "pw-manager-123")
            page.click("input[type=submit]")
            page.goto(f"{live_server.url}{reverse('admin:knowledge_tool_change', args=[tool.pk])}")
            html = page.content()
            assert "Authorization: •••" in html and API_KEY not in html and SECRET not in html
            assert page.input_value("#id_new_secret") == ""
            page.screenshot(path=str(directory / "admin-tool.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 900})
            page.screenshot(path=str(directory / "admin-tool-390.png"), full_page=True)
        finally:
            connection.close()
            browser.close()
