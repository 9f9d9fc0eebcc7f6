"""Who is asking, and what they may see: the only place that scopes conversations to their owner.

Every lookup of a conversation or message named by a client goes through here, so someone else's data is
indistinguishable from data that does not exist (``not_found``), never leaked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import get_supported_language_variant
from django.utils.translation.trans_real import parse_accept_lang_header

from conversations import revocation
from conversations.models import Conversation, Message


@dataclass(frozen=True)
class SignIn:
    """What a signed-in socket's handshake proved, kept so that every action can check it still holds
    (``revocation.ensure_may_act``): its session, or its bearer token's ``ver``, and when."""

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


def requester_from_scope(scope: dict) -> Requester | None:
    """The requester of a WebSocket scope, or None when the handshake must be refused (close 4401)."""
    language = scope_language(scope)
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
    """The requester of an HTTP request (for the chat page), or None if it must sign in."""
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
    """The requester's conversation, once they may still act (``revocation.ensure_may_act``: ``AccessRevoked``)."""
    revocation.ensure_may_act(requester)
    return requester.conversations().filter(pk=conversation_id).first()


def get_message(requester: Requester, message_id: uuid.UUID) -> Message | None:
    """A message of the requester's conversations, once they may still act (``AccessRevoked`` otherwise)."""
    revocation.ensure_may_act(requester)
    return requester.messages().select_related("conversation").filter(pk=message_id).first()


aget_conversation = database_sync_to_async(get_conversation)
aget_message = database_sync_to_async(get_message)
