"""CSAT: the customer's 1–5 rating of a conversation, asked when it ends (docs/analytics.md)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class ConversationRating(models.Model):
    """One rating per conversation; rating again (after a reopen, or changing one's mind) replaces it.

    ``by_person`` is whether a person had replied when it was given: the insights compare CSAT of the
    assistant's conversations with people's."""

    conversation = models.OneToOneField("conversations.Conversation", on_delete=models.CASCADE, related_name="rating")
    score = models.PositiveSmallIntegerField()
    comment = models.TextField(blank=True, max_length=2000)
    by_person = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="rating_created")]
        constraints = [
            models.CheckConstraint(condition=Q(score__gte=1, score__lte=5), name="rating_score_1_to_5"),
        ]

    def __str__(self) -> str:
        return f"{self.score}/5 on {self.conversation_id}"
