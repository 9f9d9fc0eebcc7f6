"""Tools defined by staff in the admin (issue 19, point 1): the company's API, its parameters with the patterns
their values must match, and write-only secrets — header values and the signing secret are stored but never shown
again, not even masked in the page's HTML. "Try it" runs a saved tool for a customer staff choose, against the
company's API as a real HTTP server (tests/tool_api.py), and shows the redacted request and the visible fields.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.urls import reverse

from knowledge.models import KnowledgeBase, Tool
from tests.tool_api import ORDERS
from tests.tool_api import SECRET as API_SECRET

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


# --- Try it -----------------------------------------------------------------------------------------------------

SHOP = "north-shop-77"  # a configured header's value: as secret as the API key


@pytest.fixture
def alice(django_user_model, tool_api, settings):
    """A customer with an order at the company's API (which listens on 127.0.0.1)."""
    settings.TOOLS_ALLOW_PRIVATE_ADDRESSES = True
    user = django_user_model.objects.create_user("alice", "alice@example.com", "pw", first_name="Alice")
    tool_api.orders = {str(user.pk): ORDERS["1"]}
    return user


def api_tool(tool_api, **fields) -> Tool:
    """A saved tool calling the stand-in API, with an API key and a shop header besides the signature."""
    values = {
        "name": "Order status", "description": "Where the customer's order is.", "base_url": tool_api.base_url,
        "path_template": "/orders/{order_number}", "secret": API_SECRET,
        "parameters": [{"name": "order_number", "type": "string", "pattern": r"\d{5}", "description": "5 digits"}],
        "headers": {"Authorization": f"Bearer {API_KEY}", "X-Shop": SHOP},
        "visible_fields": ["status", "delivery.eta"],
        **fields,
    }  # fmt: skip
    tool = Tool(**values)
    tool.full_clean()
    tool.save()
    return tool


def try_url(tool: Tool) -> str:
    return reverse("admin:knowledge_tool_try", args=[tool.pk])


def staff_with(client, django_user_model, *codenames: str):
    """A signed-in staff member (not a superuser) with exactly these permissions on tools."""
    user = django_user_model.objects.create_user("agent", "agent@example.com", "pw-agent-123", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="knowledge", codename__in=codenames))
    client.login(username="agent", password="pw-agent-123")
    return client


def test_a_saved_tools_page_offers_try_it_to_staff_who_may_change_tools(client, django_user_model, tool_api, alice):
    tool = api_tool(tool_api)
    agent = staff_with(client, django_user_model, "view_tool", "change_tool")

    change_page = agent.get(reverse("admin:knowledge_tool_change", args=[tool.pk])).content.decode()
    assert f'href="{try_url(tool)}"' in change_page and ">Try it</a>" in change_page

    response = agent.get(try_url(tool))
    assert response.status_code == 200
    form = response.context["form"]
    assert list(form.fields) == ["customer", "parameter_order_number"]
    assert alice in form.fields["customer"].queryset
    page = response.content.decode()
    assert "csrfmiddlewaretoken" in page and 'method="post"' in page
    assert API_KEY not in page and SHOP not in page and API_SECRET not in page


def test_staff_who_may_only_view_tools_are_refused_and_others_sent_to_sign_in(client, django_user_model, tool_api):
    tool = api_tool(tool_api)
    assert client.get(try_url(tool)).status_code == 302  # signed out: the admin's sign-in page
    viewer = staff_with(client, django_user_model, "view_tool")
    change_page = viewer.get(reverse("admin:knowledge_tool_change", args=[tool.pk])).content.decode()
    assert try_url(tool) not in change_page
    assert viewer.get(try_url(tool)).status_code == 403
    assert viewer.post(try_url(tool), {"parameter_order_number": "10432"}).status_code == 403
    assert tool_api.requests == []


def test_trying_a_tool_calls_the_api_for_the_chosen_customer_and_shows_the_redacted_request(
    staff_client, tool_api, alice
):
    tool = api_tool(tool_api)

    response = staff_client.post(try_url(tool), {"customer": alice.pk, "parameter_order_number": "10432"})

    assert response.status_code == 200
    (received,) = tool_api.requests
    assert received.path == "/api/orders/10432" and received.identity.user_id == str(alice.pk)
    assert received.identity.email == "alice@example.com" and received.identity.name == "Alice"
    page = response.content.decode()
    assert 'data-outcome="ok"' in page and "HTTP 200" in page
    assert '<th scope="row">status</th><td>shipped</td>' in page
    assert '<th scope="row">delivery.eta</th><td>2025-06-03</td>' in page
    assert "Leipzig" not in page and "customer called twice" not in page  # not a visible field
    assert "http://127.0.0.1:" in page and "/api/orders/10432" in page
    for header in ("Authorization", "X-Shop", "X-Support-Signature"):
        assert f'<th scope="row">{header}</th><td><code>•••</code></td>' in page
    assert received.headers["x-support-identity"] in page  # who is asking is no secret; the signature over it is
    # Nothing secret anywhere in the page: the API key, a header value, the signing secret, the signature sent.
    for secret in (API_KEY, SHOP, API_SECRET, received.headers["x-support-signature"]):
        assert secret not in page
    (entry,) = LogEntry.objects.filter(object_id=str(tool.pk))
    assert entry.get_change_message() == f"Tried it for alice (user {alice.pk}): ok (HTTP 200)."
    assert entry.user.username == "manager"


@pytest.mark.parametrize("value", ["1043", "10432/../../admin", "10432?x=1", ""])
def test_a_value_that_does_not_match_its_pattern_is_a_form_error_and_no_request(staff_client, tool_api, alice, value):
    tool = api_tool(tool_api)

    response = staff_client.post(try_url(tool), {"customer": alice.pk, "parameter_order_number": value})

    assert response.status_code == 200 and response.context["result"] is None
    assert "parameter_order_number" in response.context["form"].errors
    assert 'class="errorlist' in response.content.decode()
    assert tool_api.requests == [] and not LogEntry.objects.exists()


def test_only_an_active_user_can_be_chosen(staff_client, tool_api, alice):
    tool = api_tool(tool_api)
    alice.is_active = False
    alice.save()

    response = staff_client.post(try_url(tool), {"customer": alice.pk, "parameter_order_number": "10432"})

    assert "customer" in response.context["form"].errors and tool_api.requests == []


@pytest.mark.parametrize(
    "fields, outcome, status",
    [
        ({"method": "POST", "path_template": "/error"}, "http_error", "HTTP 500"),
        ({"path_template": "/redirect", "parameters": []}, "redirect", "HTTP 302"),
        ({"path_template": "/malformed", "parameters": []}, "malformed", "HTTP 200"),
    ],
)
def test_a_failing_call_is_shown_as_failed_with_its_outcome(staff_client, tool_api, alice, fields, outcome, status):
    tool = api_tool(tool_api, **fields)
    form = {"customer": alice.pk, "parameter_order_number": "10432"} if tool.parameters else {"customer": alice.pk}

    page = staff_client.post(try_url(tool), form).content.decode()

    assert len(tool_api.requests) == 1
    assert f'<li class="error" data-outcome="{outcome}">' in page and f"Failed: {outcome}" in page and status in page
    assert "No fields: the call failed." in page
    if tool.method == "POST":  # what was sent, in the request's body
        assert "&quot;order_number&quot;: &quot;10432&quot;" in page
    assert API_KEY not in page and SHOP not in page
    (entry,) = LogEntry.objects.filter(object_id=str(tool.pk))
    assert f"{outcome} ({status})" in entry.get_change_message()


@pytest.mark.e2e
def test_try_it_in_a_browser(transactional_db, live_server, django_user_model, tool_api, alice, monkeypatch):
    """Real Chromium: from the tool's page, "Try it", choose the customer, type the order number, call; the result
    and the redacted request show, and the page holds no secret. Screenshots at 1280 and 390 px (SCREENSHOT_DIR)."""
    import os
    import tempfile
    from pathlib import Path

    from django.db import connection
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, LAUNCH_ARGS

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls between sync Playwright calls
    django_user_model.objects.create_superuser("manager", "manager@example.com", "pw-manager-123")
    tool = api_tool(tool_api)
    failing = api_tool(tool_api, name="Refund status", method="POST", path_template="/error")
    directory = Path(os.environ.get("SCREENSHOT_DIR") or Path(tempfile.gettempdir()) / "chat-screens")
    directory.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
            page.goto(f"{live_server.url}{reverse('admin:login')}")
            page.fill("#id_username", "manager")
            page.fill("#id_password", "pw-manager-123")
            page.click("input[type=submit]")
            page.goto(f"{live_server.url}{reverse('admin:knowledge_tool_change', args=[tool.pk])}")
            page.screenshot(path=str(directory / "tryit_change_page.png"))
            page.click("text=Try it")
            page.wait_for_url(f"**{try_url(tool)}")
            page.screenshot(path=str(directory / "tryit_form.png"), full_page=True)

            page.select_option("#id_customer", str(alice.pk))
            page.fill("#id_parameter_order_number", "1043")  # four digits: refused before any request
            page.click("input[name=_try]")
            assert "Does not match" in page.inner_text(".field-parameter_order_number .errorlist")
            assert tool_api.requests == []
            page.screenshot(path=str(directory / "tryit_invalid.png"), full_page=True)

            page.fill("#id_parameter_order_number", "10432")
            page.click("input[name=_try]")
            result = page.locator("#tool-try-result")
            result.wait_for()
            assert "OK — HTTP 200" in " ".join(result.locator(".messagelist").inner_text().split())
            assert "shipped" in page.inner_text("#tool-try-response") and len(tool_api.requests) == 1
            assert page.inner_text("#tool-try-request").count("•••") == 3
            html = page.content()
            assert API_KEY not in html and SHOP not in html and API_SECRET not in html
            page.screenshot(path=str(directory / "tryit_result.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 900})
            page.screenshot(path=str(directory / "tryit_result_390.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"

            # A failing call (the API answers 500 to a POST) is shown as failed, with the body it was sent.
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(f"{live_server.url}{try_url(failing)}")
            page.select_option("#id_customer", str(alice.pk))
            page.fill("#id_parameter_order_number", "10432")
            page.click("input[name=_try]")
            failed = page.locator(".messagelist li.error")
            assert "Failed: http_error — HTTP 500" in " ".join(failed.inner_text().split())
            assert '"order_number": "10432"' in page.inner_text("#tool-try-request pre")
            page.screenshot(path=str(directory / "tryit_failed.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 900})
            page.screenshot(path=str(directory / "tryit_failed_390.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, "the page scrolls sideways"
            assert errors == []
        finally:
            connection.close()
            browser.close()
