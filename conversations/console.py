"""What a support person can do with a conversation: take it over, reply, hand it back, resolve, note, nudge.

Plain domain actions, independent of the transport (the console socket in ``conversations.console_consumer``
calls them). Each one changes the database first — in a transaction that locks the conversation row, so two
staff members racing for the same conversation are serialised and only one holds it — and then tells everyone:
the customer's sockets through the conversation group ``conv.<hex>`` (the same group the answer streams go to),
the staff watching it through ``staff.<hex>`` (notes, holder changes: never sent to the customer), and every
console's list through ``conversations.inbox``.
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from conversations import chat, groups, inbox, leave_message, outcomes, protocol, streaming
from conversations.access import Requester, ensure_may_act
from conversations.answer_versions import counts as version_counts
from conversations.inbox import display_name, person
from conversations.models import Conversation, InternalNote, Message

DEFAULT_NUDGE = "Are you still there? {name} from our support team is waiting for your reply."


async def publish_staff(conversation_id: uuid.UUID | str, frame: dict[str, Any]) -> None:
    await get_channel_layer().group_send(groups.staff(conversation_id), {"type": groups.STAFF_FRAME, "frame": frame})


def public_agent(agent) -> dict[str, str]:
    """What the customer learns about the person: the name they would introduce themselves with."""
    return {"name": display_name(agent)}


def _locked(conversation_id: uuid.UUID) -> Conversation:
    conversation = (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("assigned_agent")
        .filter(pk=conversation_id)
        .first()
    )
    if conversation is None:
        raise protocol.ProtocolError(protocol.NOT_FOUND, f"No conversation {conversation_id}.")
    return conversation


def ensure_staff(agent, requester: Requester | None = None) -> None:
    """Staff rights and the socket's sign-in re-read inside the action's transaction, in one SELECT
    (``access.ensure_may_act``): a console socket whose revocation event was lost (``conversations/revocation.py``)
    cannot act once the person is no longer active staff, signed out or changed their password — ``AccessRevoked``,
    and the socket closes (4001) with the reason. ``requester``: the socket's, with its sign-in (without: the user
    row only)."""
    ensure_may_act(requester or Requester(user_id=agent.pk), staff=True)


aensure_staff = database_sync_to_async(ensure_staff)


def _held_by_other(conversation: Conversation, agent) -> bool:
    return (
        conversation.status == Conversation.Status.AGENT
        and conversation.assigned_agent_id is not None
        and conversation.assigned_agent_id != agent.pk
    )


def _refuse_if_held_by_other(conversation: Conversation, agent, action: str) -> None:
    if _held_by_other(conversation, agent):
        holder = display_name(conversation.assigned_agent)
        raise protocol.ProtocolError(
            protocol.CONFLICT,
            f"{holder} is handling this conversation; only they can {action} (ask them to hand it back).",
        )


def _system(conversation: Conversation, agent, text: str) -> Message:
    return Message.objects.create(
        conversation=conversation, role=Message.Role.SYSTEM, author=agent, text=text, completed_at=timezone.now()
    )


# --- take over / hand back / resolve ------------------------------------------------------------------------
def _take_over(conversation_id: uuid.UUID, agent, requester: Requester | None) -> tuple[Conversation, Message | None]:
    with transaction.atomic():
        ensure_staff(agent, requester)
        conversation = _locked(conversation_id)
        _refuse_if_held_by_other(conversation, agent, "answer it")
        if conversation.status == Conversation.Status.AGENT and conversation.assigned_agent_id == agent.pk:
            return conversation, None  # already yours: nothing changes, nobody is told twice
        now = timezone.now()
        conversation.status = Conversation.Status.AGENT
        conversation.assigned_agent = agent
        conversation.taken_over_at = now
        conversation.waiting_since = None
        conversation.agent_read_at = now
        handed = outcomes.person_joins(conversation, now)
        conversation.save(update_fields=["status", "assigned_agent", "taken_over_at", "waiting_since",
                                         "agent_read_at", "updated_at", *handed])
        notice = _system(conversation, agent, f"{display_name(agent)} from the support team joined the conversation.")
        return conversation, notice


async def take_over(conversation_id: uuid.UUID, agent, requester: Requester | None = None) -> Conversation:
    """Hold the conversation: the bot stops (its streaming answer ends ``cancelled``) and ignores new questions.

    Only one staff member can hold a conversation: the row is locked while the holder is checked and set, and a
    second staff member gets ``conflict``. Taking over again what you already hold changes nothing.
    """
    conversation, notice = await database_sync_to_async(_take_over)(conversation_id, agent, requester)
    if notice is None:
        return conversation
    await streaming.cancel_conversation(conversation.pk)  # on any node; its final says ``cancelled``
    await streaming.publish(
        conversation.pk, protocol.agent_joined_frame(conversation.pk, notice.pk, public_agent(agent), notice.text)
    )
    await _announce(conversation, agent, protocol.TAKE_OVER)
    return conversation


def _hand_back(
    conversation_id: uuid.UUID, agent, resolve: bool, requester: Requester | None
) -> tuple[Conversation, Message | None, bool]:
    with transaction.atomic():
        ensure_staff(agent, requester)
        conversation = _locked(conversation_id)
        _refuse_if_held_by_other(conversation, agent, "resolve it" if resolve else "hand it back")
        target = Conversation.Status.RESOLVED if resolve else Conversation.Status.BOT
        was_held = conversation.status == Conversation.Status.AGENT
        if conversation.status == target:
            return conversation, None, False
        conversation.status = target
        conversation.assigned_agent = None
        conversation.waiting_since = None
        ended = outcomes.end(conversation, outcomes.Ending.STAFF_RESOLVED) if resolve else []
        conversation.save(update_fields=["status", "assigned_agent", "waiting_since", "updated_at", *ended])
        name = display_name(agent)
        text = (
            f"{name} marked the conversation as resolved."
            if resolve
            else f"{name} handed the conversation back to the assistant."
        )
        return conversation, _system(conversation, agent, text), was_held


async def hand_back(conversation_id: uuid.UUID, agent, requester: Requester | None = None) -> Conversation:
    """Give the conversation back to the assistant: status ``bot``, the next question is answered again."""
    return await _release(conversation_id, agent, requester, resolve=False)


async def resolve(conversation_id: uuid.UUID, agent, requester: Requester | None = None) -> Conversation:
    """Close the conversation (a new customer question reopens it for the assistant)."""
    return await _release(conversation_id, agent, requester, resolve=True)


async def _release(conversation_id: uuid.UUID, agent, requester: Requester | None, *, resolve: bool) -> Conversation:
    conversation, notice, was_held = await database_sync_to_async(_hand_back)(
        conversation_id, agent, resolve, requester
    )
    if notice is None:
        return conversation
    if was_held:
        frame = protocol.agent_left_frame(conversation.pk, notice.pk, public_agent(agent), notice.text)
        await streaming.publish(conversation.pk, frame)
    await _announce(conversation, agent, protocol.RESOLVE if resolve else protocol.HAND_BACK)
    return conversation


async def _announce(conversation: Conversation, agent, action: str) -> None:
    """A status change: the customer's sockets (``conversation`` frame), the staff watching, every list."""
    await streaming.publish(conversation.pk, await chat.conversation_frame(conversation))
    holder = person(agent) if conversation.status == Conversation.Status.AGENT else None
    await publish_staff(
        conversation.pk, protocol.holder_frame(conversation.pk, conversation.status, holder, person(agent), action)
    )
    await inbox.publish_item(conversation.pk)


# --- talking to the customer --------------------------------------------------------------------------------
def _agent_message(
    conversation_id: uuid.UUID, agent, client_id: str, text: str, requester: Requester | None
) -> tuple[Message, bool]:
    with transaction.atomic():
        ensure_staff(agent, requester)
        conversation = _locked(conversation_id)
        existing = Message.objects.filter(conversation=conversation, role=Message.Role.AGENT, client_id=client_id)
        found = existing.select_related("author").first()
        if found is not None:
            return found, False
        _refuse_if_held_by_other(conversation, agent, "reply")
        if conversation.status != Conversation.Status.AGENT:
            raise protocol.ProtocolError(
                protocol.FORBIDDEN, "Take the conversation over before replying; the assistant is answering it.",
                id=client_id,
            )
        now = timezone.now()
        message = Message.objects.create(
            conversation=conversation,
            role=Message.Role.AGENT,
            author=agent,
            text=text,
            client_id=client_id,
            state=Message.State.COMPLETE,
            completed_at=now,
        )
        conversation.agent_read_at = now  # replying means the person has read the conversation
        replied = outcomes.person_replies(conversation, message.created_at)
        conversation.save(update_fields=["agent_read_at", "updated_at", *replied])
        return message, True


def message_frame(message: Message) -> dict[str, Any]:
    return protocol.agent_message_frame(
        message.conversation_id, message.pk, message.client_id, message.text, public_agent(message.author),
        message.created_at,
    )


async def send_agent_message(
    conversation_id: uuid.UUID, agent, client_id: str, text: str, requester: Requester | None = None
) -> tuple[dict[str, Any], bool]:
    """Reply to the customer as a person; delivered at once as ``agent_message`` to every socket showing it.

    ``client_id`` makes it idempotent: the same id again returns (the saved message's frame, False) and
    publishes nothing, so a console that re-sends after a reconnect never sends the customer a message twice.
    """
    try:
        message, created = await database_sync_to_async(_agent_message)(
            conversation_id, agent, client_id, text, requester
        )
    except protocol.ProtocolError as exc:
        exc.id = exc.id or client_id
        raise
    frame = message_frame(message)
    if created:
        await streaming.publish(message.conversation_id, frame)
        await inbox.publish_item(message.conversation_id)
        leave_message.email_reply(message, add_note)  # an offline customer also gets it by e-mail
    return frame, created


def _nudge(conversation_id: uuid.UUID, agent, text: str, requester: Requester | None) -> Message:
    with transaction.atomic():
        ensure_staff(agent, requester)
        conversation = _locked(conversation_id)
        _refuse_if_held_by_other(conversation, agent, "nudge the customer")
        return _system(conversation, agent, text or DEFAULT_NUDGE.format(name=display_name(agent)))


async def nudge(
    conversation_id: uuid.UUID, agent, text: str = "", requester: Requester | None = None
) -> dict[str, Any]:
    """A server-initiated push to get the customer's attention; saved, so a reloaded page shows it too."""
    message = await database_sync_to_async(_nudge)(conversation_id, agent, text, requester)
    frame = protocol.nudge_frame(message.conversation_id, message.pk, message.text, public_agent(agent))
    await streaming.publish(message.conversation_id, frame)
    await inbox.publish_item(message.conversation_id)
    return frame


# --- staff only ---------------------------------------------------------------------------------------------
def note_payload(note: InternalNote) -> dict[str, Any]:
    return {
        "id": note.pk,
        "author": person(note.author),
        "text": note.text,
        "created_at": note.created_at.isoformat(),
    }


def _add_note(conversation_id: uuid.UUID, agent, text: str, requester: Requester | None) -> InternalNote:
    ensure_staff(agent, requester)
    if not Conversation.objects.filter(pk=conversation_id).exists():
        raise protocol.ProtocolError(protocol.NOT_FOUND, f"No conversation {conversation_id}.")
    note = InternalNote.objects.create(conversation_id=conversation_id, author=agent, text=text)
    note.author = agent
    return note


async def add_note(
    conversation_id: uuid.UUID, agent, text: str, requester: Requester | None = None
) -> dict[str, Any]:
    """An internal note: to the staff watching the conversation only (``staff.<hex>``), never to the customer."""
    note = await database_sync_to_async(_add_note)(conversation_id, agent, text, requester)
    frame = protocol.note_frame(note.conversation_id, note_payload(note))
    await publish_staff(note.conversation_id, frame)
    return frame


def notes(conversation_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = InternalNote.objects.filter(conversation_id=conversation_id).select_related("author")
    return [protocol.note_frame(conversation_id, note_payload(n)) for n in rows]


def traces(conversation_id: uuid.UUID) -> list[dict[str, Any]]:
    """The trace of every finished answer in the conversation, oldest first (the console's debugging panel), each
    with which version of its question's answer it is (regenerate)."""
    rows = list(
        Message.objects.filter(conversation_id=conversation_id, role=Message.Role.ASSISTANT)
        .exclude(state=Message.State.STREAMING)
        .order_by("created_at")
        .values_list("pk", "trace", "state", "sources", "reply_to_id", "version")
    )
    versions = version_counts({row[4] for row in rows})
    return [protocol.trace_frame(conversation_id, pk, trace_of(trace, sources), state, version, versions.get(question, 1))
            for pk, trace, state, sources, question, version in rows]


def trace_of(trace: dict | None, sources: list | None) -> dict[str, Any]:
    """The saved trace; an answer stopped before it finished has none, so its sources stand in for the passages."""
    if trace:
        return trace
    passages = [{"n": s.get("n"), "title": s.get("title"), "heading": s.get("heading"), "score": s.get("score")}
                for s in sources or []]
    return {"query": None, "passages": passages, "timings": {}, "generator": None}


def message_trace(message_id: uuid.UUID | str) -> dict[str, Any] | None:
    fields = ("conversation_id", "trace", "state", "sources", "reply_to_id", "version")
    row = Message.objects.filter(pk=message_id).values_list(*fields).first()
    if row is None:
        return None
    conversation_id, trace, state, sources, question, version = row
    versions = version_counts([question]).get(question, 1)
    return protocol.trace_frame(
        conversation_id, uuid.UUID(str(message_id)), trace_of(trace, sources), state, version, versions
    )


def mark_read(conversation_id: uuid.UUID) -> None:
    """Staff have seen the conversation up to now (the unread count restarts). Not an activity: no re-sorting."""
    Conversation.objects.filter(pk=conversation_id).update(agent_read_at=timezone.now())


async def amark_read(conversation_id: uuid.UUID) -> dict[str, Any] | None:
    """Mark read and refresh every console's row; returns that row."""
    await database_sync_to_async(mark_read)(conversation_id)
    return await inbox.publish_item(conversation_id)
