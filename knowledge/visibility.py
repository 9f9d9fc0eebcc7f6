"""Which knowledge bases someone may ask and read: the one rule, enforced everywhere through this module.

A knowledge base is ``public`` (everyone: customers, anonymous visitors), ``staff`` (staff only) or ``groups``
(members of its ``groups``, django.contrib.auth Groups). Staff — active users with ``is_staff`` — see every
knowledge base, whatever its visibility (they manage them in the admin and answer in the console). Inactive users
and anonymous visitors see public ones only.

Callers: the ``ask`` frame's ``kb`` (conversations/chat.py: an invisible knowledge base is ``not_found``, like one
that does not exist), retrieval (knowledge/retrieval.py: never a chunk of an invisible knowledge base, whatever
id or name it is called with), the document page and download (knowledge/views.py: 404) and the chat page's
configuration (conversations/views.py). docs/security.md, "Knowledge-base visibility".

The rule is evaluated in SQL from the user's id, so it always reads the user's current ``is_active``,
``is_staff`` and group memberships — never a copy cached on a socket or a request.
"""

from __future__ import annotations

from typing import Any, Final

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q, QuerySet

from knowledge.models import KnowledgeBase


class _Everything:
    """The reader of trusted server-side callers (``manage.py search``, benchmarks): no restriction."""

    def __repr__(self) -> str:
        return "EVERYTHING"


#: Pass as ``reader`` where an operator, not a customer, is asking (management commands, benchmarks).
EVERYTHING: Final = _Everything()

#: Who is reading: a user (or ``AnonymousUser``), a user's id, ``None`` for an anonymous visitor, or ``EVERYTHING``.
Reader = Any


def reader_id(reader: Reader) -> int | None:
    """The user id behind ``reader`` (None: anonymous)."""
    if reader is None or isinstance(reader, int):
        return reader
    if not getattr(reader, "is_authenticated", False):
        return None
    return reader.pk


def visible_knowledge_bases(reader: Reader) -> QuerySet[KnowledgeBase]:
    """The knowledge bases ``reader`` may ask and read (a lazy queryset: one SQL query, composable)."""
    knowledge_bases = KnowledgeBase.objects.all()
    if reader is EVERYTHING:
        return knowledge_bases
    public = Q(visibility=KnowledgeBase.Visibility.PUBLIC)
    user_id = reader_id(reader)
    if user_id is None:
        return knowledge_bases.filter(public)
    users = get_user_model().objects.filter(pk=user_id, is_active=True)
    is_staff = Exists(users.filter(is_staff=True))
    in_a_group = Exists(
        KnowledgeBase.groups.through.objects.filter(
            knowledgebase_id=OuterRef("pk"), group__user__pk=user_id, group__user__is_active=True
        )
    )
    return knowledge_bases.filter(public | is_staff | (Q(visibility=KnowledgeBase.Visibility.GROUPS) & in_a_group))


def may_read(reader: Reader, knowledge_base_id: int) -> bool:
    """Whether ``reader`` may ask / read the knowledge base with this id (False for one that does not exist)."""
    return visible_knowledge_bases(reader).filter(pk=knowledge_base_id).exists()
