"""POST /api/token/ and the WebSocket handshake: bearer tokens, session cookies, origins, anonymous visitors."""

from __future__ import annotations

import json

import jwt
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client, RequestFactory

from chatsite.routing import websocket_application
from conversations.access import ensure_session
from conversations.auth import user_for_token
from conversations.models import Conversation
from tests.chat_support import HOST, ORIGIN, ChatClient, stop_generation

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(transactional_db):
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


def post_token(body: str | bytes) -> tuple[int, dict]:
    response = Client().post("/api/token/", data=body, content_type="application/json")
    return response.status_code, response.json()


def test_token_is_issued_for_good_credentials(alice, settings):
    settings.API_TOKEN_TTL_SECONDS = 120
    status, body = post_token(json.dumps({"username": "alice", "password": "pw-alice-123"}))
    assert status == 200
    assert body["expires_in"] == 120 and body["token_type"] == "Bearer"
    claims = jwt.decode(body["access"], settings.SECRET_KEY, algorithms=["HS256"])
    assert claims["sub"] == str(alice.pk) and claims["exp"] - claims["iat"] == 120
    assert user_for_token(body["access"]) == alice


def test_bad_credentials_are_401(alice):
    status, body = post_token(json.dumps({"username": "alice", "password": "wrong"}))
    assert status == 401 and "Invalid" in body["error"]
    status, _ = post_token(json.dumps({"username": "nobody", "password": "x"}))
    assert status == 401


@pytest.mark.parametrize("body", ["{not json", "[]", '{"username": "alice"}', '{"username": 1, "password": 2}', ""])
def test_malformed_requests_are_400(alice, body):
    status, payload = post_token(body)
    assert status == 400 and payload["error"]


def test_token_endpoint_takes_only_post(alice):
    assert Client().get("/api/token/").status_code == 405


async def open_socket(headers: list[tuple[bytes, bytes]]) -> tuple[WebsocketCommunicator, bool]:
    comm = WebsocketCommunicator(websocket_application, "/ws/chat/", headers=[(b"host", HOST), *headers])
    connected, _ = await comm.connect()
    return comm, connected


async def assert_refused_4401(comm: WebsocketCommunicator) -> dict:
    frame = json.loads(await comm.receive_from())
    assert frame["type"] == "error" and frame["code"] == "unauthenticated"
    closing = await comm.receive_output()
    assert closing == {"type": "websocket.close", "code": 4401}
    return frame


async def test_bearer_token_socket_works(alice):
    status, body = await database_sync_to_async(post_token)(
        json.dumps({"username": "alice", "password": "pw-alice-123"})
    )
    comm, connected = await open_socket([(b"origin", ORIGIN), (b"authorization", f"Bearer {body['access']}".encode())])
    assert connected
    client = ChatClient(comm)
    await client.ping_roundtrip()
    await client.send({"type": "ask", "id": "q1", "text": "Hello", "kb": "none-such"})
    assert (await client.recv())["code"] == "not_found"  # authenticated: the ask reached the domain layer
    await comm.disconnect()


async def test_expired_and_forged_tokens_are_refused_at_the_handshake(alice, settings):
    settings.API_TOKEN_TTL_SECONDS = -5
    _, body = await database_sync_to_async(post_token)(json.dumps({"username": "alice", "password": "pw-alice-123"}))
    comm, connected = await open_socket([(b"origin", ORIGIN), (b"authorization", f"Bearer {body['access']}".encode())])
    assert connected
    frame = await assert_refused_4401(comm)
    assert "expired" in frame["detail"]

    forged = jwt.encode({"sub": str(alice.pk), "exp": 2_000_000_000, "typ": "access"}, "not-our-key-but-long-enough-for-hs256-0123456789", "HS256")
    comm, _ = await open_socket([(b"origin", ORIGIN), (b"authorization", f"Bearer {forged}".encode())])
    await assert_refused_4401(comm)


async def test_origin_not_allowed_is_refused(alice):
    comm, connected = await open_socket([(b"origin", b"http://evil.example")])
    assert not connected
    comm, connected = await open_socket([])  # no Origin at all
    assert not connected


async def test_anonymous_is_refused_unless_allowed(settings, transactional_db):
    settings.CHAT_ALLOW_ANONYMOUS = False
    comm, connected = await open_socket([(b"origin", ORIGIN)])
    assert connected
    await assert_refused_4401(comm)


async def session_cookie(client: Client) -> bytes:
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_session_cookie_authenticates_a_browser(alice):
    browser = Client()
    await database_sync_to_async(browser.login)(username="alice", password="pw-alice-123")
    comm, connected = await open_socket([(b"origin", ORIGIN), (b"cookie", await session_cookie(browser))])
    assert connected
    await ChatClient(comm).ping_roundtrip()
    await comm.disconnect()


async def test_anonymous_visitor_gets_conversations_bound_to_its_session(demo_kb, settings):
    settings.CHAT_ALLOW_ANONYMOUS = True
    settings.ANSWER_WORDS_PER_SECOND = 0
    settings.REDIS_URL = ""

    def visitor() -> Client:
        """A browser whose session was created by ensure_session(), as the chat page view does."""
        request = RequestFactory().get("/")
        request.session = SessionStore()
        browser = Client()
        browser.cookies["sessionid"] = ensure_session(request)
        return browser

    first, second = await database_sync_to_async(visitor)(), await database_sync_to_async(visitor)()
    comm, connected = await open_socket([(b"origin", ORIGIN), (b"cookie", await session_cookie(first))])
    assert connected
    client = ChatClient(comm)
    ack = await client.ask("How do I return an item?")
    await client.until_final(ack["message"])
    conversation = await Conversation.objects.aget(pk=ack["conversation"])
    assert conversation.owner_id is None
    assert conversation.anonymous_session_key == first.cookies["sessionid"].value

    other_comm, _ = await open_socket([(b"origin", ORIGIN), (b"cookie", await session_cookie(second))])
    other = ChatClient(other_comm)
    await other.send({"type": "join", "conversation": ack["conversation"]})
    assert (await other.recv())["code"] == "not_found"
    await comm.disconnect()
    await other_comm.disconnect()
    await stop_generation()


def signed(claims: dict | bytes, settings) -> str:
    """A token signed with our own key: only its claims are wrong."""
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    return jwt.PyJWS().encode(payload, settings.SECRET_KEY, algorithm="HS256")


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "abc", "exp": 2_000_000_000, "typ": "access"},
        {"sub": "1.5", "exp": 2_000_000_000, "typ": "access"},
        {"sub": " 1", "exp": 2_000_000_000, "typ": "access"},
        {"sub": "٣", "exp": 2_000_000_000, "typ": "access"},  # a digit to str.isdigit(), not to PostgreSQL
        {"sub": "-1", "exp": 2_000_000_000, "typ": "access"},
        {"sub": "1\x00", "exp": 2_000_000_000, "typ": "access"},
        {"sub": ["1"], "exp": 2_000_000_000, "typ": "access"},
        {"sub": {"id": 1}, "exp": 2_000_000_000, "typ": "access"},
        {"sub": 1, "exp": 2_000_000_000, "typ": "access"},
        {"sub": "9" * 40, "exp": 2_000_000_000, "typ": "access"},
        {"sub": str(2**63), "exp": 2_000_000_000, "typ": "access"},
        {"sub": str(2**63 - 1), "exp": 2_000_000_000, "typ": "access"},  # a well-formed id no user has
        {"sub": "SUB", "exp": 10**30, "iat": 10**400, "typ": "access"},
        {"sub": "SUB", "exp": 2_000_000_000},  # no typ
        {"sub": "SUB", "exp": 2_000_000_000, "typ": ["access"]},
        {"sub": "SUB", "exp": "soon", "typ": "access"},
        b'{"sub": "SUB", "exp": 1e999, "typ": "access"}',
        b'{"sub": "SUB", "exp": NaN, "typ": "access"}',
        b'{"sub": "SUB", "exp": 2000000000, "typ": "access", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'["SUB"]',
    ],
    ids=lambda claims: (repr(claims)[:40]),
)
async def test_a_validly_signed_token_with_malformed_claims_is_refused_with_4401(alice, settings, claims):
    """Never an HTTP 500: each of these used to reach the ORM or int() and end the handshake in a traceback."""
    if isinstance(claims, dict):
        claims = {key: str(alice.pk) if value == "SUB" else value for key, value in claims.items()}
    else:
        claims = claims.replace(b'"SUB"', f'"{alice.pk}"'.encode())
    comm, connected = await open_socket([(b"origin", ORIGIN), (b"authorization", f"Bearer {signed(claims, settings)}".encode())])
    assert connected
    frame = await assert_refused_4401(comm)
    assert frame["detail"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("username=alice&password=pw-alice-123", "application/x-www-form-urlencoded"),
        (b"\xff\xfe{", "application/json"),
        ("[" * 100_000 + "]" * 100_000, "application/json"),
        ('{"username": "alice\\u0000", "password": "pw-alice-123"}', "application/json"),
        ('{"username": "alice", "password": "pw\\u0000"}', "application/json"),
        ('{"username": "\\udfff", "password": "x"}', "application/json"),
        (json.dumps({"username": "a" * 151, "password": "x"}), "application/json"),
        ('{"username": 1e999, "password": "x"}', "application/json"),
        ('{"username": "alice", "password": ' + "9" * 5000 + "}", "application/json"),
    ],
    ids=["form", "not-utf8", "nested", "nul-username", "nul-password", "surrogate", "long-username", "inf", "bigint"],
)
def test_malformed_bodies_are_400_never_500(alice, body, content_type):
    response = Client().post("/api/token/", data=body, content_type=content_type)
    assert response.status_code == 400 and response.json()["error"]


# --- POST /api/token/revoke/ ("sign out everywhere"; the end-to-end path is in tests/test_revocation.py) ---------
def test_sign_out_everywhere_without_credentials_is_401_as_documented():
    """No bearer token and no signed-in session: 401 with a sentence saying how to authenticate (docs/protocol.md),
    not Django's CSRF 403 — there is no session a forged request could ride on."""
    response = Client(enforce_csrf_checks=True).post("/api/token/revoke/")
    assert response.status_code == 401
    assert "Bearer" in response.json()["error"]


def test_sign_out_everywhere_with_a_session_but_no_csrf_token_is_403(alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    response = browser.post("/api/token/revoke/")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]


def test_sign_out_everywhere_with_a_revoked_or_forged_token_is_401(alice):
    response = Client().post("/api/token/revoke/", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 401 and response.json()["error"]
    assert Client().get("/api/token/revoke/").status_code == 405
