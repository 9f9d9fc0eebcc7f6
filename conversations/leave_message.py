"""Leave a message: a customer who asks for a person when nobody can answer leaves an e-mail address, and a staff
reply is then e-mailed there too. The rules, in one place:

* **Can a person answer now?** ``away_reason``: not outside the business hours of the conversation's site
  (``CLOSED``; ``Site.is_open`` in the site's time zone; a conversation of our own chat page has no site), and only
  while an active staff member has the support console open on some node (``NOBODY_ONLINE``;
  conversations/staff_presence.py). When a person was asked for and nobody can answer, the ``conversation`` frame
  says why (``away``): the page asks for an address. The conversation still waits for staff like any other.
* **Leaving the address** (``leave``, the ``leave_message`` frame): only while a person is asked for or answering;
  the address is checked by the frame (conversations/protocol/chat_frames.py). It saves ``contact_email`` and
  ``left_message_at``: the customer is "offline", which every socket showing the conversation and every console's
  list are told (``left_message``). Leaving another address replaces it.
* **When "customer offline" ends** (``customer_writes``): when the customer writes in the conversation while it is
  not waiting for a person — a person holds it, or it went back to the assistant or was resolved: they are back in
  the chat. What they add while still waiting for a person is part of their request and keeps the address.
* **A staff reply while the customer is offline** (``email_reply``) is delivered on the socket as always and also
  e-mailed to the address, through Django's e-mail backend (``EMAIL_BACKEND``), in the customer's language, with
  where to continue. In the background, on threads of its own: a slow or failing mail server never delays or breaks
  the reply; the outcome becomes an internal note in the console ("Reply e-mailed to …" or "Could not e-mail …"),
  and a failure is logged.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.db import transaction
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import get_supported_language_variant
from django.utils.translation import gettext as _

from conversations import inbox, protocol, staff_presence
from conversations.access import Requester, ensure_may_act
from conversations.models import Conversation, Message, Site

log = logging.getLogger(__name__)

#: Why nobody can answer (the ``conversation`` frame's ``away``; static/chat/protocol.js ``AWAY``).
CLOSED = protocol.AWAY_CLOSED
NOBODY_ONLINE = protocol.AWAY_NOBODY_ONLINE
#: A customer may leave an address while a person is asked for or answering.
LEAVABLE = (Conversation.Status.WAITING_FOR_AGENT, Conversation.Status.AGENT)
#: Mail goes out on these threads: never the event loop, never the database thread other calls queue on.
MAIL_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reply-mail")

Note = Callable[[uuid.UUID, Any, str], Awaitable[Any]]


# --- can a person answer now? ---------------------------------------------------------------------------------
async def away_reason(conversation: Conversation, at: datetime | None = None) -> str | None:
    """Why no person can answer ``conversation`` at ``at`` (now): ``CLOSED`` outside its site's business hours,
    ``NOBODY_ONLINE`` when no active staff member has the console open anywhere; None when someone can."""
    at = at or timezone.now()
    if conversation.site_id is not None:
        site = await Site.objects.filter(pk=conversation.site_id).afirst()
        if site is not None and not site.is_open(at):
            return CLOSED
    return None if await staff_online() else NOBODY_ONLINE


async def staff_online() -> bool:
    """Whether an active staff member has the support console open on some node. When Redis cannot tell, nobody
    is: the customer is offered to leave an address, and their conversation waits for staff all the same."""
    ids = await staff_presence.online_user_ids()
    if not ids:
        return False
    return await get_user_model().objects.filter(pk__in=ids, is_active=True, is_staff=True).aexists()


# --- the customer: leaving an address, coming back ----------------------------------------------------------------
def leave(requester: Requester, frame: protocol.LeaveMessage) -> tuple[Conversation, dict[str, Any] | None]:
    """Save the address and mark the customer offline; returns the conversation and its console row, built in the
    same transaction."""
    with transaction.atomic():
        ensure_may_act(requester)  # AccessRevoked: nothing saved, the socket closes (4001)
        conversation = requester.conversations().select_for_update().filter(pk=frame.conversation).first()
        if conversation is None:
            raise protocol.ProtocolError(protocol.NOT_FOUND, f"No conversation {frame.conversation}.", id=frame.id)
        if conversation.status not in LEAVABLE:
            raise protocol.ProtocolError(
                protocol.FORBIDDEN,
                "An address is left for a person's reply: ask for a person first (handoff). Nothing was saved.",
                id=frame.id,
            )
        conversation.contact_email = frame.email
        conversation.left_message_at = timezone.now()
        conversation.save(update_fields=["contact_email", "left_message_at", "updated_at"])
        return conversation, inbox.list_item(conversation.pk)


def customer_writes(conversation: Conversation) -> None:
    """The customer wrote in ``conversation`` (not saved here): unless it still waits for a person, they are back
    in the chat and "customer offline" ends (the address stays saved, unused)."""
    if conversation.left_message_at is not None and conversation.status != Conversation.Status.WAITING_FOR_AGENT:
        conversation.left_message_at = None


# --- a staff reply while the customer is offline --------------------------------------------------------------
_sending: set[asyncio.Task] = set()  # the running e-mails (a task nobody holds may be collected mid-way)


def email_reply(message: Message, note: Note) -> None:
    """If the customer of ``message`` (a staff reply just saved and delivered) is offline, e-mail it to them, in
    the background: returns at once. ``note(conversation_id, author, text)`` records the outcome for the console."""
    task = asyncio.get_running_loop().create_task(_email_reply(message, note), name=f"reply-mail-{message.pk}")
    _sending.add(task)
    task.add_done_callback(_sending.discard)


async def finish_sending() -> None:
    """Wait for the e-mails under way (a test's end; a node about to stop)."""
    while _sending:
        await asyncio.gather(*list(_sending), return_exceptions=True)


async def _email_reply(message: Message, note: Note) -> None:
    try:
        mail = await database_sync_to_async(reply_mail)(message.pk)
        if mail is None:
            return
        to = ", ".join(mail.to)
        try:
            await asyncio.get_running_loop().run_in_executor(MAIL_THREADS, mail.send)
        except Exception as exc:  # anything the backend raises: refused, unreachable, timed out, bad credentials
            log.warning("could not e-mail the reply %s to the offline customer of conversation %s: %s: %s",
                        message.pk, message.conversation_id, type(exc).__name__, exc)  # fmt: skip
            text = (
                f"Could not e-mail this reply to {to} ({type(exc).__name__}: {exc}). It is saved: the customer sees "
                "it when they come back to the chat."
            )
        else:
            text = f"Reply e-mailed to {to} (the customer is offline)."
        await note(message.conversation_id, message.author, text)
    except Exception:  # the note or the database failed: the reply itself is saved and was delivered
        log.exception("e-mailing the reply %s of conversation %s failed", message.pk, message.conversation_id)


def reply_mail(message_id: uuid.UUID) -> EmailMessage | None:
    """The e-mail of a staff reply to its conversation's offline customer (None: the customer is not offline), in
    the customer's language: who replied, the reply, and where to continue."""
    message = (
        Message.objects.select_related("author", "conversation", "conversation__site").filter(pk=message_id).first()
    )
    conversation = message.conversation if message is not None else None
    if conversation is None or protocol.left_message(conversation.contact_email, conversation.left_message_at) is None:
        return None
    url = continue_url(conversation)
    with translation.override(customer_language(conversation)):
        subject = _("Reply from our support team: %(title)s") % {"title": conversation.title or _("your question")}
        lines = [
            _("Hello,"),
            "",
            _("%(name)s from our support team replied:") % {"name": inbox.display_name(message.author)},
            "",
            message.text,
            "",
            _("Continue the conversation here: %(url)s") % {"url": url}
            if url
            else _("To continue the conversation, open the chat where you asked."),
            "",
            "-- ",
            _(
                "You receive this e-mail because you left this address in our chat when nobody from our team could "
                "answer."
            ),  # fmt: skip
        ]
    return EmailMessage(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, [conversation.contact_email])


def customer_language(conversation: Conversation) -> str:
    """The language the customer last asked in (their latest answer's), else the one their browser preferred, else
    the site's default."""
    latest = (
        Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT)
        .order_by("-created_at")
        .values_list("trace__language", "trace__language_hint")
        .first()
    )
    for code in (*(latest or ()), settings.LANGUAGE_CODE):
        if isinstance(code, str) and code:
            try:
                return get_supported_language_variant(code)
            except LookupError:
                continue
    return settings.LANGUAGE_CODE


def continue_url(conversation: Conversation) -> str:
    """Where the customer picks the conversation up again: a widget conversation's host page, while its site still
    allows that page's origin; our chat page (``PUBLIC_URL``) for any other; "" when neither is known. Never an
    address from the request: the mail goes to whatever address was typed, so its link must be one we trust."""
    if conversation.site_id is not None:
        parts = urlsplit(conversation.page_url)
        page_origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
        site = conversation.site
        return conversation.page_url if page_origin and site is not None and site.allows_origin(page_origin) else ""
    if not settings.PUBLIC_URL:
        return ""
    return settings.PUBLIC_URL + reverse("conversations:detail", args=[conversation.pk])
