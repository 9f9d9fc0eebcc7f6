"""Bearer tokens for clients that are not browsers: issuing (POST /api/token/) and checking (WebSocket handshake).

Tokens are short-lived HS256 JWTs signed with SECRET_KEY; a socket checks its token once, at the handshake.
"""

from __future__ import annotations

import time

import jwt
from channels.auth import AuthMiddleware, get_user
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser

from chatsite.handshakes import refuse_handshake

ALGORITHM = "HS256"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or names an inactive/unknown user."""


def issue_token(user) -> tuple[str, int]:
    """A signed access token for ``user`` and its lifetime in seconds."""
    ttl = settings.API_TOKEN_TTL_SECONDS
    now = int(time.time())
    payload = {"sub": str(user.pk), "iat": now, "exp": now + ttl, "typ": "access"}
    return jwt.encode(payload, settings.SECRET_KEY, algorithm=ALGORITHM), ttl


def user_for_token(token: str):
    """The active user a token belongs to, or InvalidToken with a reason fit to show the client."""
    try:
        payload = jwt.decode(
            token, settings.SECRET_KEY, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The token has expired; get a new one from POST /api/token/.") from None
    except jwt.InvalidTokenError:
        raise InvalidToken("The token is not valid.") from None
    if payload.get("typ") != "access":
        raise InvalidToken("The token is not an access token.")
    user = get_user_model().objects.filter(pk=payload["sub"], is_active=True).first()
    if user is None:
        raise InvalidToken("The token's user does not exist or is inactive.")
    return user


def bearer_token(scope: dict) -> str | None:
    """The token in an ``Authorization: Bearer …`` handshake header, if any."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class HandshakeTooLate(Exception):
    """The handshake waited so long for its turn that Daphne's connect timeout would drop it anyway."""


def _unless_late(started: float, lookup, *args):
    """``lookup(*args)``, unless the handshake already waited past ``CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS`` for
    the database thread: then it is refused (4013) without the query, and the client reconnects. Without this, a
    burst's oldest handshakes were looked up after Daphne had dropped them, and every later one waited longer."""
    if time.monotonic() - started > settings.CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS:
        raise HandshakeTooLate
    return lookup(*args)


class TokenOrSessionAuthMiddleware:
    """Channels middleware: ``scope["user"]`` is the bearer token's user when the handshake carries
    ``Authorization: Bearer …`` (other clients), else the session's (browsers; Channels' ``AuthMiddleware``).

    One database call per handshake either way: the session user is not looked up for a token's handshake
    (that lookup queued on the database thread every socket shares, per handshake, in a connection burst). An
    invalid token leaves the socket anonymous with ``scope["auth_error"]`` set, and the consumer refuses it
    (close 4401). A handshake whose turn comes too late is closed with 4013 (``_unless_late``). Sits inside
    Channels' ``SessionMiddlewareStack``.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.session_auth = AuthMiddleware(app)

    async def __call__(self, scope, receive, send):
        started = time.monotonic()
        token = bearer_token(scope)
        scope = dict(scope)
        try:
            if token is None:
                self.session_auth.populate_scope(scope)
                scope["user"]._wrapped = await database_sync_to_async(_unless_late)(started, get_user.func, scope)
            else:
                try:
                    scope["user"] = await database_sync_to_async(_unless_late)(started, user_for_token, token)
                except InvalidToken as exc:
                    scope["user"] = AnonymousUser()
                    scope["auth_error"] = str(exc)
        except HandshakeTooLate:
            await refuse_handshake(receive, send)
            return None
        return await self.app(scope, receive, send)
