"""The frames a staff console socket (``/ws/console/``) sends, and their registry ``CONSOLE``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings

from conversations.protocol import names
from conversations.protocol.chat_frames import ConversationFrame, Ping, Typing
from conversations.protocol.fields import Fields
from conversations.protocol.registry import ClientFrame, Registry


class Watch(ConversationFrame):
    """Show this conversation in the console: its live frames, traces, notes and who else is looking."""

    TYPE = names.WATCH


class Unwatch(ConversationFrame):
    """Stop showing it (presence tells the other staff)."""

    TYPE = names.UNWATCH


class TakeOver(ConversationFrame):
    """Hold the conversation: the bot stops and only this staff member answers. Only one can hold it."""

    TYPE = names.TAKE_OVER


class HandBack(ConversationFrame):
    """Give the conversation back to the assistant."""

    TYPE = names.HAND_BACK


class Resolve(ConversationFrame):
    """Close it; a new customer question reopens it for the assistant."""

    TYPE = names.RESOLVE


@dataclass(frozen=True)
class AgentMessage(ClientFrame):
    """A reply to the customer. ``id`` is the idempotency key: the same id again never sends twice."""

    TYPE = names.AGENT_MESSAGE
    conversation: uuid.UUID
    id: str
    text: str

    @classmethod
    def from_fields(cls, fields: Fields) -> AgentMessage:
        id = fields.client_id()
        return cls(
            conversation=fields.uuid("conversation"),
            id=id,
            text=fields.text("text", settings.CHAT_MAX_QUESTION_CHARS),
        )


@dataclass(frozen=True)
class Note(ClientFrame):
    """An internal note: staff only, never sent to the customer."""

    TYPE = names.NOTE
    conversation: uuid.UUID
    text: str

    @classmethod
    def from_fields(cls, fields: Fields) -> Note:
        return cls(conversation=fields.uuid("conversation"), text=fields.text("text", names.MAX_NOTE_CHARS))


@dataclass(frozen=True)
class Nudge(ClientFrame):
    """A push to get the customer's attention ("Are you still there?"); an empty text sends the default one."""

    TYPE = names.NUDGE
    conversation: uuid.UUID
    text: str = ""

    @classmethod
    def from_fields(cls, fields: Fields) -> Nudge:
        return cls(
            conversation=fields.uuid("conversation"),
            text=fields.text("text", names.MAX_NUDGE_CHARS, required=False),
        )


@dataclass(frozen=True)
class Assign(ClientFrame):
    """Assign the conversation to a staff member (``agent``: their user id), or to nobody (``agent`` null or absent).
    Who may, and what it does to a conversation someone holds: conversations/assignment.py."""

    TYPE = names.ASSIGN
    conversation: uuid.UUID
    agent: int | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> Assign:
        conversation = fields.uuid("conversation")
        if fields.data.get("agent") is None:
            return cls(conversation=conversation)
        agent = fields.integer("agent", default=0, minimum=1, maximum=names.MAX_SEQ, what="a staff member's id")
        return cls(conversation=conversation, agent=agent)


CONSOLE = Registry(
    "/ws/console/", (Watch, Unwatch, TakeOver, HandBack, Resolve, AgentMessage, Note, Nudge, Assign, Typing, Ping)
)
