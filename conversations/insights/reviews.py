"""The 👎 review queue: answers customers rated down that no one has looked at yet, and staff's one action on them,
marking why (wrong, incomplete, outdated article, should have handed off, or nothing wrong).

The queue reads the partial index ``fb_to_review`` (👎 not yet reviewed, newest first). The mark is an action of
its own: it re-checks in its transaction that the person is still active staff (``console.ensure_staff``), so a
page loaded before someone was deactivated or lost staff status cannot mark anything after.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from conversations.console import ensure_staff
from conversations.insights.period import Period
from conversations.models import Feedback

QUEUE_SIZE = 50
#: The count of waiting 👎 stops here ("1000+"): counting every one of a large queue filtered by knowledge base joins
#: all of them to their answers; a capped count walks the newest through the ``fb_to_review`` index instead.
COUNT_CAP = 1000
REASONS = Feedback.Reason


@dataclass
class QueueItem:
    feedback_id: int
    question: str
    answer: str
    comment: str
    conversation_id: object
    rated_at: object


def queue(period: Period, size: int = QUEUE_SIZE) -> tuple[list[QueueItem], int]:
    """The newest ``size`` unreviewed 👎 of the period's knowledge base and site (any date: a queue is worked
    through, not read by period), and how many are waiting (at most ``COUNT_CAP``)."""
    waiting = Feedback.objects.filter(rating=-1, reviewed_at__isnull=True)
    if period.knowledge_base_id is not None:
        waiting = waiting.filter(message__conversation__knowledge_base_id=period.knowledge_base_id)
    if period.site_id is not None:
        waiting = waiting.filter(message__conversation__site_id=period.site_id)
    rows = waiting.order_by("-created_at").values_list(
        "pk", "message__reply_to__text", "message__text", "comment", "message__conversation_id", "created_at"
    )[:size]
    items = [QueueItem(pk, question or "", answer, comment, conversation, at) for pk, question, answer, comment, conversation, at in rows]
    return items, len(items) if len(items) < size else waiting.order_by("-created_at")[:COUNT_CAP].count()


def mark(feedback_id: int, reason: str, reviewer) -> Feedback | None:
    """Mark a 👎 reviewed with ``reason`` by ``reviewer`` (None: no such 👎). Raises ``access.AccessRevoked`` unless
    the reviewer is active staff now, and ``ValueError`` for a reason that is not one of ``Feedback.Reason``."""
    if reason not in REASONS.values:
        raise ValueError(f"Unknown review reason {reason!r}.")
    with transaction.atomic():
        ensure_staff(reviewer)
        feedback = Feedback.objects.select_for_update().filter(pk=feedback_id, rating=-1).first()
        if feedback is None:
            return None
        feedback.review_reason = reason
        feedback.reviewed_by = reviewer
        feedback.reviewed_at = timezone.now()
        feedback.save(update_fields=["review_reason", "reviewed_by", "reviewed_at", "updated_at"])
    return feedback
