"""Customers' images in a conversation: keeping an upload, sending it with a question, and who may see it.

An image is uploaded first (``POST /attachments/``, conversations/attachment_views.py) and kept unsent; the
``ask`` that names it (``Ask.attachments``) links it to the saved question, in the ask's transaction. Only the
requester's own unsent images, uploaded for that conversation or for none yet, can be sent; anything else is
``not_found`` and nothing is saved. An image is shown to its conversation's customer and to staff, and to nobody
else: for them it does not exist (404), like someone else's conversation (conversations/access.py).

Unsent uploads are deleted ``ATTACHMENT_UNSENT_HOURS`` after their upload, by the next upload on any node (one
indexed DELETE), and a customer holds at most ``ATTACHMENT_MAX_UNSENT`` at a time; sent ones live and die with
their message and conversation.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.urls import reverse
from django.utils import timezone

from conversations import protocol
from conversations.access import Requester, ensure_may_act
from conversations.images import Reencoded
from conversations.models import Attachment, Message


class UploadRefused(Exception):
    """The image is fine but may not be kept now: ``status`` is the HTTP answer (404 conversation, 429 too many)."""

    def __init__(self, code: str, detail: str, status: int) -> None:
        super().__init__(detail)
        self.code, self.detail, self.status = code, detail, status


def mine(requester: Requester) -> QuerySet[Attachment]:
    """The images this requester uploaded (``Requester.owner_fields``: a user, or an anonymous visitor's key)."""
    return Attachment.objects.filter(**requester.owner_fields())


def store(requester: Requester, conversation_id: uuid.UUID | None, image: Reencoded) -> Attachment:
    """Keep a re-encoded upload, unsent, for the requester's conversation ``conversation_id`` (None: a conversation
    the first ask will start). Raises ``UploadRefused`` or ``access.AccessRevoked``."""
    with transaction.atomic():
        ensure_may_act(requester)
        conversation = None
        if conversation_id is not None:
            conversation = requester.conversations().filter(pk=conversation_id).first()
            if conversation is None:
                raise UploadRefused("not_found", f"No conversation {conversation_id}.", 404)
        expired = timezone.now() - timedelta(hours=settings.ATTACHMENT_UNSENT_HOURS)
        Attachment.objects.filter(message__isnull=True, created_at__lt=expired).delete()
        unsent = mine(requester).filter(message__isnull=True).count()
        if unsent >= settings.ATTACHMENT_MAX_UNSENT:
            raise UploadRefused(
                "too_many",
                f"You have {unsent} images waiting to be sent (the limit is {settings.ATTACHMENT_MAX_UNSENT}); send or "
                f"wait for them to expire ({settings.ATTACHMENT_UNSENT_HOURS} h) before adding more.",
                429,
            )
        return Attachment.objects.create(
            conversation=conversation,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            byte_size=len(image.data),
            data=image.data,
            **requester.owner_fields(),
        )


def send_with(requester: Requester, frame: protocol.Ask, question: Message) -> list[dict[str, Any]]:
    """Link the images the ask names to its saved question (inside the ask's transaction), as ``described``; any
    that is not the requester's own unsent image of this conversation (or of none yet) is ``not_found``, raised so
    that the transaction saves nothing."""
    if not frame.attachments:
        return []
    conversation = question.conversation
    found = {
        row.pk: row
        for row in mine(requester)
        .select_for_update()
        .filter(pk__in=frame.attachments, message__isnull=True)
        .filter(Q(conversation=conversation) | Q(conversation__isnull=True))
    }
    missing = [str(pk) for pk in frame.attachments if pk not in found]
    if missing:
        raise protocol.ProtocolError(
            protocol.NOT_FOUND,
            f"No unsent image {', '.join(missing)} of yours in this conversation (upload it again). The question was "
            "NOT saved.",
            id=frame.id,
        )
    Attachment.objects.filter(pk__in=found).update(message=question, conversation=conversation)
    return [described(found[pk]) for pk in frame.attachments]


def described(attachment: Attachment) -> dict[str, Any]:
    """An image as the upload's answer and the ``question`` frame carry it: where to fetch it and its size."""
    return {
        "id": str(attachment.pk),
        "url": reverse("attachments:serve", args=[attachment.pk]),
        "content_type": attachment.content_type,
        "width": attachment.width,
        "height": attachment.height,
    }


def viewable(user, requester: Requester | None, attachment_id: uuid.UUID) -> Attachment | None:
    """The image if this request may see it, else None: active staff see every customer's image;
    a customer (``requester``) theirs, sent in their conversation or uploaded and not yet sent."""
    images = Attachment.objects.filter(pk=attachment_id)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return images.first()
    if requester is None:
        return None
    own = Q(conversation__in=requester.conversations()) | Q(conversation__isnull=True, **requester.owner_fields())
    return images.filter(own).first()
