"""The WebSocket Origin check (chatsite/origins.py): scheme, host and port of the Origin must be the handshake's own
or listed in CHAT_ALLOWED_ORIGINS; anything else is refused before any consumer runs (HTTP 403 from Daphne)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from chatsite.origins import StrictOriginValidator
from chatsite.routing import websocket_application
from tests.node_client import get_token

pytestmark = pytest.mark.django_db(transaction=True)

SITE_HOST = b"127.0.0.1:8121"  # the handshake's Host: the site is http://127.0.0.1:8121


async def handshake(origin: bytes | None, host: bytes | None = SITE_HOST, *, scheme: str = "ws",
                    headers: list[tuple[bytes, bytes]] = ()) -> bool:
    """Whether a chat handshake with this Origin and Host gets through the real WebSocket stack.

    Anonymous visitors are allowed, so a handshake past the Origin check is accepted and only then refused (4401)
    if it does not sign in: `connected` is True exactly when the Origin check let it through."""
    all_headers = [*headers]
    if origin is not None:
        all_headers.append((b"origin", origin))
    if host is not None:
        all_headers.append((b"host", host))
    comm = WebsocketCommunicator(websocket_application, "/ws/chat/", headers=all_headers)
    comm.scope["scheme"] = scheme  # the scope is the one the application instance was given
    connected, _ = await comm.connect()
    if connected:
        await comm.disconnect()
    return connected


@pytest.fixture(autouse=True)
def _site(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost", "chat.example.com"]
    settings.CHAT_ALLOWED_ORIGINS = []
    settings.CHAT_ALLOW_ANONYMOUS = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


async def test_the_sites_own_origin_is_accepted():
    assert await handshake(b"http://127.0.0.1:8121")


@pytest.mark.parametrize(
    ("origin", "mismatch"),
    [
        (b"https://127.0.0.1:8121", "scheme"),
        (b"https://127.0.0.1", "scheme and port (the issue's case)"),
        (b"http://127.0.0.1:9999", "port (the issue's case)"),
        (b"http://127.0.0.1", "port (80 is not 8121)"),
        (b"http://localhost:8121", "host (localhost is an allowed host, but not this handshake's)"),
        (b"http://evil.example:8121", "host"),
    ],
)
async def test_an_origin_differing_in_scheme_host_or_port_is_refused(origin, mismatch):
    assert not await handshake(origin), mismatch


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (b"http://localhost", b"localhost:80"),  # default ports are the same port
        (b"http://localhost:80", b"localhost"),
        (b"HTTP://LocalHost", b"localhost"),  # scheme and host are case-insensitive
        (b"http://[::1]:8121", b"[::1]:8121"),
    ],
)
async def test_default_ports_and_case_are_normalised(settings, origin, host):
    settings.ALLOWED_HOSTS = ["localhost", "[::1]"]
    assert await handshake(origin, host)


async def test_a_handshake_without_origin_or_with_a_null_or_malformed_one_is_refused():
    assert not await handshake(None)  # as before: our own non-browser clients send the site's origin
    for origin in (b"null", b"127.0.0.1:8121", b"http://127.0.0.1:99999", b"ftp://127.0.0.1:8121",
                   b"http://user@127.0.0.1:8121", b"http://127.0.0.1:8121/path"):
        assert not await handshake(origin), origin


async def test_a_host_outside_allowed_hosts_is_not_our_own_origin():
    """DNS rebinding: the attacker's name resolves to us, so Origin and Host agree; ALLOWED_HOSTS does not."""
    assert not await handshake(b"http://evil.example:8121", b"evil.example:8121")
    assert not await handshake(b"http://127.0.0.1:8121", None)  # no Host: no own origin to compare with


async def test_wss_and_a_tls_proxy_make_the_own_origin_https():
    assert await handshake(b"https://127.0.0.1:8121", scheme="wss")
    assert not await handshake(b"http://127.0.0.1:8121", scheme="wss")
    # Behind nginx (Host without port, X-Forwarded-Proto: https): the public origin is https://chat.example.com.
    proxied = [(b"x-forwarded-proto", b"https")]
    assert await handshake(b"https://chat.example.com", b"chat.example.com", headers=proxied)
    assert not await handshake(b"http://chat.example.com", b"chat.example.com", headers=proxied)
    assert not await handshake(b"https://chat.example.com", b"chat.example.com")  # plain http without the proxy


async def test_the_proxy_header_is_ignored_unless_configured(settings):
    settings.SECURE_PROXY_SSL_HEADER = None
    proxied = [(b"x-forwarded-proto", b"https")]
    assert not await handshake(b"https://chat.example.com", b"chat.example.com", headers=proxied)
    assert await handshake(b"http://chat.example.com", b"chat.example.com", headers=proxied)


async def test_listed_origins_are_accepted_exactly(settings):
    settings.CHAT_ALLOWED_ORIGINS = ["https://shop.example", "https://*.brand.example:8443"]
    assert await handshake(b"https://shop.example")
    assert await handshake(b"https://shop.example:443")
    assert not await handshake(b"http://shop.example")  # scheme
    assert not await handshake(b"https://shop.example:8443")  # port
    assert not await handshake(b"https://www.shop.example")  # host: no wildcard given
    assert not await handshake(b"https://shop.example.evil")  # host
    assert await handshake(b"https://eu.brand.example:8443")
    assert await handshake(b"https://brand.example:8443")
    assert not await handshake(b"https://eu.brand.example")  # port
    assert not await handshake(b"https://evilbrand.example:8443")  # not a subdomain


def test_a_malformed_allowed_origin_stops_the_node_at_start(settings):
    settings.CHAT_ALLOWED_ORIGINS = ["shop.example"]
    with pytest.raises(ImproperlyConfigured, match="shop.example"):
        StrictOriginValidator(websocket_application)


async def test_a_refused_socket_never_reaches_sign_in_or_the_consumer(settings):
    """Refused like Channels refused it: closed before accept (Daphne answers 403), nothing sent."""
    comm = WebsocketCommunicator(websocket_application, "/ws/chat/",
                                 headers=[(b"origin", b"http://127.0.0.1:9999"), (b"host", SITE_HOST)])
    connected, code = await comm.connect()
    assert not connected and code in (None, 1000)
    assert await comm.receive_nothing(0.2)


def test_a_real_node_compares_scheme_host_and_port(daphne_server):
    """The issue's attack against a real Daphne node on http://127.0.0.1:PORT."""
    node = daphne_server()
    get_user_model().objects.create_user("olga", password="pw-olga-123")
    token = get_token(node, "olga", "pw-olga-123")
    url = node.url.replace("http://", "ws://") + "/ws/chat/"
    auth = {"Authorization": f"Bearer {token}"}

    async def status(origin: str | None) -> int:
        try:
            async with ws_connect(url, additional_headers=auth, origin=origin) as ws:
                await ws.send(json.dumps({"type": "ping", "t": 1}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 30)) == {"type": "pong", "t": 1}
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def attempts() -> dict[str | None, int]:
        origins = [node.url, "http://127.0.0.1:9999", "https://127.0.0.1", f"https://127.0.0.1:{node.port}",
                   f"http://localhost:{node.port}", None]
        return {origin: await status(origin) for origin in origins}

    assert asyncio.run(attempts()) == {
        node.url: 101,
        "http://127.0.0.1:9999": 403,
        "https://127.0.0.1": 403,
        f"https://127.0.0.1:{node.port}": 403,
        f"http://localhost:{node.port}": 403,
        None: 403,
    }
