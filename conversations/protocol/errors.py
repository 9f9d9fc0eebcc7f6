"""Error codes, close codes and the refusal of a frame (``ProtocolError`` → an ``error`` frame)."""

from __future__ import annotations

import uuid
from typing import Any

from conversations.protocol.names import ERROR

# --- Error codes (docs/protocol.md "Errors") ----------------------------------------------------------------
BAD_FRAME = "bad_frame"  # not JSON (NaN/Infinity included), too deeply nested, not an object, or no string "type"
UNKNOWN_TYPE = "unknown_type"  # "type" is not a frame type of this socket
TOO_LARGE = "too_large"  # frame over CHAT_MAX_FRAME_BYTES, or a text field over its limit
INVALID = "invalid"  # a field is missing or has the wrong type/value (NUL, lone surrogates, out of range)
NOT_FOUND = "not_found"  # no such conversation/message/kb *for this user* (someone else's looks absent)
FORBIDDEN = "forbidden"  # yours, but the action is not allowed on it (e.g. cancel a question, rate a question)
BUSY = "busy"  # CHAT_QUEUE_LIMIT unanswered questions already; the question was NOT saved, resend it later
RATE_LIMITED = "rate_limited"  # over CHAT_RATE_LIMIT questions per minute; the question was NOT saved
BACKEND_ERROR = "backend_error"  # the answer generator failed; the message ends in state "failed"
CONFLICT = "conflict"  # console: another staff member holds this conversation (only one can)
UNAUTHENTICATED = "unauthenticated"  # handshake without a valid session or token (socket then closes 4401)
INTERNAL = "internal"  # our own bug while handling a frame (never the client's input); the socket stays usable
UNAVAILABLE = "unavailable"  # PostgreSQL or Redis unreachable for a moment: send the same frame again after retry_after
# The user (or visitor) opened a newer socket past CHAT_MAX_SOCKETS_PER_USER: this, their oldest, closes (4429).
TOO_MANY_SOCKETS = "too_many_sockets"
ERROR_CODES = frozenset(
    {BAD_FRAME, UNKNOWN_TYPE, TOO_LARGE, INVALID, NOT_FOUND, FORBIDDEN, BUSY, RATE_LIMITED, BACKEND_ERROR, CONFLICT,
     UNAUTHENTICATED, INTERNAL, UNAVAILABLE, TOO_MANY_SOCKETS}
)  # fmt: skip
#: The codes that mean the client sent something malformed (logged only as a rate-limited warning line).
MALFORMED = frozenset({BAD_FRAME, UNKNOWN_TYPE, TOO_LARGE, INVALID})

# --- WebSocket close codes (application range 4000-4999; docs/protocol.md "Close codes") --------------------
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403  # console: signed in, but not staff
CLOSE_TOO_SLOW = 4008  # the client stopped reading: over CHAT_SEND_BUFFER_LIMIT_BYTES waited for it
# The node has CHAT_MAX_PENDING_HANDSHAKES handshakes waiting: reconnect shortly (the RFC's 1013; autobahn lets an
# application send only 1000 and 3000-4999).
CLOSE_TRY_AGAIN_LATER = 4013
# The user's access was revoked while the socket was open (logout, deactivation, loss of staff rights on the
# console, password change, "sign out everywhere": conversations/revocation.py). Sent after an ``error`` frame
# whose ``reason`` says which; the client must not reconnect on its own (the new handshake would get 4401/4403).
CLOSE_REVOKED = 4001
# Why: the ``reason`` of the ``error`` frame sent before close 4001 (docs/protocol.md "Revocation"; the pages'
# copy is static/chat/protocol.js REVOKED_REASON).
REVOKED_LOGOUT = "logout"  # that session signed out (in this or another window)
REVOKED_DEACTIVATED = "deactivated"
REVOKED_STAFF_REMOVED = "staff_removed"  # console sockets only
REVOKED_PASSWORD_CHANGED = "password_changed"
REVOKED_SIGNED_OUT_EVERYWHERE = "signed_out_everywhere"  # POST /api/token/revoke/
REVOKED_SITE_CLOSED = "site_closed"  # widget sockets: the site was switched off or no longer lists the host page
REVOKED_REASONS = frozenset(
    {REVOKED_LOGOUT, REVOKED_DEACTIVATED, REVOKED_STAFF_REMOVED, REVOKED_PASSWORD_CHANGED, REVOKED_SIGNED_OUT_EVERYWHERE,
     REVOKED_SITE_CLOSED}
)
# The user (or anonymous visitor) has more than CHAT_MAX_SOCKETS_PER_USER sockets of this kind open across the site:
# the oldest is closed with this (the HTTP 429 twin, as 4401/4403 are 401/403), after a ``too_many_sockets`` error.
# The client must not reconnect on its own: it would close another of the user's sockets, which would reconnect…
# (conversations/open_sockets.py).
CLOSE_TOO_MANY_SOCKETS = 4429
# RFC 6455's "message too big": a frame over Daphne's --websocket-max-message-size (sent by autobahn, with a reason).
CLOSE_TOO_BIG = 1009


class ProtocolError(Exception):
    """A frame the server refuses; becomes ``error {code, detail, id?}`` and the socket stays open."""

    def __init__(self, code: str, detail: str, *, id: str | None = None, retry_after: int | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.id = id
        self.retry_after = retry_after

    def frame(self) -> dict[str, Any]:
        return error_frame(self.code, self.detail, id=self.id, retry_after=self.retry_after)


def error_frame(
    code: str,
    detail: str,
    *,
    id: str | None = None,
    message: uuid.UUID | None = None,
    seq: int | None = None,
    retry_after: int | None = None,
) -> dict[str, Any]:
    """An error. With ``message``+``seq`` it is part of that message's stream (e.g. backend_error); with
    ``retry_after`` (whole seconds) the client may send the same frame again after that long."""
    assert code in ERROR_CODES, code
    frame: dict[str, Any] = {"type": ERROR, "code": code, "detail": detail}
    if id is not None:
        frame["id"] = id
    if retry_after is not None:
        frame["retry_after"] = max(1, int(retry_after))
    if message is not None:
        frame["message"] = None if message is None else str(message)
        frame["seq"] = seq
    return frame
