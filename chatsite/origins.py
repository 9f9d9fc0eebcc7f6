"""The WebSocket Origin check: a handshake is let through only when its ``Origin`` is the handshake's own origin or
one listed in ``CHAT_ALLOWED_ORIGINS``, comparing scheme, host and port.

Why not Channels' ``AllowedHostsOriginValidator``: it compares the host name only, so ``http://127.0.0.1:9999``
(any other program on the machine) and ``https://127.0.0.1`` were accepted for a site on ``http://127.0.0.1:8121``.
A browser always sends ``Origin`` on a WebSocket handshake; a handshake without one is refused, as before (our own
non-browser clients, tests/node_client.py and bench/ws_client.py, send the site's origin).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http.request import is_same_domain, split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    """``scheme://host:port``, the port always explicit (``http://a`` is ``http://a:80``), the host lower-case."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Origin | None:
        """The origin ``text`` names (as a browser sends it: no path, no user), or None if it names none."""
        try:
            parts = urlsplit(text.strip())
            port = parts.port
        except ValueError:  # a port out of range or not a number, a bad IPv6 literal
            return None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
            return None
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            return None
        return cls(scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme])


@dataclass(frozen=True)
class AllowedOrigin:
    """An entry of ``CHAT_ALLOWED_ORIGINS``: exact, or ``https://*.example.com`` for example.com and its subdomains
    (as ``CSRF_TRUSTED_ORIGINS`` reads it), same scheme and port either way."""

    origin: Origin
    subdomains: bool

    def admits(self, origin: Origin) -> bool:
        if (origin.scheme, origin.port) != (self.origin.scheme, self.origin.port):
            return False
        if self.subdomains:
            return is_same_domain(origin.host, "." + self.origin.host)
        return origin.host == self.origin.host


@functools.lru_cache(maxsize=8)
def allowed_origins(entries: tuple[str, ...]) -> tuple[AllowedOrigin, ...]:
    """``CHAT_ALLOWED_ORIGINS`` parsed; an entry that is no origin is a configuration error, not silently ignored."""
    parsed = []
    for entry in entries:
        subdomains = "://*." in entry
        origin = Origin.parse(entry.replace("://*.", "://", 1))
        if origin is None:
            raise ImproperlyConfigured(
                f"CHAT_ALLOWED_ORIGINS: {entry!r} is not an origin like https://chat.example.com[:port]."
            )
        parsed.append(AllowedOrigin(origin, subdomains))
    return tuple(parsed)


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin1")
    return None


def handshake_origin(scope: dict) -> Origin | None:
    """The origin the handshake itself was made to: ``ws``/``wss`` (or, when ``SECURE_PROXY_SSL_HEADER`` is set and
    the proxy sent it, what that header says, as Django decides ``request.scheme``), the ``Host`` header (or
    ``X-Forwarded-Host`` with ``USE_X_FORWARDED_HOST``), its port or the scheme's default. None when the host is
    not in ``ALLOWED_HOSTS``: a DNS-rebinding page must not count as our own origin."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        forwarded = _header(scope, meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1"))
        if forwarded is not None:
            scheme = "https" if forwarded.split(",", 1)[0].strip() == secure_value else "http"
    host = _header(scope, b"x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    host = host or _header(scope, b"host")
    if not host:
        return None
    domain, _port = split_domain_port(host)
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = [".localhost", "127.0.0.1", "[::1]"]  # what Django's HttpRequest.get_host() allows
    if not domain or not validate_host(domain, allowed_hosts):
        return None
    return Origin.parse(f"{scheme}://{host}")


def origin_allowed(scope: dict) -> bool:
    """Whether the handshake's ``Origin`` header is its own origin or one of ``CHAT_ALLOWED_ORIGINS``."""
    header = _header(scope, b"origin")
    origin = Origin.parse(header) if header else None
    if origin is None:
        return False
    if origin == handshake_origin(scope):
        return True
    return any(allowed.admits(origin) for allowed in allowed_origins(tuple(settings.CHAT_ALLOWED_ORIGINS)))


class StrictOriginValidator:
    """ASGI middleware on the WebSocket side: a handshake from an origin not allowed (``origin_allowed``) is refused
    the way Channels' validator refused it (closed before accept: Daphne answers the handshake with HTTP 403)."""

    def __init__(self, app) -> None:
        self.app = app
        allowed_origins(tuple(settings.CHAT_ALLOWED_ORIGINS))  # a bad entry stops the node at start, not per socket

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and origin_allowed(scope):
            return await self.app(scope, receive, send)
        return await WebsocketDenier()(scope, receive, send)
