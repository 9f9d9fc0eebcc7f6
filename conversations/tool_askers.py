"""Who a tool call is made for: a conversation's owner, as ``knowledge.tools.running.Asker`` needs them.

The identity comes from the conversation's row, never from the question: its owner (a signed-in user) or the
anonymous visitor whose session owns it. It is re-read, and the user's right to act re-checked
(``access.ensure_may_act``), in a transaction of its own at the moment of the call, so a user deactivated or signed
out everywhere after asking gets no call made on their behalf, whichever node or process revoked them.

A visitor is named to the company's API by a pseudonym (an HMAC of their session key): stable for the session,
useless to anyone who reads it.

Rate limits (``TOOLS_CALLS_PER_MINUTE`` per tool, ``TOOLS_CALLS_PER_CUSTOMER_PER_MINUTE`` per tool and customer)
are counted in Redis when ``REDIS_URL`` is set, so they hold across nodes; in-process otherwise (one node).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from conversations.access import AccessRevoked, Requester, ensure_may_act
from conversations.models import Conversation, Site
from conversations.window_counts import count_within, window_key
from knowledge.models import Tool
from knowledge.tools.signing import Identity

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class ConversationAsker:
    """The owner of one conversation (``knowledge.tools.running.Asker``)."""

    owner_id: int | None
    session_key: str
    site_id: int | None = None  # a widget conversation: only its site's tools

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationAsker:
        return cls(conversation.owner_id, conversation.anonymous_session_key or "", conversation.site_id)

    async def allowed(self, tools: list[Tool]) -> list[Tool]:
        if self.site_id is None or not tools:
            return tools
        named = await database_sync_to_async(_site_tool_ids)(self.site_id)
        return [tool for tool in tools if tool.pk in named]

    @property
    def signed_in(self) -> bool:
        return self.owner_id is not None

    @property
    def key(self) -> str:
        return f"user:{self.owner_id}" if self.owner_id is not None else f"visitor:{self._pseudonym()}"

    def _pseudonym(self) -> str:
        return hmac.new(settings.SECRET_KEY.encode(), self.session_key.encode(), hashlib.sha256).hexdigest()[:24]

    async def identity(self) -> Identity | None:
        return await database_sync_to_async(self._identity)()

    def _identity(self) -> Identity | None:
        if self.owner_id is None:
            return Identity(user_id=f"visitor-{self._pseudonym()}", email="", name="", kind="visitor")
        with transaction.atomic():
            try:
                ensure_may_act(Requester(user_id=self.owner_id))
            except AccessRevoked:
                return None
            user = get_user_model().objects.filter(pk=self.owner_id).first()
        if user is None:
            return None
        name = user.get_full_name() or user.get_username()
        return Identity(user_id=str(user.pk), email=user.email or "", name=name, kind="user")

    async def within_limits(self, tool: Tool) -> bool:
        limits = (settings.TOOLS_CALLS_PER_MINUTE, settings.TOOLS_CALLS_PER_CUSTOMER_PER_MINUTE)
        keys = (window_key("tools", WINDOW_SECONDS, tool.pk), window_key("tools", WINDOW_SECONDS, tool.pk, self.key))
        return await count_within(keys, limits, WINDOW_SECONDS)


def _site_tool_ids(site_id: int) -> set[int]:
    return set(Site.tools.through.objects.filter(site_id=site_id).values_list("tool_id", flat=True))
