"""Bearer tokens for clients that are not browsers: issuing (POST /api/token/) and checking (WebSocket handshake).

Tokens are short-lived HS256 JWTs signed with SECRET_KEY; a socket checks its token once, at the handshake.
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import jwt
from channels.auth import AuthMiddleware, get_user
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db.models.functions import Coalesce
from django.utils.crypto import constant_time_compare

from chatsite import db_threads
from chatsite.handshakes import refuse_handshake
from conversations import revocation, visitors

ALGORITHM = "HS256"
T = TypeVar("T")


class InvalidToken(Exception):
    """The token is malformed, forged, expired or names an inactive/unknown user."""


def issue_token(user) -> tuple[str, int]:
    """A signed access token for ``user`` and its lifetime in seconds."""
    ttl = settings.API_TOKEN_TTL_SECONDS
    now = int(time.time())
    # ``ver``: what a password change or "sign out everywhere" invalidates (conversations/revocation.py).
    ver = revocation.token_version(user, revocation.token_generation(user))
    payload = {"sub": str(user.pk), "iat": now, "exp": now + ttl, "typ": "access", "ver": ver}
    return jwt.encode(payload, settings.SECRET_KEY, algorithm=ALGORITHM), ttl


#: ``sub`` as ``issue_token`` writes it: a user's primary key in plain ASCII digits, within a 64-bit integer.
_SUBJECT = re.compile(r"[1-9][0-9]{0,18}")


def _subject_pk(payload: dict) -> int:
    """The user id a verified token names. Why checked here: a validly signed token with ``sub`` "abc", "1.5",
    "٣" or 2**64 made the ORM raise, and the handshake ended in HTTP 500 instead of 4401."""
    sub = payload.get("sub")
    if not isinstance(sub, str) or not _SUBJECT.fullmatch(sub) or int(sub) >= 2**63:
        raise InvalidToken("The token is not valid.")
    return int(sub)


def user_for_token(token: str):
    """The active user a token belongs to, or InvalidToken with a reason fit to show the client."""
    try:
        payload = jwt.decode(
            token, settings.SECRET_KEY, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The token has expired; get a new one from POST /api/token/.") from None
    except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError, RecursionError):
        # PyJWT turns most malformed input into InvalidTokenError; the rest (a claims object nested thousands
        # deep, a number too large for int()) must not end the handshake in a 500 either.
        raise InvalidToken("The token is not valid.") from None
    if not isinstance(payload, dict) or payload.get("typ") != "access":
        raise InvalidToken("The token is not an access token.")
    user = (
        get_user_model().objects.filter(pk=_subject_pk(payload), is_active=True)
        .annotate(token_generation_now=Coalesce("token_generation__generation", 0))
        .first()
    )
    if user is None:
        raise InvalidToken("The token's user does not exist or is inactive.")
    ver = payload.get("ver")
    if not isinstance(ver, str) or not constant_time_compare(
        ver, revocation.token_version(user, user.token_generation_now)
    ):
        raise InvalidToken("The token was revoked (password change or sign-out everywhere); get a new one.")
    user.verified_token_version = ver  # a socket re-checks it in every action (access.ensure_may_act)
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


class LookupLane:
    """The handshakes' own lane to the database (``CHAT_HANDSHAKE_THREADS`` threads), entered through a line kept
    on the event loop.

    Why its own lane: a sign-in lookup must not queue behind the questions and console rows on the thread every
    socket's ORM calls share — under a burst of 2 000 customers that thread was two-thirds busy with asks.
    Why the line is on the loop: a handshake that has waited past ``CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS`` is
    refused (4013) at its deadline, without a hop to a thread; when the deadline was checked on the lane's
    thread, expired handshakes still took their turn behind real lookups (200 × ~77 ms ≈ 15 s) and Daphne
    dropped the whole line without an answer.
    """

    def __init__(self) -> None:
        self.pool = db_threads.Pool("handshake", lambda: settings.CHAT_HANDSHAKE_THREADS)
        self._turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _turn(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = asyncio.Semaphore(max(1, settings.CHAT_HANDSHAKE_THREADS))
        return turn

    async def run(self, started: float, lookup: Callable[..., T], *args: Any) -> T:
        """``lookup(*args)`` on the lane, or ``HandshakeTooLate`` the moment the handshake (arrived at
        ``started``, ``time.monotonic()``) has waited past the deadline without its turn, however long the lane
        stays busy."""
        turn = self._turn()
        remaining = settings.CHAT_HANDSHAKE_LOOKUP_DEADLINE_SECONDS - (time.monotonic() - started)
        if remaining <= 0:
            raise HandshakeTooLate
        try:
            async with asyncio.timeout(remaining):
                await turn.acquire()
        except TimeoutError:
            raise HandshakeTooLate from None
        try:
            return await self.pool.run(lookup, *args)
        finally:
            turn.release()

    def close_connections(self) -> None:
        self.pool.close_connections()


LOOKUPS = LookupLane()


class TokenOrSessionAuthMiddleware:
    """Channels middleware: ``scope["user"]`` is the bearer token's user when the handshake carries
    ``Authorization: Bearer …`` (other clients), else the session's (browsers; Channels' ``AuthMiddleware``).

    A widget's handshake offers a visitor token as a subprotocol instead (``scope["visitor"]``,
    conversations/visitors.py); an invalid one is refused like an invalid bearer token.

    One database call per handshake either way: the session user is not looked up for a token's handshake
    (that lookup queued on the database thread every socket shares, per handshake, in a connection burst). An
    invalid token leaves the socket anonymous with ``scope["auth_error"]`` set, and the consumer refuses it
    (close 4401). A handshake whose turn comes too late is closed with 4013 (``LookupLane``). Sits inside
    Channels' ``SessionMiddlewareStack``.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.session_auth = AuthMiddleware(app)

    async def __call__(self, scope, receive, send):
        started = time.monotonic()
        token = bearer_token(scope)
        visitor_token = visitors.subprotocol_token(scope)
        scope = dict(scope)
        try:
            if visitor_token is not None:  # the widget (conversations/visitors.py): no cookie is read
                scope["user"] = AnonymousUser()
                try:
                    address = visitors.scope_address(scope)
                    scope["visitor"] = await LOOKUPS.run(started, visitors.resolve, visitor_token, address)
                except visitors.Refused:
                    scope["auth_error"] = "The visitor token is not valid here any more; reload the widget."
            elif token is None:
                self.session_auth.populate_scope(scope)
                scope["user"]._wrapped = await LOOKUPS.run(started, get_user.func, scope)
            else:
                try:
                    scope["user"] = await LOOKUPS.run(started, user_for_token, token)
                except InvalidToken as exc:
                    scope["user"] = AnonymousUser()
                    scope["auth_error"] = str(exc)
        except HandshakeTooLate:
            await refuse_handshake(receive, send)
            return None
        return await self.app(scope, receive, send)
