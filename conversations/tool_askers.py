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
import logging
import threading
import time
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from redis.exceptions import RedisError

from conversations.access import AccessRevoked, Requester, ensure_may_act
from conversations.models import Conversation
from conversations.redis_clients import LoopClients
from knowledge.models import Tool
from knowledge.tools.signing import Identity

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
#: Both counters of one call, counted together: refused (and nothing counted) when either is full.
_COUNT = """
local tool = tonumber(redis.call('GET', KEYS[1]) or '0')
local mine = tonumber(redis.call('GET', KEYS[2]) or '0')
if tool >= tonumber(ARGV[1]) or mine >= tonumber(ARGV[2]) then return 0 end
redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[2]); redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class ConversationAsker:
    """The owner of one conversation (``knowledge.tools.running.Asker``)."""

    owner_id: int | None
    session_key: str

    @classmethod
    def of(cls, conversation: Conversation) -> ConversationAsker:
        return cls(conversation.owner_id, conversation.anonymous_session_key or "")

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
        window = int(time.time() // WINDOW_SECONDS)
        keys = (f"{settings.CHANNEL_PREFIX}:tools:{tool.pk}:{window}",
                f"{settings.CHANNEL_PREFIX}:tools:{tool.pk}:{self.key}:{window}")  # fmt: skip
        if settings.REDIS_URL:
            try:
                (script,) = _redis().get().scripts
                return bool(await script(keys=list(keys), args=[*limits, WINDOW_SECONDS * 2]))
            except (OSError, RedisError) as exc:  # Redis away: this node's own counts still bound the calls
                log.warning("tool call limits counted on this node only: Redis failed (%s)", exc)
        return _local.count(keys, limits)


class _LocalCounters:
    """The same counters in this process (no Redis: one node)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._window = 0

    def count(self, keys: tuple[str, str], limits: tuple[int, int]) -> bool:
        with self._lock:
            window = int(time.time() // WINDOW_SECONDS)
            if window != self._window:
                self._counts, self._window = {}, window
            if any(self._counts.get(key, 0) >= limit for key, limit in zip(keys, limits, strict=True)):
                return False
            for key in keys:
                self._counts[key] = self._counts.get(key, 0) + 1
            return True


_local = _LocalCounters()
_clients: dict[str, LoopClients] = {}


def _redis() -> LoopClients:
    if settings.REDIS_URL not in _clients:
        _clients[settings.REDIS_URL] = LoopClients(settings.REDIS_URL, _COUNT, max_connections=lambda: 50,
                                                   timeout_seconds=2.0)  # fmt: skip
    return _clients[settings.REDIS_URL]
