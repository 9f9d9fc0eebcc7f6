"""Knowledge gaps: questions the knowledge base did not answer well, kept with their embedding so the insights
page can group them by meaning (conversations/insights) and staff can write the missing answer."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from pgvector.django import VectorField


class KnowledgeGap(models.Model):
    """An answer that found nothing (it offered a person: nothing relevant, or the passages did not answer the
    question) or that the customer rated 👎. One row per answer and reason."""

    class Reason(models.TextChoices):
        NOTHING_FOUND = "nothing_found", "Nothing found"
        THUMBS_DOWN = "thumbs_down", "Rated 👎"

    answer = models.ForeignKey("conversations.Message", on_delete=models.CASCADE, related_name="gaps")
    knowledge_base = models.ForeignKey("knowledge.KnowledgeBase", on_delete=models.CASCADE, related_name="+")
    site = models.ForeignKey("conversations.Site", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=20, choices=Reason.choices)
    question = models.TextField()
    language = models.CharField(max_length=16, blank=True, default="")
    # The question's embedding (the knowledge base's model); null when it could not be computed then.
    embedding = VectorField(dimensions=settings.EMBEDDING_DIMENSIONS, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["knowledge_base", "created_at"], name="gap_kb_created")]
        constraints = [models.UniqueConstraint(fields=["answer", "reason"], name="gap_one_per_answer_reason")]

    def __str__(self) -> str:
        return f"{self.reason}: {self.question[:60]}"
