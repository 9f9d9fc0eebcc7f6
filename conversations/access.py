"""Who is asking, and what they may see: the only place that scopes conversations to their owner.

Every lookup of a conversation or message named by a client goes through here, so someone else's data is
indistinguishable from data that does not exist (``not_found``), never leaked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.db.models import F, QuerySet, Subquery
from django.db.models.functions import Coalesce, Now
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import get_supported_language_variant
from django.utils.translation.trans_real import parse_accept_lang_header

from chatsite.sign_in import normalised_address
from conversations import protocol, revocation, visitors
from conversations.models import Conversation, Message, Site


@dataclass(frozen=True)
class SignIn:
    """What a signed-in socket's handshake proved, kept so that every action can check it still holds
    (``ensure_may_act``): its session, or its bearer token's ``ver``, and when."""

    session_key: str = ""  # a browser, signed in with this session
    token_version: str = ""  # another client, with a bearer token carrying this ``ver``
    at: datetime | None = None  # the handshake: a "sign out everywhere" after it ends this socket

    @property
    def session_or_token(self) -> str:
        """What a logout's revocation event names to close this socket: its session key, or ``"token"``."""
        return "token" if self.token_version else self.session_key


@dataclass(frozen=True)
class Requester:
    """The identity behind a socket or request: a signed-in user, or an anonymous visitor's session key."""

    user_id: int | None = None
    session_key: str = ""
    #: The language the client's Accept-Language prefers among the site's (``settings.LANGUAGES``): answers
    #: use it when a question's own language cannot be told (a bare "E42").
    language: str = ""
    #: A socket's sign-in, re-checked by every action; None for an anonymous visitor and for an HTTP request
    #: (Django checks the session of every request itself).
    sign_in: SignIn | None = None
    #: A widget visitor or verified customer: the site and host page they chat from (conversations/visitors.py).
    visitor: visitors.Visitor | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.user_id is None

    def conversations(self) -> QuerySet[Conversation]:
        """This requester's conversations (the owner list: newest activity first)."""
        if self.user_id is not None:
            return Conversation.objects.filter(owner_id=self.user_id)
        if self.session_key:
            return Conversation.objects.filter(owner__isnull=True, anonymous_session_key=self.session_key)
        return Conversation.objects.none()

    def messages(self) -> QuerySet[Message]:
        return Message.objects.filter(conversation__in=self.conversations())

    def owner_fields(self) -> dict:
        """Fields that make a new conversation belong to this requester."""
        if self.user_id is not None:
            return {"owner_id": self.user_id}
        return {"owner": None, "anonymous_session_key": self.session_key}

    def conversation_fields(self) -> dict:
        """Fields of a new conversation of this requester: its owner, and for the widget its site and host page."""
        if self.visitor is None:
            return self.owner_fields()
        return {**self.owner_fields(), "site_id": self.visitor.site_id, "page_url": self.visitor.page_url}


def requester_from_scope(scope: dict) -> Requester | None:
    """The requester of a WebSocket scope, or None when the handshake must be refused (close 4401)."""
    language = scope_language(scope)
    found = scope.get("visitor")
    if isinstance(found, visitors.VisitorToken):  # a widget socket (conversations/auth.py resolved its token)
        return Requester(user_id=found.user_id, session_key=found.session_key, language=language, visitor=found.visitor)
    user = scope.get("user")
    if user is not None and user.is_authenticated and user.is_active:
        return Requester(user_id=user.pk, language=language, sign_in=_sign_in(scope, user))
    if settings.CHAT_ALLOW_ANONYMOUS and not scope.get("auth_error"):
        session = scope.get("session")
        key = getattr(session, "session_key", None) if session is not None else None
        if key:
            return Requester(session_key=key, language=language)
    return None


def _sign_in(scope: dict, user) -> SignIn:
    """How the handshake signed in: a bearer token (``conversations.auth.user_for_token`` leaves its verified
    ``ver`` on the user), else the session."""
    version = getattr(user, "verified_token_version", "")
    if version:
        return SignIn(token_version=version, at=timezone.now())
    return SignIn(session_key=getattr(scope.get("session"), "session_key", None) or "", at=timezone.now())


def scope_language(scope: dict) -> str:
    """The site language a WebSocket handshake's Accept-Language prefers ("" if none of ours)."""
    header = dict(scope.get("headers") or []).get(b"accept-language", b"").decode("latin-1")
    for code, _quality in parse_accept_lang_header(header[:500]):
        try:
            return get_supported_language_variant(code)
        except LookupError:
            continue
    return ""


def requester_from_request(request: HttpRequest) -> Requester | None:
    """The requester of an HTTP request (for the chat page), or None if it must sign in. A widget's request
    (``Authorization: Visitor <token>``) is its visitor's, whatever the cookies say; a bad token is None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme == "Visitor":
        try:
            found = visitors.resolve(token.strip(), normalised_address(request.META.get("REMOTE_ADDR", "")))
        except visitors.Refused:
            return None
        return Requester(user_id=found.user_id, session_key=found.session_key, visitor=found.visitor)
    if request.user.is_authenticated:
        return Requester(user_id=request.user.pk)
    if settings.CHAT_ALLOW_ANONYMOUS:
        return Requester(session_key=ensure_session(request))
    return None


def ensure_session(request: HttpRequest) -> str:
    """Make sure the visitor has a saved session (anonymous chats are bound to its key) and return the key.

    Call it from the chat page view so the WebSocket handshake, which only reads cookies, finds the session.
    """
    if not request.session.session_key:
        request.session["chat_anonymous"] = True
        request.session.save()
    return request.session.session_key


def get_conversation(requester: Requester, conversation_id: uuid.UUID) -> Conversation | None:
    """The requester's conversation, once they may still act (``ensure_may_act``: ``AccessRevoked``)."""
    ensure_may_act(requester)
    return requester.conversations().filter(pk=conversation_id).first()


def get_message(requester: Requester, message_id: uuid.UUID) -> Message | None:
    """A message of the requester's conversations, once they may still act (``AccessRevoked`` otherwise)."""
    ensure_may_act(requester)
    return requester.messages().select_related("conversation").filter(pk=message_id).first()


# --- every action: may this socket's user still act? (the close of a revoked socket can be lost: conversations/revocation.py) -------------------------------------------------------
class AccessRevoked(Exception):
    """The socket's user may no longer act (``ensure_may_act``): the consumer closes the socket as ``user.revoked``
    does, with the ``reason`` a new handshake's refusal would have."""

    def __init__(self, reason: str) -> None:
        assert reason in protocol.REVOKED_REASONS, reason
        super().__init__(reason)
        self.reason = reason


def ensure_may_act(requester: Requester, *, staff: bool = False) -> None:
    """Raise ``AccessRevoked`` unless the requester may still act as their socket's handshake allowed: the user is
    active (and staff, with ``staff``); a socket signed in with a session still has that session, signed in as the
    user with their current password (Django's session auth hash); one signed in with a token still has its ``ver``
    (no password change, no "sign out everywhere" since).

    Why every action calls it, in its own transaction: the close of a revoked socket can be lost (module docstring)
    and the socket must not act meanwhile. One SELECT (the user row, its token generation and the session row);
    nothing for an anonymous visitor (nothing to revoke). A widget requester's site must still be on and list their
    host origin (one more SELECT)."""
    if requester.visitor is not None:
        site = Site.objects.filter(pk=requester.visitor.site_id).first()
        if site is None or not site.allows_origin(requester.visitor.origin):
            raise AccessRevoked(protocol.REVOKED_SITE_CLOSED)
    if requester.user_id is None:
        return
    sign_in = requester.sign_in
    users = get_user_model().objects.filter(pk=requester.user_id).annotate(
        generation_now=Coalesce("token_generation__generation", 0), everywhere_at=F("token_generation__revoked_at")
    )
    fields = ["is_active", "is_staff", "password", "generation_now", "everywhere_at"]
    sessions = _session_model()
    if sign_in is not None and sign_in.session_key and sessions is not None:
        alive = sessions.objects.filter(session_key=sign_in.session_key, expire_date__gt=Now())
        users = users.annotate(session_data=Subquery(alive.values("session_data")[:1]))
        fields.append("session_data")
    row = users.values(*fields).first()
    reason = _revoked_because(requester, row, staff)
    if reason is not None:
        raise AccessRevoked(reason)


def _revoked_because(requester: Requester, row: dict | None, staff: bool) -> str | None:
    """Why the requester may act no more (a ``REVOKED_*`` reason), or None."""
    if row is None or not row["is_active"]:
        return protocol.REVOKED_DEACTIVATED
    sign_in = requester.sign_in
    if sign_in is not None:
        if row["everywhere_at"] is not None and sign_in.at is not None and row["everywhere_at"] > sign_in.at:
            return protocol.REVOKED_SIGNED_OUT_EVERYWHERE
        user = get_user_model()(pk=requester.user_id, password=row["password"])
        if sign_in.token_version and not constant_time_compare(
            sign_in.token_version, revocation.token_version(user, row["generation_now"])
        ):
            return protocol.REVOKED_PASSWORD_CHANGED
        if sign_in.session_key:
            session = _session_data(sign_in.session_key, row.get("session_data"))
            if str(session.get(SESSION_KEY)) != str(requester.user_id):
                return protocol.REVOKED_LOGOUT  # the session ended (sign-out, expiry) or is someone else's now
            if not _session_hash_holds(session.get(HASH_SESSION_KEY), user):
                return protocol.REVOKED_PASSWORD_CHANGED
    if staff and not row["is_staff"]:
        return protocol.REVOKED_STAFF_REMOVED
    return None


def _session_store():
    return import_module(settings.SESSION_ENGINE).SessionStore


def _session_model():
    """The session table's model when sessions live in the database (``db``, ``cached_db``), else None."""
    store = _session_store()
    return store.get_model_class() if hasattr(store, "get_model_class") else None


def _session_data(session_key: str, stored: str | None) -> dict:
    """The session's contents: decoded from the row read with the user (database sessions), else loaded from the
    session store (``{}`` once it is gone)."""
    store = _session_store()
    if _session_model() is not None:
        return store().decode(stored) if stored else {}
    return store(session_key).load()


def _session_hash_holds(session_hash: object, user) -> bool:
    """Django's session verification (``django.contrib.auth.get_user``): the session's auth hash is the HMAC of the
    user's current password hash, with ``SECRET_KEY`` or one of ``SECRET_KEY_FALLBACKS``."""
    if not isinstance(session_hash, str) or not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash())


aget_conversation = database_sync_to_async(get_conversation)
aget_message = database_sync_to_async(get_message)
aensure_may_act = database_sync_to_async(ensure_may_act)
