"""Typing indicators: the customer's typing shown to the staff watching the conversation, a staff member's to the
customer — relayed through the channel layer and nowhere else.

Never stored: no ``Message`` row, nothing in the frame log (``streaming.publish`` is not used), not replayed by
``resume``, not a console list change (no unread count, no activity time). A page that reloads simply sees nobody
typing until the next frame.

Throttled twice: the pages send at most one ``typing`` per ~2 s while keys are pressed (static/chat/typing.js),
and each socket relays at most one "typing" per ``TYPING_MIN_INTERVAL_SECONDS``, plus one "stopped" after it
(``Throttle``); extra frames are dropped without an error, before any database work.

Cost of a relayed frame, chosen so that typing never costs a transaction or a lock: the access check
(``access.ensure_may_act``, the same as every action) is one read-only SELECT — none at all for an anonymous
visitor — and the conversation is looked up only the first time a socket signals in it (a conversation's owner
never changes, so a socket that already follows one of its customer's conversations, or a console socket that
already watches it, has proved its right to it). At most one such SELECT per socket per second.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from channels.layers import get_channel_layer

from conversations import groups, protocol


class Throttle:
    """One socket's typing frames: a "typing" at most every ``TYPING_MIN_INTERVAL_SECONDS``, and a "stopped" only
    right after a relayed "typing" in the same conversation (so start/stop pairs cannot go faster either)."""

    def __init__(self) -> None:
        self.started_at = float("-inf")
        self.open: uuid.UUID | None = None  # the conversation of the last relayed "typing" not yet stopped

    def admit(self, conversation: uuid.UUID, typing: bool) -> bool:
        """Whether to relay this frame (False: drop it silently)."""
        if not typing:
            if self.open != conversation:
                return False
            self.open = None
            return True
        now = time.monotonic()
        if now - self.started_at < protocol.TYPING_MIN_INTERVAL_SECONDS:
            return False
        self.started_at, self.open = now, conversation
        return True


async def relay_from_customer(conversation: uuid.UUID, typing: bool) -> None:
    """To the staff watching the conversation (the customer's other tabs do not show their own typing)."""
    await _send(groups.staff(conversation), "console", protocol.typing_frame(conversation, typing, None))


async def relay_from_agent(conversation: uuid.UUID, typing: bool, agent: dict[str, Any]) -> None:
    """To the customer's sockets (``agent`` = {name}, as in every frame the customer gets about a person); the
    consoles in the conversation's group drop it (``to``)."""
    await _send(groups.conversation(conversation), "chat", protocol.typing_frame(conversation, typing, agent))


async def _send(group: str, to: str, frame: dict[str, Any]) -> None:
    await get_channel_layer().group_send(group, {"type": groups.TYPING, "to": to, "frame": frame})
