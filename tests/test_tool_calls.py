"""Tool calls over real HTTP (knowledge/tools/calling.py, signing.py): the company's API answers only for the
signed customer, nothing in a question reaches another path or address, every fault has its outcome quickly, and
no secret leaves in the redacted request, the spec's repr or the logs. No database: plain data in, HTTP out.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from urllib.parse import quote

import pytest

from knowledge.tools import signing
from knowledge.tools.calling import REDACTED, ParameterSpec, ToolSpec, call, is_public_address
from knowledge.tools.signing import Identity
from tests.daphne_process import free_port
from tests.tool_api import ALICE, BOB, PREFIX, ToolAPI

ORDER_NUMBER = ParameterSpec("order_number", "string", r"\d{5}", "The customer's five-digit order number")
API_KEY = "sk-live-4be2c0ffee19"
SESSION_TOKEN = "tok-91ad7e55"


@pytest.fixture(autouse=True)
def _demo_api_allowed(settings):
    """The stand-in API listens on 127.0.0.1, as the demo API does: allowed here, refused in its own test."""
    settings.TOOLS_ALLOW_PRIVATE_ADDRESSES = True


def order_tool(api: ToolAPI, **changes) -> ToolSpec:
    fields = {
        "name": "Order status",
        "method": "GET",
        "base_url": api.base_url,
        "path_template": "/orders/{order_number}",
        "parameters": [ORDER_NUMBER],
        "headers": {"Authorization": f"Bearer {API_KEY}", "X-Session": SESSION_TOKEN},
        "secret": api.secret,
        "timeout_seconds": 2.0,
        "visible_fields": ["status", "delivery.eta", "delivery.carrier", "tracking.url"],
    }
    return ToolSpec(**{**fields, **changes})


async def test_an_order_is_found_with_only_its_visible_fields(tool_api):
    result = await call(order_tool(tool_api), {"order_number": "10432"}, ALICE)

    assert (result.ok, result.outcome, result.status) == (True, "ok", 200)
    # Only the visible fields that the response has: no depot, no internal notes, no refund; "tracking.url" absent.
    assert result.fields == {"status": "shipped", "delivery.eta": "2025-06-03", "delivery.carrier": "DHL"}
    [received] = tool_api.requests
    assert received.identity == ALICE
    assert received.path == f"{PREFIX}/orders/10432"
    assert received.headers["authorization"] == f"Bearer {API_KEY}"  # configured headers are sent, only never shown


async def test_another_customers_order_is_refused_by_the_api(tool_api):
    """Bob types Alice's order number: the API answers for the identity it verified, Bob, and has no such order."""
    result = await call(order_tool(tool_api), {"order_number": "10432"}, BOB)

    assert (result.ok, result.outcome, result.status, result.fields) == (False, "http_error", 404, {})
    assert [received.identity for received in tool_api.requests] == [BOB]


async def test_a_post_sends_the_arguments_as_a_signed_json_body(tool_api):
    spec = order_tool(
        tool_api, name="Refund status", method="POST", path_template="/refunds", visible_fields=["state", "amount"]
    )
    result = await call(spec, {"order_number": "10432", "ignored": "not a parameter"}, ALICE)

    assert (result.outcome, result.fields) == ("ok", {"state": "paid", "amount": "19.90"})
    [received] = tool_api.requests
    assert json.loads(received.body) == {"order_number": "10432"}  # undeclared arguments are dropped
    assert received.identity == ALICE  # the signature covers the body
    assert result.request["body"] == {"order_number": "10432"}


@pytest.mark.parametrize(
    "arguments",
    [{}, {"order_number": ""}, {"order_number": "1043"}, {"order_number": "104321"}, {"order_number": "1043a"},
     {"order_number": "10432\n"}, {"order_number": None}, {"order_number": 10432}, {"other": "10432"}],
    ids=["missing", "empty", "short", "long", "letter", "newline", "null", "number-for-string", "wrong-name"],
)  # fmt: skip
async def test_a_parameter_failing_its_pattern_makes_no_request(tool_api, arguments):
    result = await call(order_tool(tool_api), arguments, ALICE)

    assert (result.ok, result.outcome, result.status) == (False, "invalid_argument", None)
    assert tool_api.requests == []


async def test_an_integer_parameter_takes_a_json_number(tool_api):
    """Function calling sends an integer parameter as a number; it is checked as its digits."""
    spec = order_tool(tool_api, parameters=[ParameterSpec("order_number", "integer", r"\d{5}")])

    assert (await call(spec, {"order_number": 10432}, ALICE)).outcome == "ok"
    assert (await call(spec, {"order_number": True}, ALICE)).outcome == "invalid_argument"


INJECTIONS = ["10432/../../admin", "10432?x=1", "http://evil", "10432#x", "..", ".", "%2e%2e", "10432 @evil.example"]


@pytest.mark.parametrize("value", INJECTIONS)
async def test_an_injected_value_is_refused_by_its_pattern(tool_api, value):
    result = await call(order_tool(tool_api), {"order_number": value}, ALICE)

    assert result.outcome == "invalid_argument"
    assert tool_api.requests == []


@pytest.mark.parametrize("value", INJECTIONS)
async def test_an_injected_value_never_changes_the_path(tool_api, value):
    """Even under a pattern that lets anything through, a value stays one encoded path segment (or is refused
    when it would be a dot segment): the request goes to /api/orders/<that segment> and nowhere else."""
    spec = order_tool(tool_api, parameters=[ParameterSpec("order_number", "string", r".+")])
    result = await call(spec, {"order_number": value}, ALICE)

    if value in {".", ".."}:
        assert result.outcome == "invalid_argument"
        assert tool_api.requests == []
        return
    assert (result.outcome, result.status) == ("http_error", 404)  # Alice has no such order
    [received] = tool_api.requests
    assert received.path == f"{PREFIX}/orders/{quote(value, safe='')}"
    assert result.request["url"] == f"{tool_api.base_url}/orders/{quote(value, safe='')}"


async def test_a_get_parameter_outside_the_template_goes_in_the_query(tool_api):
    spec = order_tool(
        tool_api, path_template="/orders/{order_number}", parameters=[ORDER_NUMBER, ParameterSpec("lang", "string")]
    )
    await call(spec, {"order_number": "10432", "lang": "de&admin=1"}, ALICE)

    assert tool_api.requests[0].path == f"{PREFIX}/orders/10432?lang=de%26admin%3D1"
    assert tool_api.requests[0].identity == ALICE  # the query is signed too


@pytest.mark.parametrize(
    ("path", "outcome", "status"),
    [("/slow", "timeout", None), ("/error", "http_error", 500), ("/malformed", "malformed", 200),
     ("/array", "malformed", 200), ("/huge", "too_large", 200), ("/huge?declared=1", "too_large", 200),
     ("/redirect", "redirect", 302)],
)  # fmt: skip
async def test_each_fault_has_its_outcome_quickly(tool_api, path, outcome, status):
    spec = order_tool(tool_api, path_template=path, parameters=[], timeout_seconds=1.0)
    started = time.monotonic()
    result = await call(spec, {}, ALICE)
    elapsed = time.monotonic() - started

    assert (result.ok, result.outcome, result.status, result.fields) == (False, outcome, status, {})
    assert elapsed < 2.5, f"{path} took {elapsed:.1f} s"
    assert result.latency_ms == pytest.approx(elapsed * 1000, abs=200)
    assert len(tool_api.requests) == 1  # a redirect is not followed


async def test_a_smaller_response_cap_applies(tool_api, settings):
    settings.TOOLS_MAX_RESPONSE_BYTES = 100
    assert (await call(order_tool(tool_api), {"order_number": "10432"}, ALICE)).outcome == "too_large"


async def test_a_closed_port_is_unreachable():
    spec = ToolSpec("Down", "GET", f"http://127.0.0.1:{free_port()}/api", "/orders", secret="s")
    result = await call(spec, {}, ALICE)

    assert (result.outcome, result.status) == ("unreachable", None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_loopback_base_url_is_refused_unless_private_addresses_are_allowed(tool_api, settings, host):
    spec = order_tool(tool_api, base_url=f"http://{host}:{tool_api.port}{PREFIX}")

    settings.TOOLS_ALLOW_PRIVATE_ADDRESSES = False
    refused = await call(spec, {"order_number": "10432"}, ALICE)
    assert (refused.outcome, refused.status) == ("refused_address", None)
    assert tool_api.requests == []

    settings.TOOLS_ALLOW_PRIVATE_ADDRESSES = True
    allowed = await call(spec, {"order_number": "10432"}, ALICE)
    assert allowed.outcome == "ok"
    assert tool_api.requests[0].headers["host"] == f"{host}:{tool_api.port}"  # the host named, the address checked


@pytest.mark.parametrize(
    ("address", "public"),
    [("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
     ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
     ("240.0.0.1", False), ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False),
     ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("ff02::1", False),
     ("93.184.216.34", True), ("2606:4700:4700::1111", True), ("::ffff:93.184.216.34", True)],
)  # fmt: skip
def test_only_public_addresses_pass_the_address_check(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


async def test_the_redacted_request_never_contains_a_secret(tool_api, caplog):
    spec = order_tool(tool_api)
    secrets = [API_KEY, SESSION_TOKEN, spec.secret]
    caplog.set_level(logging.DEBUG)
    results = [
        await call(spec, {"order_number": "10432"}, ALICE),
        await call(spec, {"order_number": "10432"}, BOB),
        await call(spec, {"order_number": "nope"}, ALICE),
        await call(order_tool(tool_api, path_template="/error", parameters=[]), {}, ALICE),
    ]

    assert results[0].request["headers"]["Authorization"] == REDACTED
    assert results[0].request["headers"]["X-Session"] == REDACTED
    assert results[0].request["headers"][signing.SIGNATURE_HEADER] == REDACTED
    signature = tool_api.requests[0].headers[signing.SIGNATURE_HEADER.lower()]
    shown = json.dumps([result.request for result in results]) + repr(results) + repr(spec) + caplog.text
    for secret in [*secrets, signature]:
        assert secret not in shown


def test_a_misconfigured_tool_is_refused_when_built():
    good = {"name": "T", "method": "GET", "base_url": "https://api.example.com/v1", "path_template": "/orders/{n}",
            "parameters": [ParameterSpec("n", "string", r"\d+")], "secret": "s"}  # fmt: skip
    ToolSpec(**good)
    for bad in [
        {"method": "DELETE"},
        {"base_url": "ftp://api.example.com"},
        {"base_url": "https://user:pw@api.example.com"},
        {"base_url": "https://api.example.com/v1?key=abc"},
        {"path_template": "orders/{n}"},
        {"path_template": "@evil.example/{n}"},
        {"path_template": "/../admin/{n}"},
        {"path_template": "/orders/{m}"},
        {"parameters": [ParameterSpec("n", "float")]},
        {"parameters": [ParameterSpec("n", "string", "(")]},
        {"secret": ""},
        {"timeout_seconds": 0},
        {"headers": {"X-Support-Identity": "forged"}},
        {"headers": {"X-Api-Key": "a\r\nX-Other: b"}},
        {"headers": {"X-Api-Key": "schlüssel"}},
        {"headers": {"Api Key": "x"}},
        {"base_url": "https://api.example.com:99999"},
        {"base_url": "https://bücher.example"},
    ]:
        with pytest.raises(ValueError):
            ToolSpec(**{**good, **bad})


def test_signed_headers_verify_round_trip():
    visitor = Identity(user_id="visitor:3f2a", email="", name="", kind="visitor")
    headers = signing.signed_headers("k", "post", "/api/refunds?x=1", b'{"a":1}', visitor, now=1_000_000)

    assert signing.verify("k", "POST", "/api/refunds?x=1", b'{"a":1}', headers, now=1_000_100) == visitor
    lower_case = {name.lower(): value for name, value in headers.items()}  # as a proxy may pass them on
    assert signing.verify("k", "POST", "/api/refunds?x=1", b'{"a":1}', lower_case, now=1_000_000) == visitor


def test_a_tampered_or_stale_request_is_rejected():
    headers = signing.signed_headers("k", "GET", "/api/orders/10432", b"", ALICE, now=1_000_000)
    forged_identity = {**headers, signing.IDENTITY_HEADER: signing.encode_identity(BOB)}

    def verified(secret="k", method="GET", path="/api/orders/10432", body=b"", headers=headers, now=1_000_000):
        return signing.verify(secret, method, path, body, headers, now=now)

    assert verified() == ALICE
    assert verified(body=b"tampered") is None
    assert verified(path="/api/orders/20871") is None
    assert verified(method="POST") is None
    assert verified(secret="other") is None
    assert verified(headers=forged_identity) is None
    assert verified(now=1_000_301) is None  # stale
    assert verified(now=999_699) is None  # from the future
    assert verified(headers={**headers, signing.TIMESTAMP_HEADER: "1000001"}) is None
    assert verified(headers={**headers, signing.TIMESTAMP_HEADER: "²"}) is None
    assert verified(headers={**headers, signing.SIGNATURE_HEADER: "é" * 64}) is None
    assert verified(headers={}) is None
