"""The widget's HTTP side (issue 20; conversations/widget_views.py, conversations/visitors.py): /widget.js, the frame
page served only to the site's own origins, the exchange of its embed ticket for a visitor token (kept visitors,
verified customers, refused identities, the per-address limit), the ``Authorization: Visitor`` header on the image
upload, a widget conversation's tools and the console's label for its customer.

Real PostgreSQL, and the real Redis for the per-address counts (under a key prefix of each test's own); Django's test
client with CSRF checks on, as a browser on another site would meet them. The socket's side is
tests/test_widget_socket.py."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import time
import uuid

import jwt
import pytest
import redis
from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.contrib.staticfiles import finders
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from conversations import inbox, visitors
from conversations.identity_signing import sign
from conversations.models import Attachment, Conversation, Message, SiteCustomer
from conversations.tool_askers import ConversationAsker
from knowledge.models import KnowledgeBase, Tool
from knowledge.tools import running
from tests.widget_support import SECRET, make_site

# Transactional: the visitor view's database_sync_to_async (Channels) closes a test transaction's connection.
pytestmark = pytest.mark.django_db(transaction=True)

SHOP = "https://shop.example"
LOCAL = "http://localhost:8002"
REDIS_URL = "redis://127.0.0.1:6379/0"
ADDRESS = "198.51.100.7"


@pytest.fixture(autouse=True)
def _counts(settings):
    """Per-address counts in the real Redis under this test's own prefix, deleted afterwards."""
    prefix = f"test-widget-{uuid.uuid4().hex[:12]}"
    settings.REDIS_URL, settings.CHANNEL_PREFIX = REDIS_URL, prefix
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    if keys := list(client.scan_iter(f"{prefix}:*")):
        client.delete(*keys)


@pytest.fixture
def kb(db):
    return KnowledgeBase.objects.create(name="Northwind help", slug="northwind-help")


@pytest.fixture
def site(kb):
    return make_site(kb, f"{SHOP}\n{LOCAL}", greeting={"en": "Hi from Northwind!", "de": "Hallo von Northwind!"})


def frame(slug: str = "demo", referer: str | None = f"{SHOP}/delivery/", headers: dict | None = None, **params):
    return Client().get(
        f"/widget/{slug}/", params, headers={**({"Referer": referer} if referer else {}), **(headers or {})}
    )


def page_json(response, element_id: str):
    found = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', response.content.decode())
    assert found, f"no #{element_id} in the page"
    return json.loads(found.group(1))


def csp(response) -> dict[str, list[str]]:
    parts = (part.split() for part in response["Content-Security-Policy"].split(";") if part.strip())
    return {name: values for name, *values in parts}


def exchange(body: dict | None = None, *, slug: str = "demo", address: str = ADDRESS, raw: bytes | None = None):
    """POST /widget/<slug>/visitor/ as the frame's script does (no cookie, no CSRF token)."""
    data = raw if raw is not None else json.dumps(body)
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=address)
    return client.post(f"/widget/{slug}/visitor/", data, content_type="application/json")


def away_from_window_edge(window: int, margin: float = 10.0) -> None:
    """Wait while the current count window (``window_counts.window_key``) ends within ``margin`` s: a test's counts
    must all fall in one window."""
    left = window - time.time() % window
    if left < margin:
        time.sleep(left + 0.1)


def ticket(site, origin: str = SHOP) -> str:
    return visitors.embed_ticket(site, origin)


def new_visitor(site, **fields) -> dict:
    response = exchange({"ticket": ticket(site), **fields}, slug=site.slug)
    assert response.status_code == 200, response.content
    return response.json()


def claims(answer: dict) -> visitors.VisitorToken:
    return visitors.read_visitor_token(answer["token"])


def identity(customer_id: str = "cust-1001", name: str = "Chris Miller", email: str = "chris@example.com",
             timestamp: int | None = None, secret: str = SECRET) -> dict:  # fmt: skip
    stamp = int(time.time()) if timestamp is None else timestamp
    signature = sign(secret, stamp, customer_id, email, name)
    return {"id": customer_id, "name": name, "email": email, "timestamp": stamp, "signature": signature}


# --- /widget.js and the frame page ------------------------------------------------------------------------------
def test_widget_js_is_served_as_cacheable_javascript_that_other_sites_may_load():
    response = Client().get("/widget.js")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/javascript; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff"  # never sniffed into anything else
    assert response["Cache-Control"] == "public, max-age=300"
    assert response["Cross-Origin-Resource-Policy"] == "cross-origin"
    with open(finders.find("widget/widget.js"), "rb") as file:
        assert response.content == file.read()
    assert Client().post("/widget.js").status_code == 405


def test_the_frame_of_an_unknown_or_disabled_site_is_not_found(site):
    assert frame(slug="no-such-site").status_code == 404
    site.enabled = False
    site.save()
    assert frame().status_code == 404


@pytest.mark.parametrize(
    "referer",
    [None, "https://evil.example/", "http://shop.example/delivery/", "https://shop.example:8443/",
     "https://shop.example.evil/", "https://evil.example/https://shop.example/", "http://localhost:8003/", "null",
     "https://[shop.example/", "https://shop.example:99999/",
     "shop.example"],
)  # fmt: skip
def test_the_frame_is_refused_to_a_page_the_site_does_not_list(site, referer):
    response = frame(referer=referer)
    assert response.status_code == 403
    assert [t.name for t in response.templates][0] == "widget/refused.html"
    assert b"data-refused" in response.content and b"widget-config" not in response.content
    assert csp(response)["frame-ancestors"] == [SHOP, LOCAL]
    assert response["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("referer", "origin"),
    [(f"{SHOP}/delivery/?size=42", SHOP), ("https://SHOP.example:443/", SHOP), (f"{LOCAL}/account/", LOCAL)],
)
def test_the_frame_is_served_to_a_listed_origin_frameable_only_by_the_sites_origins(site, referer, origin):
    response = frame(referer=referer)
    assert response.status_code == 200
    assert csp(response)["frame-ancestors"] == [SHOP, LOCAL]
    assert "X-Frame-Options" not in response
    assert response["Cache-Control"] == "no-store"
    config = page_json(response, "widget-config")
    assert config["hostOrigin"] == origin and config["site"] == "demo"
    assert config["visitorUrl"] == "/widget/demo/visitor/"
    assert visitors.read_ticket(config["ticket"], site) == origin
    # The ticket, exchanged: a visitor of that origin.
    assert claims(new_visitor(site, ticket=config["ticket"])).visitor.origin == origin


def test_a_site_without_origins_serves_the_frame_nowhere_and_lets_nobody_frame_it(kb):
    make_site(kb, "")
    response = frame(referer=f"{SHOP}/")
    assert response.status_code == 403
    assert csp(response)["frame-ancestors"] == ["'none'"]


def test_the_frames_language_colour_and_greeting_options(site):
    german = frame(lang="de")
    assert b'<html lang="de"' in german.content and "Hallo von Northwind!" in german.content.decode()
    assert page_json(german, "widget-config")["language"] == "de"
    # An unknown language: the browser's (French has no greeting here: the site's default language's).
    french = frame(lang="xx", headers={"Accept-Language": "fr-FR,fr;q=0.9"})
    assert b'<html lang="fr"' in french.content and "Hi from Northwind!" in french.content.decode()

    assert page_json(frame(color="#1b4332"), "widget-color") == "#1b4332"
    for colour in ("red", "#fff", "#1b433z", "#1b4332;background:url(x)", "1b4332", "#1b43321"):
        assert page_json(frame(color=colour), "widget-color") == "", colour

    greeted = frame(greeting="  Welcome\n to   <b>Northwind</b>  ").content.decode()
    assert "Welcome to &lt;b&gt;Northwind&lt;/b&gt;" in greeted and "<b>Northwind" not in greeted
    assert "Hi from Northwind!" not in greeted
    long = frame(greeting="x" * 400).content.decode()
    assert "x" * 300 in long and "x" * 301 not in long


# --- POST /widget/<slug>/visitor/ -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [b"not json", b"[]", b'"ticket"', b'{"ticket": 42}', b"{}", b"\xff\xfe",
     b'{"ticket": "x", "deep": ' + b"[" * 8000 + b"]" * 8000 + b"}"],  # deeper than Python's recursion limit
)  # fmt: skip
def test_a_malformed_body_is_400(site, raw):
    response = exchange(raw=raw)
    assert response.status_code == 400 and response.json()["error"] == "malformed"


def test_a_body_past_16_kb_is_413(site):
    response = exchange({"ticket": ticket(site), "page": "x" * 17_000})
    assert response.status_code == 413 and response.json()["error"] == "too_large"


def test_a_bad_forged_expired_or_foreign_ticket_is_403_and_an_unknown_site_404(settings, site, kb):
    other = make_site(kb, SHOP, slug="other", name="Other shop")
    now = int(time.time())
    forged = jwt.encode(
        {"typ": visitors.TICKET, "site": site.pk, "org": SHOP, "exp": now + 60},
        "another key, not ours: 0123456789abcdef",
        "HS256",
    )
    settings.WIDGET_EMBED_TICKET_SECONDS = -1
    expired = ticket(site)
    settings.WIDGET_EMBED_TICKET_SECONDS = 3600
    visitor_token = new_visitor(site)["token"]  # a visitor token is no ticket (typ)
    unlisted = ticket(site, "https://evil.example")
    for bad in ("", "garbage", forged, expired, ticket(other), visitor_token, unlisted):
        response = exchange({"ticket": bad})
        assert response.status_code == 403 and response.json()["error"] == "ticket", bad
    assert exchange({"ticket": ticket(site)}, slug="no-such-site").status_code == 404
    good = ticket(site)
    site.allowed_origins = LOCAL  # the ticket's origin removed since the page was served
    site.save()
    assert exchange({"ticket": good}).status_code == 403


def test_an_unknown_or_malformed_language_is_the_requests_own(site):
    assert "Hallo von Northwind!" in new_visitor(site, language="de")["chat_html"]
    for language in (["de"], {"de": 1}, "xx", 7):
        assert "Hi from Northwind!" in new_visitor(site, language=language)["chat_html"], language


def test_a_new_visitor_gets_a_token_of_the_site_and_origin(site):
    answer = new_visitor(site)
    assert answer["identity"] == "none" and answer["conversation"] is None and answer["status"] == "bot"
    assert "Hi from Northwind!" in answer["chat_html"]
    found = claims(answer)
    assert found.session_key.startswith(visitors.VISITOR_KEY_PREFIX) and found.user_id is None
    assert (found.visitor.site_id, found.visitor.origin) == (site.pk, SHOP)
    assert claims(new_visitor(site)).session_key != found.session_key  # each browser its own


def test_a_kept_token_keeps_the_visitor_and_their_conversation_and_one_of_another_site_does_not(site, kb):
    first = new_visitor(site)
    key = claims(first).session_key
    conversation = Conversation.objects.create(knowledge_base=kb, site=site, anonymous_session_key=key, title="Parcel")
    Message.objects.create(conversation=conversation, role=Message.Role.USER, text="Where is my parcel 10432?")

    again = new_visitor(site, token=first["token"])
    assert claims(again).session_key == key
    assert again["conversation"] == str(conversation.pk) and "Where is my parcel 10432?" in again["chat_html"]

    other_site = make_site(kb, SHOP, slug="other", name="Other shop")
    elsewhere = new_visitor(other_site, token=first["token"])
    assert claims(elsewhere).session_key not in ("", key) and elsewhere["conversation"] is None
    assert "10432" not in elsewhere["chat_html"]
    for junk in ("garbage", 42, {"sub": key}, "x" * 5000):
        assert claims(new_visitor(site, token=junk)).session_key != key


@pytest.mark.parametrize(
    ("page", "kept"),
    [(f"{SHOP}/delivery/?size=42#top", True), ("https://shop.example:443/boots/", True),
     ("http://shop.example/delivery/", False), ("https://evil.example/https://shop.example/", False),
     (f"{LOCAL}/account/", False), ("javascript:alert(1)//https://shop.example", False),
     (f"{SHOP}/" + "a" * 2100, False), (42, False), ("https://[shop.example/", False)],
)  # fmt: skip
def test_the_page_url_is_kept_only_on_the_tickets_origin(site, page, kept):
    assert claims(new_visitor(site, page=page)).visitor.page_url == (page if kept else "")


def test_a_verified_customer_gets_an_account_kept_across_visits_that_takes_over_their_anonymous_chats(site, kb):
    anonymous = new_visitor(site)
    key = claims(anonymous).session_key
    earlier = Conversation.objects.create(knowledge_base=kb, site=site, anonymous_session_key=key, title="Sizes")

    signed_in = new_visitor(site, token=anonymous["token"], identity=identity())
    assert signed_in["identity"] == "verified"
    customer = SiteCustomer.objects.select_related("user").get(site=site, external_id="cust-1001")
    user = customer.user
    assert (user.first_name, user.email, user.has_usable_password()) == ("Chris Miller", "chris@example.com", False)
    assert (claims(signed_in).user_id, claims(signed_in).session_key) == (user.pk, "")
    earlier.refresh_from_db()
    assert (earlier.owner_id, earlier.anonymous_session_key) == (user.pk, "")
    assert signed_in["conversation"] == str(earlier.pk)

    # Another device, an e-mail changed on the host site (the timestamp may come as digits): the same account.
    stamp = int(time.time())
    later = new_visitor(
        site, identity={**identity(email="chris.miller@example.com", timestamp=stamp), "timestamp": str(stamp)}
    )
    assert later["identity"] == "verified" and claims(later).user_id == user.pk
    assert later["conversation"] == str(earlier.pk)
    user.refresh_from_db()
    assert user.email == "chris.miller@example.com" and SiteCustomer.objects.count() == 1

    # The same id on another site is another customer, who sees none of these.
    other = make_site(kb, SHOP, slug="other", name="Other shop")
    there = new_visitor(other, identity=identity())
    assert there["identity"] == "verified" and claims(there).user_id not in (None, user.pk)
    assert there["conversation"] is None


@pytest.mark.parametrize(
    "bad",
    [
        {**identity(), "signature": identity(secret="another-site-secret-0123456789abcdef")["signature"]},
        {**identity(), "name": "Mallory"},  # signed for Chris
        identity(timestamp=int(time.time()) - 24 * 3600 - 60),  # older than WIDGET_IDENTITY_MAX_AGE_SECONDS
        identity(timestamp=int(time.time()) + 3600),  # from the future
        identity(name="Chris\nMiller"),
        identity(email="chris@example.com\nadmin@example.com"),
        identity(customer_id=""),
        {**identity(), "timestamp": "soon"},
        {**identity(), "timestamp": True},
        {**identity(), "id": 1001},
        {**identity(), "signature": None},
        {**identity(), "signature": "é" * 64},  # hmac.compare_digest refuses non-ASCII text
        "cust-1001",
        ["cust-1001"],
    ],
)
def test_an_identity_that_does_not_verify_leaves_the_visitor_anonymous(site, bad):
    answer = new_visitor(site, identity=bad)
    assert answer["identity"] == "refused"
    assert claims(answer).user_id is None and claims(answer).session_key.startswith(visitors.VISITOR_KEY_PREFIX)
    assert not SiteCustomer.objects.exists()


def test_a_stale_identity_is_judged_by_the_setting(settings, site):
    settings.WIDGET_IDENTITY_MAX_AGE_SECONDS = 60
    assert new_visitor(site, identity=identity(timestamp=int(time.time()) - 120))["identity"] == "refused"
    assert new_visitor(site, identity=identity(timestamp=int(time.time()) - 30))["identity"] == "verified"


def test_a_deactivated_customer_is_refused(site):
    user_id = claims(new_visitor(site, identity=identity())).user_id
    get_user_model().objects.filter(pk=user_id).update(is_active=False)
    answer = new_visitor(site, identity=identity())
    assert answer["identity"] == "refused" and claims(answer).user_id is None


def test_new_visitors_per_address_are_limited_across_nodes_but_known_visitors_are_not(settings, site, _counts):
    settings.WIDGET_NEW_VISITORS_PER_IP_PER_HOUR = 2
    away_from_window_edge(3600)
    first = exchange({"ticket": ticket(site)}).json()
    assert exchange({"ticket": ticket(site)}).status_code == 200
    refused = exchange({"ticket": ticket(site)})
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    kept = exchange({"ticket": ticket(site), "token": first["token"]})
    assert kept.status_code == 200 and claims(kept.json()).session_key == claims(first).session_key
    verified = exchange({"ticket": ticket(site), "identity": identity()})
    assert verified.status_code == 200 and verified.json()["identity"] == "verified"
    assert exchange({"ticket": ticket(site)}, address="198.51.100.8").status_code == 200  # another address
    # Counted in Redis, where every node counts.
    assert any(
        b":widget-new:" + ADDRESS.encode() in key for key in redis.Redis.from_url(REDIS_URL).scan_iter(f"{_counts}:*")
    )
    # An IPv6 client by its /64.
    assert exchange({"ticket": ticket(site)}, address="2001:db8:0:1::1").status_code == 200
    assert exchange({"ticket": ticket(site)}, address="2001:db8:0:1::2").status_code == 200
    assert exchange({"ticket": ticket(site)}, address="2001:db8:0:1::3").status_code == 429
    assert exchange({"ticket": ticket(site)}, address="2001:db8:0:2::1").status_code == 200


# --- Authorization: Visitor on HTTP ----------------------------------------------------------------------------
def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def upload(token: str, client: Client | None = None):
    client = client or Client(enforce_csrf_checks=True)
    image = SimpleUploadedFile("shot.png", png(), content_type="image/png")
    return client.post("/attachments/", {"image": image}, headers={"Authorization": f"Visitor {token}"})


def test_a_visitor_token_is_the_visitor_on_an_http_request_and_a_bad_one_is_refused(site):
    visitor = new_visitor(site)
    response = upload(visitor["token"])  # no CSRF token: a header another site cannot make a browser send
    assert response.status_code == 201, response.content
    stored = Attachment.objects.get(pk=response.json()["id"])
    assert stored.owner_id is None and stored.anonymous_session_key == claims(visitor).session_key

    url = response.json()["url"]
    assert Client().get(url, headers={"Authorization": f"Visitor {visitor['token']}"}).status_code == 200
    assert Client().get(url, headers={"Authorization": f"Visitor {new_visitor(site)['token']}"}).status_code == 404
    assert Client().get(url).status_code == 404

    # The header wins over the cookies: a signed-in staff member's browser uploads as the visitor.
    staff = Client(enforce_csrf_checks=True)
    staff.force_login(get_user_model().objects.create_user("sam", password="pw-sam-123", is_staff=True))
    as_visitor = Attachment.objects.get(pk=upload(visitor["token"], staff).json()["id"])
    assert as_visitor.owner_id is None and as_visitor.anonymous_session_key == claims(visitor).session_key

    for bad in ("garbage", "", ticket(site), visitor["token"] + "x"):
        assert upload(bad).status_code == 401, bad
    site.enabled = False
    site.save()
    assert upload(visitor["token"]).status_code == 401  # its site is off
    assert Client().get(url, headers={"Authorization": f"Visitor {visitor['token']}"}).status_code == 404


def test_a_verified_customers_token_uploads_as_their_account_until_deactivated(site):
    answer = new_visitor(site, identity=identity())
    response = upload(answer["token"])
    assert response.status_code == 201
    assert Attachment.objects.get(pk=response.json()["id"]).owner_id == claims(answer).user_id
    get_user_model().objects.filter(pk=claims(answer).user_id).update(is_active=False)
    assert upload(answer["token"]).status_code == 401


# --- a widget conversation's tools, and its customer in the console ---------------------------------------------
def make_tool(name: str, kb: KnowledgeBase) -> Tool:
    tool = Tool.objects.create(name=name, description=f"{name}.", base_url="https://api.example.com",
                               path_template="/orders/{order_number}", secret="tool-secret",
                               parameters=[{"name": "order_number", "pattern": r"\d{5}"}])  # fmt: skip
    tool.knowledge_bases.add(kb)
    return tool


def test_a_widget_conversation_may_use_only_its_sites_tools_and_a_chat_page_one_all_of_its_knowledge_bases(site, kb):
    orders, refunds = make_tool("Order status", kb), make_tool("Refund status", kb)
    site.tools.set([orders])
    tools = async_to_sync(running.usable_tools)(kb)
    assert {tool.pk for tool in tools} == {orders.pk, refunds.pk}
    widget = Conversation.objects.create(knowledge_base=kb, site=site, anonymous_session_key="visitor-1")
    chat_page = Conversation.objects.create(knowledge_base=kb, anonymous_session_key="abc123")

    assert async_to_sync(ConversationAsker.of(widget).allowed)(tools) == [orders]
    assert async_to_sync(ConversationAsker.of(chat_page).allowed)(tools) == tools
    site.tools.clear()
    assert async_to_sync(ConversationAsker.of(widget).allowed)(tools) == []


def test_the_console_names_a_visitor_a_verified_customer_and_a_chat_page_customer(site, kb):
    users = get_user_model().objects
    chris = users.create_user("site-1-abc", first_name="Chris Miller")
    SiteCustomer.objects.create(site=site, external_id="cust-1001", user=chris)
    carol = users.create_user("carol", first_name="Carol", last_name="Smith")
    dave = users.create_user("dave")
    make = Conversation.objects.create
    cases = [
        (make(knowledge_base=kb, site=site, anonymous_session_key="visitor-1", page_url=f"{SHOP}/delivery/"),
         "Visitor on Northwind Outfitters · https://shop.example/delivery/"),
        (make(knowledge_base=kb, site=site, anonymous_session_key="visitor-2"), "Visitor on Northwind Outfitters"),
        (make(knowledge_base=kb, site=site, owner=chris, page_url=f"{SHOP}/account/"),
         "Chris Miller on Northwind Outfitters · https://shop.example/account/"),
        (make(knowledge_base=kb, owner=carol), "Carol Smith"),
        (make(knowledge_base=kb, owner=dave), "dave"),
        (make(knowledge_base=kb, anonymous_session_key="abc123"), "Visitor"),
    ]  # fmt: skip
    for conversation, label in cases:
        assert inbox.customer_label(conversation) == label
        Message.objects.create(conversation=conversation, role=Message.Role.USER, text="Hello?")
        assert inbox.list_item(conversation.pk)["customer"] == label  # the console's row


def test_the_signature_is_the_documented_hmac_of_timestamp_id_email_and_name():
    """docs/widget.md's formula, computed here by hand as a host site's server would (the snippets for Django, Node
    and PHP compute the same): what identity_signing.sign makes and verify_identity accepts."""
    text = "1796600000\ncust-1001\nchris@example.com\nChris Miller"
    by_hand = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert sign(SECRET, 1796600000, "cust-1001", "chris@example.com", "Chris Miller") == by_hand
    assert sign(SECRET, 1796600000, "cust-1001", "chris@example.com", "Chris Mille") != by_hand
