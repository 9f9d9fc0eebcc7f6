"""Assigning a conversation to a staff member: whose it is to answer, shown live on every staff console.

How it relates to taking over (``conversations.console``). ``Conversation.assigned_agent`` is one field with one
meaning: *whose conversation it is*. Taking over sets it to the person and also stops the assistant (status
``agent``: the person *holds* it). Assigning sets it without touching the status:

* a conversation the assistant answers, one waiting for a person or a resolved one: assigning only says who should
  take it — the assistant keeps answering until someone takes it over, and anyone may still take it over (it then
  becomes theirs, as a take-over always did). Assigning to nobody clears it.
* a conversation someone holds: only the holder may assign it, and assigning passes the hold to the colleague
  (they answer from now on; the customer is told who joined, as on a take-over). Assigning a held conversation to
  nobody is refused: hand it back to the assistant instead.
* handing back and resolving clear the assignment, as they always cleared the holder.

Access is checked where it happens, inside the transaction that locks the conversation row: the actor must still
be active staff with a valid sign-in (``console.ensure_staff``; otherwise ``AccessRevoked`` closes their socket),
and the assignee must be an active staff member at that moment (``forbidden`` otherwise).

Told to everyone, on every node, through the channel layer: the staff watching the conversation get ``assigned``
(and ``holder`` when a hold passes) on ``staff.<hex>``, every console's list gets the row (``console`` group).
"""

from __future__ import annotations

import uuid

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from conversations import console, inbox, protocol, streaming
from conversations.access import Requester
from conversations.inbox import display_name, person
from conversations.models import Conversation, Message


def staff_members() -> list[dict]:
    """Every active staff member ({id, name}, by name): whom the console offers to assign a conversation to."""
    users = get_user_model().objects.filter(is_active=True, is_staff=True)
    return sorted((person(user) for user in users), key=lambda p: (p["name"].lower(), p["id"]))


def _assignee(agent_id: int | None):
    if agent_id is None:
        return None
    found = get_user_model().objects.filter(pk=agent_id, is_active=True, is_staff=True).first()
    if found is None:
        raise protocol.ProtocolError(protocol.FORBIDDEN, "Only an active staff member can be assigned a conversation.")
    return found


def _assign(
    conversation_id: uuid.UUID, actor, agent_id: int | None, requester: Requester | None
) -> tuple[Conversation, bool, Message | None]:
    """(conversation, changed, the system notice when a hold passed to the assignee)."""
    with transaction.atomic():
        console.ensure_staff(actor, requester)
        conversation = (
            Conversation.objects.select_for_update(of=("self",)).select_related("assigned_agent")
            .filter(pk=conversation_id).first()
        )
        if conversation is None:
            raise protocol.ProtocolError(protocol.NOT_FOUND, f"No conversation {conversation_id}.")
        assignee = _assignee(agent_id)
        if conversation.assigned_agent_id == agent_id:
            return conversation, False, None  # already so: nobody is told twice
        held = conversation.status == Conversation.Status.AGENT
        if held and conversation.assigned_agent_id != actor.pk:
            holder = display_name(conversation.assigned_agent)
            raise protocol.ProtocolError(
                protocol.CONFLICT, f"{holder} is handling this conversation; only they can pass it to someone else."
            )
        if held and assignee is None:
            raise protocol.ProtocolError(
                protocol.CONFLICT, "You are answering this conversation: hand it back to the assistant instead."
            )
        conversation.assigned_agent = assignee
        fields = ["assigned_agent", "updated_at"]
        notice = None
        if held:
            conversation.taken_over_at = timezone.now()
            fields.append("taken_over_at")
            notice = Message.objects.create(
                conversation=conversation, role=Message.Role.SYSTEM, author=assignee, completed_at=timezone.now(),
                text=f"{display_name(assignee)} from the support team joined the conversation.",
            )
        conversation.save(update_fields=fields)
        return conversation, True, notice


async def assign(
    conversation_id: uuid.UUID, actor, agent_id: int | None, requester: Requester | None = None
) -> Conversation:
    """Assign the conversation to the staff member ``agent_id`` (None: to nobody); rules in the module docstring."""
    conversation, changed, notice = await database_sync_to_async(_assign)(conversation_id, actor, agent_id, requester)
    if not changed:
        return conversation
    assignee = conversation.assigned_agent
    if notice is not None:  # a hold passed: the customer meets the new person, the staff see the new holder
        frame = protocol.agent_joined_frame(conversation.pk, notice.pk, console.public_agent(assignee), notice.text)
        await streaming.publish(conversation.pk, frame)
        holder = protocol.holder_frame(conversation.pk, conversation.status, person(assignee), person(actor),
                                       protocol.ASSIGN)
        await console.publish_staff(conversation.pk, holder)
    await console.publish_staff(conversation.pk, protocol.assigned_frame(conversation.pk, person(assignee), person(actor)))
    await inbox.publish_item(conversation.pk)
    return conversation
