"""Every channel-layer group and event name, in one place: the domain actions publish to these groups, the
consumers (and a node's control channel) handle these events.

Groups
    ``conversation(id)`` — ``conv.<hex>``: every socket showing a conversation (the customer's tabs and
    the staff watching it), on any node.
    ``staff(id)`` — ``staff.<hex>``: the staff watching one conversation (notes, traces, presence).
    ``CONSOLE`` — every support-console socket (the conversation list).
    ``user(id)`` — ``user.<id>``: every chat and console socket of one signed-in user, on any node (revocation).

Events (Channels calls the handler named like the type with "." → "_")
    ``FRAME`` ``chat.frame`` → ``ChatConsumer.chat_frame``: one protocol frame for a conversation's sockets.
    ``STAFF_FRAME`` ``staff.frame`` → ``ConsoleConsumer.staff_frame``: a frame for its staff only.
    ``CONSOLE_ITEM`` ``console.item`` → ``ConsoleConsumer.console_item``: one row of the conversation list.
    ``STAFF_PRESENCE`` ``staff.presence`` → ``ConsoleConsumer.staff_presence``: who is watching.
    ``TYPING`` ``typing.frame`` → ``ChatConsumer.typing_frame``: a ``typing`` frame for one side of a conversation
    (``to``: the socket kind, ``chat`` or ``console``), sent to ``conversation(id)`` for the customer and to
    ``staff(id)`` for the staff; never stored (``conversations/typing_indicators.py``).
    ``STREAM_CANCEL`` ``stream.cancel`` → a node's control channel: stop generating that answer.
    ``USER_REVOKED`` ``user.revoked`` → ``ChatConsumer.user_revoked``: the user's access was revoked; close the
    sockets it concerns (``conversations/revocation.py``).
    ``SOCKET_EVICTED`` ``socket.evicted`` → ``ChatConsumer.socket_evicted``, sent to one socket's channel: its user
    opened more than ``CHAT_MAX_SOCKETS_PER_USER`` and it is the oldest; close it (``conversations/open_sockets.py``).

PostgreSQL channel (``LISTEN``/``NOTIFY``, not the channel layer)
    ``USER_REVOKED_NOTIFY`` — every revocation is also sent here, in the transaction that made it, so it reaches
    every node whichever process made the change (``conversations/revocation_listener.py``).
"""

from __future__ import annotations

import uuid

CONSOLE = "console"

FRAME = "chat.frame"
STAFF_FRAME = "staff.frame"
CONSOLE_ITEM = "console.item"
STAFF_PRESENCE = "staff.presence"
TYPING = "typing.frame"
STREAM_CANCEL = "stream.cancel"
USER_REVOKED = "user.revoked"
SOCKET_EVICTED = "socket.evicted"

USER_REVOKED_NOTIFY = "chatsite_user_revoked"


def conversation(conversation_id: uuid.UUID | str) -> str:
    """The group of every socket (and staff watcher) showing the conversation, on any node."""
    return f"conv.{uuid.UUID(str(conversation_id)).hex}"


def staff(conversation_id: uuid.UUID | str) -> str:
    """The group of the staff watching the conversation."""
    return f"staff.{uuid.UUID(str(conversation_id)).hex}"


def user(user_id: int | str) -> str:
    """The group of every socket (chat and console) of one signed-in user, on any node."""
    return f"user.{int(user_id)}"
