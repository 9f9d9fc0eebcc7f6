"""The idle reminder: a customer who leaves a support person's message unanswered is reminded, once.

Where it runs: on every Daphne node (conversations/node_loops.py), started by the first chat or console socket
of the process (``ensure_running``): the push must reach the customer's socket. Every
``CONSOLE_REMINDER_CHECK_SECONDS`` it looks for agent messages older than ``CONSOLE_REMINDER_SECONDS`` with no
customer message after them, in conversations a person still holds. Each is claimed with a conditional UPDATE (``reminded_at IS NULL``), so with several nodes exactly one
sends it. The reminder is saved as a system message (a reloaded page shows it) and pushed as a ``reminder``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from conversations import inbox, protocol, streaming
from conversations.inbox import display_name
from conversations.models import Conversation, Message
from conversations.node_loops import NodeLoop

log = logging.getLogger(__name__)

REMINDER_TEXT = "{name} from our support team is waiting for your reply."
BATCH = 100


@dataclass(frozen=True)
class Reminder:
    conversation_id: object
    about: object  # the agent message
    notice: Message  # the saved system message


def claim_due_reminders() -> list[Reminder]:
    """Claim and save the reminders that are due now (each agent message at most once, across all nodes)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.CONSOLE_REMINDER_SECONDS)
    answered = Message.objects.filter(
        conversation=OuterRef("conversation"), role=Message.Role.USER, created_at__gt=OuterRef("created_at")
    )
    later_agent = Message.objects.filter(
        conversation=OuterRef("conversation"), role=Message.Role.AGENT, created_at__gt=OuterRef("created_at")
    )
    due = (
        Message.objects.filter(
            role=Message.Role.AGENT,
            reminded_at__isnull=True,
            created_at__lte=cutoff,
            conversation__status=Conversation.Status.AGENT,
        )
        .filter(~Exists(answered), ~Exists(later_agent))  # only the latest unanswered one per conversation
        .select_related("author")
        .order_by("created_at")[:BATCH]
    )
    reminders = []
    for message in due:
        with transaction.atomic():
            if not Message.objects.filter(pk=message.pk, reminded_at__isnull=True).update(reminded_at=now):
                continue  # another node claimed it
            # Earlier agent messages in the same silence are covered by this one reminder.
            Message.objects.filter(
                conversation_id=message.conversation_id, role=Message.Role.AGENT, reminded_at__isnull=True
            ).update(reminded_at=now)
            notice = Message.objects.create(
                conversation_id=message.conversation_id,
                role=Message.Role.SYSTEM,
                text=REMINDER_TEXT.format(name=display_name(message.author) or "Someone"),
                completed_at=now,
            )
        reminders.append(Reminder(message.conversation_id, message.pk, notice))
    return reminders


async def send_due_reminders() -> int:
    """One check: claim what is due and push each reminder to the customer's sockets. Returns how many."""
    reminders = await database_sync_to_async(claim_due_reminders)()
    for reminder in reminders:
        frame = protocol.reminder_frame(reminder.conversation_id, reminder.notice.pk, reminder.about, reminder.notice.text)
        await streaming.publish(reminder.conversation_id, frame)
        await inbox.publish_item(reminder.conversation_id)
    return len(reminders)


LOOP = NodeLoop("console-idle-reminders", send_due_reminders, lambda: settings.CONSOLE_REMINDER_CHECK_SECONDS)
#: Start this process's reminder loop if it is not running (idempotent: called on every connect).
ensure_running = LOOP.ensure_running
#: Stop it on the running event loop (tests).
stop = LOOP.stop
