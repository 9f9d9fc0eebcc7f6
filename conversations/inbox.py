"""The staff console's live list of conversations: one row per conversation, and its live updates.

Why a module of its own: the customer side (``conversations.chat``, the chat consumer) and the console actions
(``conversations.console``) both change what a row shows — a new question, a handoff request, a take-over — and
both call ``publish_item`` afterwards. Rows go to the channel-layer group ``console`` that every console socket
joins, so on several nodes the update travels through Redis like every other frame.

**Unread counts** are for what a person has not seen *and needs to*: the customer messages since staff last read
the conversation (``agent_read_at``: opening it, taking it over or replying), counted only while the conversation
waits for a person or a person holds it. A conversation the assistant is answering (or one resolved) shows none:
its questions were answered and nobody from staff has to read them. Once the customer asks for a person, everything
since the last read counts, the questions the assistant answered meanwhile too (the person reads them before
answering). The count is a ``CASE`` in the rows' query (no extra query), and rows the assistant holds skip it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, Exists, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.urls import reverse

from conversations import groups, protocol
from conversations.models import Conversation, Message

PREVIEW_CHARS = 140
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Where a person is needed, so unread customer messages count (module docstring).
NEEDS_A_PERSON = [Conversation.Status.WAITING_FOR_AGENT, Conversation.Status.AGENT]
# The list's sections, in the order the console shows them.
SECTIONS = {
    Conversation.Status.WAITING_FOR_AGENT: "waiting",
    Conversation.Status.AGENT: "active",
    Conversation.Status.BOT: "recent",
    Conversation.Status.RESOLVED: "resolved",
}
SECTION_ORDER = ["waiting", "active", "recent", "resolved"]


def display_name(user) -> str:
    """How a person is shown everywhere (site menu, customer's chat, console, notices): the full name, else the
    username. One rule for the pages (the ``display_name`` template filter) and the live frames."""
    if user is None or not getattr(user, "is_authenticated", True):
        return ""
    return user.get_full_name().strip() or user.get_username()


def customer_label(conversation: Conversation) -> str:
    """Who the customer is, as the console's list and transcript say it: their name (a visitor has none), and for
    the widget the site and the host page they chat from: "Visitor on Northwind · https://shop.example/delivery/"."""
    who = display_name(conversation.owner) if conversation.owner_id is not None else "Visitor"
    if conversation.site_id is None:
        return who
    label = f"{who} on {conversation.site.name}"
    return f"{label} · {conversation.page_url}" if conversation.page_url else label


def person(user) -> dict[str, Any] | None:
    """A staff member as console frames show them (never sent to customers: they get only the name)."""
    return None if user is None else {"id": user.pk, "name": display_name(user)}


def _rows():
    unread = (
        Message.objects.filter(
            conversation=OuterRef("pk"),
            role=Message.Role.USER,
            created_at__gt=Coalesce(OuterRef("agent_read_at"), Value(EPOCH)),
        )
        .order_by()
        .values("conversation")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        Conversation.objects.select_related("owner", "assigned_agent", "site")
        .annotate(
            unread=Case(When(status__in=NEEDS_A_PERSON, then=Coalesce(Subquery(unread), 0)), default=Value(0)),
            has_messages=Exists(Message.objects.filter(conversation=OuterRef("pk"))),
        )
        .filter(has_messages=True)
    )


def _last_messages(ids: list[uuid.UUID]) -> dict[uuid.UUID, Message]:
    """The latest visible message of each conversation (PostgreSQL DISTINCT ON, one query)."""
    rows = (
        Message.objects.filter(conversation_id__in=ids)
        .exclude(role=Message.Role.ASSISTANT, state=Message.State.STREAMING, text="")
        .order_by("conversation_id", "-created_at")
        .distinct("conversation_id")
        .only("conversation_id", "role", "text", "state", "created_at")
    )
    return {m.conversation_id: m for m in rows}


def _unanswered_since(conversation: Conversation) -> datetime | None:
    """While a person holds it: the first customer message after the person's last reply (else None)."""
    last_agent = (
        Message.objects.filter(conversation=conversation, role=Message.Role.AGENT)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    first = Message.objects.filter(conversation=conversation, role=Message.Role.USER)
    if last_agent is not None:
        first = first.filter(created_at__gt=last_agent)
    elif conversation.taken_over_at is not None:
        first = first.filter(created_at__gt=conversation.taken_over_at)
    return first.order_by("created_at").values_list("created_at", flat=True).first()


def _item(conversation: Conversation, last: Message | None) -> dict[str, Any]:
    status = conversation.status
    waiting_since = None
    if status == Conversation.Status.WAITING_FOR_AGENT:
        waiting_since = conversation.waiting_since or conversation.updated_at
    elif status == Conversation.Status.AGENT:
        waiting_since = _unanswered_since(conversation)
    return {
        "conversation": str(conversation.pk),
        "title": conversation.title or "New conversation",
        "status": status,
        "status_label": Conversation.Status(status).label,
        "section": SECTIONS.get(status, "recent"),
        "customer": customer_label(conversation),
        "holder": person(conversation.assigned_agent) if status == Conversation.Status.AGENT else None,
        # Whose it is (conversations/assignment.py): the holder while held, else whoever it was assigned to.
        "assignee": person(conversation.assigned_agent),
        # What the console's filters match a live row against (conversations/console_search.py).
        "site": conversation.site_id,
        "knowledge_base": conversation.knowledge_base_id,
        "outcome": conversation.outcome,
        "unread": conversation.unread,
        "last_message": None
        if last is None
        else {
            "role": last.role,
            "text": _preview(last),
            "at": last.created_at.isoformat(),
        },
        "waiting_since": waiting_since.isoformat() if waiting_since else None,
        "left_message": protocol.left_message(conversation.contact_email, conversation.left_message_at),
        "updated_at": conversation.updated_at.isoformat(),
        "url": reverse("console:detail", args=[conversation.pk]),
    }


def _preview(message: Message) -> str:
    if message.role == Message.Role.ASSISTANT and message.state == Message.State.STREAMING:
        return "Answering…"
    text = " ".join(message.text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _sort_key(item: dict[str, Any]) -> tuple:
    """Waiting first, longest wait first; then active, recent and resolved, latest activity first."""
    section = SECTION_ORDER.index(item["section"])
    if item["section"] == "waiting":
        return (section, item["waiting_since"] or "", "")
    inverted = "".join(chr(0x10FFFF - ord(c)) for c in item["updated_at"])  # descending within the section
    return (section, "", inverted)


def list_items(limit: int | None = None, narrow: Callable[[QuerySet], QuerySet] | None = None) -> list[dict[str, Any]]:
    """The list snapshot: every conversation waiting for a person, then the most recent others up to ``limit``.

    ``narrow``: the console's search and filters (``console_search.ListQuery.narrow``), applied to the rows' query
    itself, so a filtered list costs the same queries as the whole one."""
    limit = settings.CONSOLE_LIST_LIMIT if limit is None else limit
    rows = _rows() if narrow is None else narrow(_rows())
    with transaction.atomic(savepoint=False):  # one snapshot's worth of reads, one transaction
        waiting = list(rows.filter(status=Conversation.Status.WAITING_FOR_AGENT))
        others = list(rows.filter(~Q(status=Conversation.Status.WAITING_FOR_AGENT)).order_by("-updated_at")[:limit])
        conversations = waiting + others
        last = _last_messages([c.pk for c in conversations])
    return sorted((_item(c, last.get(c.pk)) for c in conversations), key=_sort_key)


def list_item(conversation_id: uuid.UUID | str) -> dict[str, Any] | None:
    """One conversation's row, read in one transaction (or inside the caller's: an action that just wrote the
    conversation builds its row in the same transaction, no extra round trip to begin and commit)."""
    with transaction.atomic(savepoint=False):
        conversation = _rows().filter(pk=conversation_id).first()
        if conversation is None:
            return None
        return _item(conversation, _last_messages([conversation.pk]).get(conversation.pk))


alist_items = database_sync_to_async(list_items)
alist_item = database_sync_to_async(list_item)


async def publish_item(conversation_id: uuid.UUID | str) -> dict[str, Any] | None:
    """Tell every console that this conversation's row changed (new, new question, status, unread…).

    Returns the row sent (None: no such row), so a caller that also shows it directly need not build it again.
    """
    item = await alist_item(conversation_id)
    await publish_row(item)
    return item


async def publish_row(item: dict[str, Any] | None) -> None:
    """Send a row built already (``list_item``, e.g. inside the transaction that changed it) to every console."""
    if item is not None:
        await get_channel_layer().group_send(groups.CONSOLE, {"type": groups.CONSOLE_ITEM, "item": item})
