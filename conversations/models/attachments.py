"""A customer's photo or screenshot, as re-encoded on upload (conversations/images.py), kept in PostgreSQL.

Several Daphne nodes serve the site and share no disk, so the bytes live in the database next to the message they
were sent with: any node serves them, a backup holds them, deleting the conversation deletes them. Only the
re-encoded file is ever stored; the customer's original never is (docs/security.md, "Customers' images").
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class AttachmentManager(models.Manager):
    """Every query leaves the bytes out (a page lists images, a frame describes them): they are read only when
    ``attachment.data`` is asked for, by the view that serves the image."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().defer("data")


class Attachment(models.Model):
    """One image a customer uploaded. Unsent (``message`` null) until an ``ask`` names it; then it belongs to that
    question. Owned like a conversation (``Requester.owner_fields()``): a user, or an anonymous visitor's key."""

    class ContentType(models.TextChoices):
        PNG = "image/png", "PNG"
        JPEG = "image/jpeg", "JPEG"
        WEBP = "image/webp", "WebP"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null: uploaded before its conversation existed (a widget's first message); set when the ask is saved.
    conversation = models.ForeignKey(
        "conversations.Conversation", null=True, blank=True, on_delete=models.CASCADE, related_name="attachments"
    )
    message = models.ForeignKey(
        "conversations.Message", null=True, blank=True, on_delete=models.CASCADE, related_name="attachments"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    anonymous_session_key = models.CharField(max_length=64, blank=True, default="")
    content_type = models.CharField(max_length=16, choices=ContentType.choices)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    byte_size = models.PositiveIntegerField()
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    objects = AttachmentManager()

    class Meta:
        ordering = ["created_at"]
        indexes = [
            # A customer's unsent uploads (the ask looks them up, the upload counts them) and the old ones deleted.
            models.Index(fields=["created_at"], condition=Q(message__isnull=True), name="attachment_unsent"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(owner__isnull=False) | ~Q(anonymous_session_key=""), name="attachment_has_owner_or_session"
            ),
            models.CheckConstraint(
                condition=Q(content_type__in=["image/png", "image/jpeg", "image/webp"]), name="attachment_image_type"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.content_type} {self.width}×{self.height} ({self.byte_size} bytes)"
