"""Closing the answers of dead nodes: their lapsed leases become ``interrupted`` finals with the partial text
rebuilt from the frame log, and queued answers nobody will claim are handed to a worker again."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.db.models.functions import Now
from django.utils import timezone

from conversations import protocol
from conversations.models import Message
from conversations.streaming import leases, workers
from conversations.streaming.framelog import Append, frame_log
from conversations.streaming.stream import MessageStream, final_frame_of

log = logging.getLogger(__name__)

REAP_BATCH = 50  # expired leases closed per reaper pass (the rest on the next pass)
CAS_ATTEMPTS = 5  # a reaper racing a still-writing owner re-reads the log this many times at most


def reap_expired(own_channel: str = "") -> list[tuple[uuid.UUID, dict]]:
    """Close every answer whose lease lapsed and whose node is dead: ``interrupted`` (or ``cancelled`` if asked).

    A lapsed lease alone is not death: a node cut off from PostgreSQL for a while keeps its heartbeat in Redis
    (leases.py) and its answers are left alone; ``own_channel`` (the reaping node) is alive by definition.

    The partial text is rebuilt from the frame log and the final is compare-and-appended at the next free seq,
    so a slow-but-alive owner cannot write the same seq; it notices at its next frame or renewal and stops.
    Runs in one transaction with SKIP LOCKED, so several nodes' reapers share the work without doubling it.
    Returns (conversation, final frame) pairs to publish.
    """
    closed = []
    lapsed = Message.objects.filter(
        role=Message.Role.ASSISTANT, state=Message.State.STREAMING, lease_expires_at__lt=Now()
    ).exclude(lease_owner="")
    owners = set(lapsed.values_list("lease_owner", flat=True).distinct())
    if not owners:
        return closed
    living = leases.alive_nodes(owners - {own_channel}) | {own_channel}
    with transaction.atomic():
        expired = list(
            lapsed.exclude(lease_owner__in=living)
            .select_for_update(skip_locked=True)
            .order_by("lease_expires_at")[:REAP_BATCH]
        )
        for message in expired:
            state = protocol.CANCELLED if message.cancel_requested else protocol.INTERRUPTED
            stream, final = _close_log(message, state)
            fields = stream._final_fields(state, "", [], {}, "The node generating this answer stopped responding.")
            if final["state"] != state:  # a final already logged (a reaper that died before committing)
                fields["state"] = final["state"]
            Message.objects.filter(pk=message.pk).update(**fields)
            log.warning("reaped answer %s of node %s: %s at seq %s", message.pk, message.lease_owner,
                        fields["state"], final["seq"])
            closed.append((message.conversation_id, final))
    return closed


def _close_log(message: Message, state: str) -> tuple[MessageStream, dict]:
    log_ = frame_log()
    key = str(message.pk)
    for _ in range(CAS_ATTEMPTS):
        frames = log_.read_sync(key, 0)
        stream = MessageStream(message, owner=message.lease_owner)
        stream.absorb(frames)
        if frames and frames[-1]["type"] == protocol.FINAL:
            return stream, frames[-1]
        final = final_frame_of(stream, state)
        if log_.append_sync(key, final, expected=len(frames)) is Append.APPENDED:
            return stream, final
    raise RuntimeError(f"could not close the frame log of {message.pk}: its writer keeps writing")


def orphaned_conversations() -> list[uuid.UUID]:
    """Conversations with a queued answer nobody will pick up (its node died before claiming it)."""
    stale = timezone.now() - timedelta(seconds=settings.CHAT_LEASE_SECONDS)
    return list(
        Message.objects.filter(
            role=Message.Role.ASSISTANT, state=Message.State.STREAMING, lease_owner="", created_at__lt=stale
        )
        .filter(~Exists(workers.live_lease(OuterRef("conversation"))))
        .values_list("conversation_id", flat=True)
        .distinct()[:REAP_BATCH]
    )
