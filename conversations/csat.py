"""Ending a conversation and CSAT: what a customer does when they are done (docs/analytics.md, "CSAT").

The chat page and the widget ask for a 1–5 rating (and an optional comment) once the conversation has ended —
the customer pressed "End chat", or staff resolved it in the console — for the assistant's conversations and
people's alike. Actions in the style of conversations/chat.py: the consumer parses the frame and calls them;
access is checked where the action happens (``ensure_may_act`` in the transaction), and the conversation's
``conversation`` frame, which carries ``ended`` and ``rating``, goes to every socket showing it.
"""

from __future__ import annotations

import uuid

from channels.db import database_sync_to_async
from django.db import transaction

from conversations import chat, inbox, outcomes, protocol, streaming
from conversations.access import Requester, ensure_may_act
from conversations.models import Conversation, ConversationRating, Message

ENDED_TEXT = "The customer ended the conversation."


def _locked(requester: Requester, conversation_id: uuid.UUID, id: str = "") -> Conversation:
    ensure_may_act(requester)  # AccessRevoked: nothing changes, the socket closes (4001)
    conversation = requester.conversations().select_for_update().filter(pk=conversation_id).first()
    if conversation is None:
        raise protocol.ProtocolError(protocol.NOT_FOUND, f"No conversation {conversation_id}.", id=id or None)
    return conversation


def _end(requester: Requester, conversation_id: uuid.UUID) -> tuple[Conversation, bool]:
    with transaction.atomic():
        conversation = _locked(requester, conversation_id)
        if conversation.ended_at is not None:
            return conversation, False  # already ended: the frame is sent again, nothing changes
        ended = outcomes.end(conversation, outcomes.Ending.CUSTOMER_ENDED)
        conversation.status = Conversation.Status.RESOLVED
        conversation.assigned_agent = None
        conversation.waiting_since = None
        conversation.save(update_fields=["status", "assigned_agent", "waiting_since", "updated_at", *ended])
        Message.objects.create(conversation=conversation, role=Message.Role.SYSTEM, text=ENDED_TEXT)
        return conversation, True


async def end_conversation(requester: Requester, conversation_id: uuid.UUID) -> None:
    """The customer is done: the conversation is resolved and gets its outcome now; a new question opens it again
    (``reopened`` within ``OUTCOME_WINDOW_SECONDS``). Every socket showing it, and every console list, is told."""
    conversation, changed = await database_sync_to_async(_end)(requester, conversation_id)
    await streaming.publish(conversation.pk, await chat.conversation_frame(conversation))
    if changed:
        await inbox.publish_item(conversation.pk)


def _rate(requester: Requester, frame: protocol.Rate) -> Conversation:
    with transaction.atomic():
        conversation = _locked(requester, frame.conversation, frame.id)
        if conversation.ended_at is None:
            raise protocol.ProtocolError(
                protocol.FORBIDDEN, "A conversation is rated once it has ended (End chat, or resolved by our team).",
                id=frame.id or None,
            )
        ConversationRating.objects.update_or_create(
            conversation=conversation,
            defaults={"score": frame.score, "comment": frame.comment,
                      "by_person": conversation.first_agent_reply_at is not None},
        )  # fmt: skip
        return conversation


async def rate(requester: Requester, frame: protocol.Rate) -> None:
    """Save (or replace) the customer's CSAT of an ended conversation; ``by_person`` records whether a person had
    replied, so the insights compare the assistant's conversations with people's."""
    conversation = await database_sync_to_async(_rate)(requester, frame)
    await streaming.publish(conversation.pk, await chat.conversation_frame(conversation))
