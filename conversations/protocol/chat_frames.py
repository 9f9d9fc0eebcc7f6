"""The frames a customer's socket (``/ws/chat/``) sends, and their registry ``CHAT``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from conversations.protocol import names
from conversations.protocol.errors import INVALID
from conversations.protocol.fields import Fields
from conversations.protocol.registry import ClientFrame, Registry


@dataclass(frozen=True)
class Ask(ClientFrame):
    """A question. ``id`` is the client's idempotency key: the same id again returns the same ``ack``.

    ``attachments``: images uploaded before (``POST /attachments/``, conversations/attachments.py) sent with it; a
    question with images may have no text."""

    TYPE = names.ASK
    id: str
    text: str
    conversation: uuid.UUID | None = None
    kb: str | None = None
    attachments: tuple[uuid.UUID, ...] = ()

    @classmethod
    def from_fields(cls, fields: Fields) -> Ask:
        id = fields.client_id()
        attachments = fields.uuid_list("attachments", settings.ATTACHMENT_MAX_PER_MESSAGE)
        return cls(
            id=id,
            text=fields.text("text", settings.CHAT_MAX_QUESTION_CHARS, required=not attachments),
            conversation=fields.optional_uuid("conversation"),
            kb=fields.optional_name("kb", "a knowledge base name or slug"),
            attachments=attachments,
        )


@dataclass(frozen=True)
class Cancel(ClientFrame):
    """Stop generating this assistant message (or drop it from the queue); its partial text is kept."""

    TYPE = names.CANCEL
    message: uuid.UUID

    @classmethod
    def from_fields(cls, fields: Fields) -> Cancel:
        return cls(message=fields.uuid("message"))


@dataclass(frozen=True)
class Resume(ClientFrame):
    """Replay every frame of ``message`` with seq > ``after``, then continue live."""

    TYPE = names.RESUME
    message: uuid.UUID
    after: int

    @classmethod
    def from_fields(cls, fields: Fields) -> Resume:
        return cls(
            message=fields.uuid("message"),
            after=fields.integer("after", default=0, minimum=0, maximum=names.MAX_SEQ,
                                 what="the last seq you have; 0 for none"),
        )  # fmt: skip


@dataclass(frozen=True)
class Feedback(ClientFrame):
    """Thumbs up (+1) or down (-1) on an answer; sending again replaces the earlier rating."""

    TYPE = names.FEEDBACK
    message: uuid.UUID
    rating: int
    comment: str = ""

    @classmethod
    def from_fields(cls, fields: Fields) -> Feedback:
        return cls(
            message=fields.uuid("message"),
            rating=fields.choice("rating", (1, -1)),
            comment=fields.text("comment", names.MAX_COMMENT_CHARS, required=False),
        )


@dataclass(frozen=True)
class Regenerate(ClientFrame):
    """Write another version of a finished answer (``message``), beside the earlier ones; the question is not asked
    again. ``id``: optional idempotency key — the same id again gets the same ``answer_version``, never a second
    version (conversations/answer_versions.py)."""

    TYPE = names.REGENERATE
    message: uuid.UUID
    id: str = ""

    @classmethod
    def from_fields(cls, fields: Fields) -> Regenerate:
        id = fields.client_id() if fields.data.get("id") is not None else ""
        return cls(message=fields.uuid("message"), id=id)


@dataclass(frozen=True)
class ConversationFrame(ClientFrame):
    """A frame that names only a conversation; the subclass (its ``TYPE``) says what to do with it."""

    conversation: uuid.UUID

    @classmethod
    def from_fields(cls, fields: Fields) -> ConversationFrame:
        return cls(conversation=fields.uuid("conversation"))


class Handoff(ConversationFrame):
    """The customer asks for a person: the conversation goes to ``waiting_for_agent``."""

    TYPE = names.HANDOFF


class End(ConversationFrame):
    """The customer ends the conversation ("End chat"): it is resolved, and its ``conversation`` frame says
    ``ended`` (the page asks for a CSAT rating)."""

    TYPE = names.END


@dataclass(frozen=True)
class Rate(ClientFrame):
    """CSAT: 1–5 for an ended conversation, with an optional comment; rating again replaces it. ``id`` (optional)
    is echoed in an error."""

    TYPE = names.RATE
    conversation: uuid.UUID
    score: int
    comment: str = ""
    id: str = ""

    @classmethod
    def from_fields(cls, fields: Fields) -> Rate:
        return cls(
            id=fields.client_id() if fields.data.get("id") is not None else "",
            conversation=fields.uuid("conversation"),
            score=fields.choice("score", (1, 2, 3, 4, 5)),
            comment=fields.text("comment", names.MAX_COMMENT_CHARS, required=False),
        )


class Join(ConversationFrame):
    """Show this conversation on this socket: receive its live frames (other tabs, agents)."""

    TYPE = names.JOIN


@dataclass(frozen=True)
class LeaveMessage(ClientFrame):
    """Nobody can answer now: the customer leaves an e-mail address, and a staff reply is e-mailed there too while
    they are away ("customer offline", conversations/leave_message.py). ``id`` is echoed in an error."""

    TYPE = names.LEAVE_MESSAGE
    conversation: uuid.UUID
    id: str
    email: str

    @classmethod
    def from_fields(cls, fields: Fields) -> LeaveMessage:
        id = fields.client_id()
        email = fields.text("email", names.MAX_EMAIL_CHARS)
        try:
            validate_email(email)
        except ValidationError:
            raise fields.error(INVALID, "email", f"is not an e-mail address: {email[:60]!r}. Nothing was saved.") from None
        return cls(conversation=fields.uuid("conversation"), id=id, email=email)


@dataclass(frozen=True)
class Ping(ClientFrame):
    """App-level heartbeat (both sockets); ``t`` is echoed back in ``pong``."""

    TYPE = names.PING
    t: Any = None

    @classmethod
    def from_fields(cls, fields: Fields) -> Ping:
        return cls(t=fields.echo("t"))


@dataclass(frozen=True)
class Typing(ClientFrame):
    """Both sockets: the customer (or, on the console, a staff member) is typing in ``conversation`` — ``typing``
    false: stopped (the box was emptied). Relayed to the other side only, never stored (conversations/typing_indicators.py)."""

    TYPE = names.TYPING
    conversation: uuid.UUID
    typing: bool = True

    @classmethod
    def from_fields(cls, fields: Fields) -> Typing:
        return cls(conversation=fields.uuid("conversation"), typing=fields.flag("typing", default=True))


CHAT = Registry("/ws/chat/", (Ask, Cancel, Resume, Feedback, Regenerate, Handoff, End, Rate, Join, LeaveMessage, Typing,
                                  Ping))  # fmt: skip
