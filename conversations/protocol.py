"""The chat WebSocket protocol, defined once: frame types, fields, error codes, parsing and building.

Everything that speaks ``/ws/chat/`` (the consumer, the streaming task, the JS client via docs/protocol.md,
bench/ws_client.py, the tests) uses these names, so the protocol cannot drift between its parts.
Incoming frames are parsed into frozen dataclasses or rejected with a ``ProtocolError`` whose ``detail``
names the offending field; outgoing frames are plain dicts built by the ``*_frame`` functions below.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings

# --- Frame type names ---------------------------------------------------------------------------------------
# Client -> server
ASK = "ask"
CANCEL = "cancel"
RESUME = "resume"
FEEDBACK = "feedback"
HANDOFF = "handoff"
JOIN = "join"
PING = "ping"
CLIENT_TYPES = (ASK, CANCEL, RESUME, FEEDBACK, HANDOFF, JOIN, PING)

# Server -> client
ACK = "ack"
QUESTION = "question"
STATUS = "status"
SOURCES = "sources"
TOKEN = "token"
FINAL = "final"
ERROR = "error"
PONG = "pong"
CONVERSATION = "conversation"
# Issue 4: what a person (support staff) or the system says to the customer; not part of any message stream.
AGENT_MESSAGE = "agent_message"
AGENT_JOINED = "agent_joined"
AGENT_LEFT = "agent_left"
NUDGE = "nudge"
REMINDER = "reminder"
# FEEDBACK ("feedback") is also a server frame: the saved rating, in reply to the client's feedback.
# Frames that belong to one assistant message and carry ``message`` + ``seq`` (1, 2, 3… without gaps).
STREAM_TYPES = (STATUS, SOURCES, TOKEN, ERROR, FINAL)
# The status stage an answer waiting for a free slot on its node starts with (its text: place in line, estimate);
# the answer pipeline's own stages follow (retrieving, retrieved, generating).
QUEUED = "queued"

# --- Error codes --------------------------------------------------------------------------------------------
BAD_FRAME = "bad_frame"  # not JSON, not an object, or no string "type"
UNKNOWN_TYPE = "unknown_type"  # "type" is not one of CLIENT_TYPES
TOO_LARGE = "too_large"  # frame over CHAT_MAX_FRAME_BYTES, or question over CHAT_MAX_QUESTION_CHARS
INVALID = "invalid"  # a field is missing or has the wrong type/value
NOT_FOUND = "not_found"  # no such conversation/message/kb *for this user* (someone else's looks absent)
FORBIDDEN = "forbidden"  # yours, but the action is not allowed on it (e.g. cancel a question, rate a question)
BUSY = "busy"  # CHAT_QUEUE_LIMIT unanswered questions already; the question was NOT saved, resend it later
RATE_LIMITED = "rate_limited"  # over CHAT_RATE_LIMIT questions per minute; the question was NOT saved
BACKEND_ERROR = "backend_error"  # the answer generator failed; the message ends in state "failed"
CONFLICT = "conflict"  # console: another staff member holds this conversation (only one can)
UNAUTHENTICATED = "unauthenticated"  # handshake without a valid session or token (socket then closes 4401)
INTERNAL = "internal"  # unexpected server error while handling a frame; the socket stays usable
UNAVAILABLE = "unavailable"  # PostgreSQL or Redis unreachable for a moment: send the same frame again after retry_after
ERROR_CODES = (
    BAD_FRAME,
    UNKNOWN_TYPE,
    TOO_LARGE,
    INVALID,
    NOT_FOUND,
    FORBIDDEN,
    BUSY,
    RATE_LIMITED,
    BACKEND_ERROR,
    CONFLICT,
    UNAUTHENTICATED,
    INTERNAL,
    UNAVAILABLE,
)

# WebSocket close codes (application range 4000-4999).
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403  # console: signed in, but not staff
CLOSE_TOO_SLOW = 4008  # the client stopped reading: over CHAT_SEND_BUFFER_LIMIT_BYTES waited for it
# The node has CHAT_MAX_PENDING_HANDSHAKES handshakes waiting: reconnect shortly (the RFC's 1013; autobahn lets an
# application send only 1000 and 3000-4999).
CLOSE_TRY_AGAIN_LATER = 4013

# --- Message states and conversation statuses (mirrors conversations.models) ------------------------------
STREAMING = "streaming"
COMPLETE = "complete"
CANCELLED = "cancelled"
FAILED = "failed"
INTERRUPTED = "interrupted"
FINISHED_STATES = (COMPLETE, CANCELLED, FAILED, INTERRUPTED)

MAX_ID_CHARS = 64
MAX_COMMENT_CHARS = 2000


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


# --- Incoming frames ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ask:
    """A question. ``id`` is the client's idempotency key: the same id again returns the same ``ack``."""

    id: str
    text: str
    conversation: uuid.UUID | None = None
    kb: str | None = None


@dataclass(frozen=True)
class Cancel:
    """Stop generating this assistant message (or drop it from the queue); its partial text is kept."""

    message: uuid.UUID


@dataclass(frozen=True)
class Resume:
    """Replay every frame of ``message`` with seq > ``after``, then continue live."""

    message: uuid.UUID
    after: int


@dataclass(frozen=True)
class Feedback:
    """Thumbs up (+1) or down (-1) on an answer; sending again replaces the earlier rating."""

    message: uuid.UUID
    rating: int
    comment: str = ""


@dataclass(frozen=True)
class Handoff:
    """The customer asks for a person: the conversation goes to ``waiting_for_agent``."""

    conversation: uuid.UUID


@dataclass(frozen=True)
class Join:
    """Show this conversation on this socket: receive its live frames (other tabs, agents)."""

    conversation: uuid.UUID


@dataclass(frozen=True)
class Ping:
    """App-level heartbeat; ``t`` is echoed back in ``pong``."""

    t: Any = None


ClientFrame = Ask | Cancel | Resume | Feedback | Handoff | Join | Ping


def parse_frame(raw: str | bytes | None) -> ClientFrame:
    """Parse one incoming text frame, or raise ProtocolError with a detail naming the bad part."""
    return _parse(raw, _PARSERS)


def _parse(raw: str | bytes | None, parsers: dict) -> Any:
    max_bytes = settings.CHAT_MAX_FRAME_BYTES
    if raw is None:
        raise ProtocolError(BAD_FRAME, "Empty frame: send a JSON object with a \"type\".")
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(TOO_LARGE, f"Frame is {size} bytes; the limit is {max_bytes} bytes.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(BAD_FRAME, f"Frame is not valid JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise ProtocolError(BAD_FRAME, f"Frame must be a JSON object, got {type(data).__name__}.")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_FRAME, "Frame needs a string field \"type\".")
    parser = parsers.get(kind)
    if parser is None:
        raise ProtocolError(UNKNOWN_TYPE, f"Unknown frame type {kind!r}; expected one of: {', '.join(parsers)}.")
    return parser(data)


def _parse_ask(data: dict) -> Ask:
    raw_id = data.get("id")
    if not isinstance(raw_id, str) or not raw_id.strip() or len(raw_id) > MAX_ID_CHARS:
        raise ProtocolError(INVALID, f"ask.id must be a non-empty string of at most {MAX_ID_CHARS} characters.")
    text = data.get("text")
    if not isinstance(text, str):
        raise ProtocolError(INVALID, "ask.text must be a string.", id=raw_id)
    text = text.strip()
    if not text:
        raise ProtocolError(INVALID, "ask.text is empty.", id=raw_id)
    limit = settings.CHAT_MAX_QUESTION_CHARS
    if len(text) > limit:
        raise ProtocolError(
            TOO_LARGE, f"ask.text is {len(text)} characters; the limit is {limit}. Nothing was saved.", id=raw_id
        )
    conversation = _optional_uuid(data, "ask", "conversation", id=raw_id)
    kb = data.get("kb")
    if kb is not None and (not isinstance(kb, str) or not kb.strip()):
        raise ProtocolError(INVALID, "ask.kb must be a knowledge base name or slug.", id=raw_id)
    return Ask(id=raw_id, text=text, conversation=conversation, kb=kb.strip() if kb else None)


def _parse_cancel(data: dict) -> Cancel:
    return Cancel(message=_uuid(data, "cancel", "message"))


def _parse_resume(data: dict) -> Resume:
    message = _uuid(data, "resume", "message")
    after = data.get("after", 0)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ProtocolError(INVALID, "resume.after must be an integer >= 0 (the last seq you have; 0 for none).")
    return Resume(message=message, after=after)


def _parse_feedback(data: dict) -> Feedback:
    message = _uuid(data, "feedback", "message")
    rating = data.get("rating")
    if isinstance(rating, bool) or rating not in (1, -1):
        raise ProtocolError(INVALID, "feedback.rating must be 1 or -1.")
    comment = data.get("comment") or ""
    if not isinstance(comment, str):
        raise ProtocolError(INVALID, "feedback.comment must be a string.")
    if len(comment) > MAX_COMMENT_CHARS:
        raise ProtocolError(TOO_LARGE, f"feedback.comment is over {MAX_COMMENT_CHARS} characters.")
    return Feedback(message=message, rating=rating, comment=comment.strip())


def _parse_handoff(data: dict) -> Handoff:
    return Handoff(conversation=_uuid(data, "handoff", "conversation"))


def _parse_join(data: dict) -> Join:
    return Join(conversation=_uuid(data, "join", "conversation"))


def _parse_ping(data: dict) -> Ping:
    t = data.get("t")
    if t is not None and not isinstance(t, str | int | float):
        raise ProtocolError(INVALID, "ping.t must be a string or a number.")
    return Ping(t=t)


_PARSERS = {
    ASK: _parse_ask,
    CANCEL: _parse_cancel,
    RESUME: _parse_resume,
    FEEDBACK: _parse_feedback,
    HANDOFF: _parse_handoff,
    JOIN: _parse_join,
    PING: _parse_ping,
}


def _uuid(data: dict, kind: str, name: str, *, id: str | None = None) -> uuid.UUID:
    value = data.get(name)
    if value is None:
        raise ProtocolError(INVALID, f"{kind}.{name} is required (a UUID).", id=id)
    return _as_uuid(value, kind, name, id=id)


def _optional_uuid(data: dict, kind: str, name: str, *, id: str | None = None) -> uuid.UUID | None:
    value = data.get(name)
    return None if value in (None, "") else _as_uuid(value, kind, name, id=id)


def _as_uuid(value: Any, kind: str, name: str, *, id: str | None) -> uuid.UUID:
    if not isinstance(value, str):
        raise ProtocolError(INVALID, f"{kind}.{name} must be a UUID string.", id=id)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ProtocolError(INVALID, f"{kind}.{name} is not a valid UUID: {value[:40]!r}.", id=id) from None


# --- Outgoing frames ----------------------------------------------------------------------------------------
def _hex(value: uuid.UUID | str | None) -> str | None:
    return None if value is None else str(value)


def ack_frame(id: str, conversation: uuid.UUID, question: uuid.UUID, message: uuid.UUID | None) -> dict[str, Any]:
    """The question is saved. ``message`` is the assistant answer's id (null while a person handles the chat)."""
    return {
        "type": ACK,
        "id": id,
        "conversation": _hex(conversation),
        "question": _hex(question),
        "message": _hex(message),
    }


def question_frame(
    conversation: uuid.UUID, question: uuid.UUID, message: uuid.UUID | None, id: str, text: str
) -> dict[str, Any]:
    """A question was added to the conversation (for the other sockets showing it)."""
    return {
        "type": QUESTION,
        "conversation": _hex(conversation),
        "question": _hex(question),
        "message": _hex(message),
        "id": id,
        "text": text,
    }


def status_frame(message: uuid.UUID, seq: int, stage: str, text: str) -> dict[str, Any]:
    return {"type": STATUS, "message": _hex(message), "seq": seq, "stage": stage, "text": text}


def sources_frame(message: uuid.UUID, seq: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": SOURCES, "message": _hex(message), "seq": seq, "items": items}


def token_frame(message: uuid.UUID, seq: int, text: str) -> dict[str, Any]:
    return {"type": TOKEN, "message": _hex(message), "seq": seq, "text": text}


def final_frame(
    message: uuid.UUID,
    seq: int,
    *,
    text: str,
    html: str,
    citations: list[int],
    state: str,
    timings: dict[str, float],
    offer_handoff: bool = False,
    replaced: bool = False,
) -> dict[str, Any]:
    """The last frame of a message. ``text`` is exactly the concatenation of its token texts.

    ``offer_handoff``: the knowledge base had no answer, so the client offers "Talk to a person" (a ``handoff``
    frame) in the answer itself. Only a ``complete`` answer offers it; a stopped one never does.

    ``replaced``: the grounding guard replaced an uncited LLM answer after its tokens went out; then ``text``,
    ``html`` and ``citations`` are the replacement (what is stored), not the streamed tokens, and the client
    shows them instead. Only a ``complete`` answer can be replaced.
    """
    assert state in FINISHED_STATES, state
    return {
        "type": FINAL,
        "message": _hex(message),
        "seq": seq,
        "text": text,
        "html": html,
        "citations": citations,
        "state": state,
        "timings": timings,
        "offer_handoff": bool(offer_handoff) and state == COMPLETE,
        "replaced": bool(replaced) and state == COMPLETE,
    }


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
        frame["message"] = _hex(message)
        frame["seq"] = seq
    return frame


def feedback_frame(message: uuid.UUID, rating: int, comment: str) -> dict[str, Any]:
    """The feedback as saved (a later ``feedback`` on the same message replaces it)."""
    return {"type": FEEDBACK, "message": _hex(message), "rating": rating, "comment": comment}


def pong_frame(t: Any = None) -> dict[str, Any]:
    return {"type": PONG, "t": t}


def conversation_frame(
    conversation: uuid.UUID, status: str, title: str, streaming: list[uuid.UUID] | None = None
) -> dict[str, Any]:
    """A conversation's state: the reply to ``join`` and ``handoff``, and broadcast on every status change.

    ``streaming`` lists assistant messages still being generated, so a client can ``resume`` them.
    """
    return {
        "type": CONVERSATION,
        "conversation": _hex(conversation),
        "status": status,
        "title": title,
        "streaming": [_hex(m) for m in (streaming or [])],
    }


def encode(frame: dict[str, Any]) -> str:
    """Serialise an outgoing frame (compact; non-ASCII kept as is)."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


# --- People in the conversation (issue 4): frames the customer's sockets receive ---------------------------
def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def agent_message_frame(
    conversation: uuid.UUID, message: uuid.UUID, id: str, text: str, agent: dict[str, Any], created_at: datetime
) -> dict[str, Any]:
    """A support person's reply (role ``agent``). ``id`` is the console's idempotency key; ``agent`` = {name}."""
    return {
        "type": AGENT_MESSAGE,
        "conversation": _hex(conversation),
        "message": _hex(message),
        "id": id,
        "text": text,
        "agent": agent,
        "created_at": _iso(created_at),
    }


def agent_joined_frame(conversation: uuid.UUID, message: uuid.UUID, agent: dict[str, Any], text: str) -> dict:
    """A person took the conversation over: the bot stops; ``message`` is the saved system notice."""
    return {"type": AGENT_JOINED, "conversation": _hex(conversation), "message": _hex(message), "agent": agent,
            "text": text}


def agent_left_frame(conversation: uuid.UUID, message: uuid.UUID, agent: dict[str, Any], text: str) -> dict:
    """The person handed the conversation back to the assistant (or resolved it)."""
    return {"type": AGENT_LEFT, "conversation": _hex(conversation), "message": _hex(message), "agent": agent,
            "text": text}


def nudge_frame(conversation: uuid.UUID, message: uuid.UUID, text: str, agent: dict[str, Any]) -> dict[str, Any]:
    """A push a person sent to get the customer's attention ("Are you still there?")."""
    return {"type": NUDGE, "conversation": _hex(conversation), "message": _hex(message), "text": text, "agent": agent}


def reminder_frame(conversation: uuid.UUID, message: uuid.UUID, about: uuid.UUID, text: str) -> dict[str, Any]:
    """The system reminds the customer of the unanswered agent message ``about`` (sent once per agent message)."""
    return {"type": REMINDER, "conversation": _hex(conversation), "message": _hex(message), "about": _hex(about),
            "text": text}


# --- The staff console socket /ws/console/ (issue 4) --------------------------------------------------------
# Console -> server
WATCH = "watch"
UNWATCH = "unwatch"
TAKE_OVER = "take_over"
HAND_BACK = "hand_back"
RESOLVE = "resolve"
NOTE = "note"  # also a server frame: a saved internal note
CONSOLE_CLIENT_TYPES = (WATCH, UNWATCH, TAKE_OVER, HAND_BACK, RESOLVE, AGENT_MESSAGE, NOTE, NUDGE, PING)

# Server -> console
CONVERSATIONS = "conversations"
CONVERSATION_UPDATE = "conversation_update"
TRACE = "trace"
PRESENCE = "presence"
HOLDER = "holder"

MAX_NOTE_CHARS = 4000
MAX_NUDGE_CHARS = 500


@dataclass(frozen=True)
class ConversationAction:
    """A console frame that names only a conversation; the subclass says what to do with it."""

    conversation: uuid.UUID


class Watch(ConversationAction):
    """Show this conversation in the console: its live frames, traces, notes and who else is looking."""


class Unwatch(ConversationAction):
    """Stop showing it (presence tells the other staff)."""


class TakeOver(ConversationAction):
    """Hold the conversation: the bot stops and only this staff member answers. Only one can hold it."""


class HandBack(ConversationAction):
    """Give the conversation back to the assistant."""


class Resolve(ConversationAction):
    """Close it; a new customer question reopens it for the assistant."""


@dataclass(frozen=True)
class AgentMessage:
    """A reply to the customer. ``id`` is the idempotency key: the same id again never sends twice."""

    conversation: uuid.UUID
    id: str
    text: str


@dataclass(frozen=True)
class Note:
    """An internal note: staff only, never sent to the customer."""

    conversation: uuid.UUID
    text: str


@dataclass(frozen=True)
class Nudge:
    conversation: uuid.UUID
    text: str = ""


ConsoleFrame = Watch | Unwatch | TakeOver | HandBack | Resolve | AgentMessage | Note | Nudge | Ping


def parse_console_frame(raw: str | bytes | None) -> ConsoleFrame:
    """Parse one frame from a staff console socket (same envelope rules and errors as the chat socket)."""
    return _parse(raw, _CONSOLE_PARSERS)


def _conversation_only(cls: type, kind: str):
    return lambda data: cls(conversation=_uuid(data, kind, "conversation"))


def _text(data: dict, kind: str, limit: int, *, id: str | None = None, required: bool = True) -> str:
    text = data.get("text", "" if not required else None)
    if not isinstance(text, str):
        raise ProtocolError(INVALID, f"{kind}.text must be a string.", id=id)
    text = text.strip()
    if required and not text:
        raise ProtocolError(INVALID, f"{kind}.text is empty.", id=id)
    if len(text) > limit:
        raise ProtocolError(TOO_LARGE, f"{kind}.text is {len(text)} characters; the limit is {limit}.", id=id)
    return text


def _parse_agent_message(data: dict) -> AgentMessage:
    raw_id = data.get("id")
    if not isinstance(raw_id, str) or not raw_id.strip() or len(raw_id) > MAX_ID_CHARS:
        raise ProtocolError(
            INVALID, f"agent_message.id must be a non-empty string of at most {MAX_ID_CHARS} characters."
        )
    conversation = _uuid(data, AGENT_MESSAGE, "conversation", id=raw_id)
    text = _text(data, AGENT_MESSAGE, settings.CHAT_MAX_QUESTION_CHARS, id=raw_id)
    return AgentMessage(conversation=conversation, id=raw_id, text=text)


def _parse_note(data: dict) -> Note:
    return Note(conversation=_uuid(data, NOTE, "conversation"), text=_text(data, NOTE, MAX_NOTE_CHARS))


def _parse_nudge(data: dict) -> Nudge:
    return Nudge(
        conversation=_uuid(data, NUDGE, "conversation"),
        text=_text(data, NUDGE, MAX_NUDGE_CHARS, required=False),
    )


_CONSOLE_PARSERS = {
    WATCH: _conversation_only(Watch, WATCH),
    UNWATCH: _conversation_only(Unwatch, UNWATCH),
    TAKE_OVER: _conversation_only(TakeOver, TAKE_OVER),
    HAND_BACK: _conversation_only(HandBack, HAND_BACK),
    RESOLVE: _conversation_only(Resolve, RESOLVE),
    AGENT_MESSAGE: _parse_agent_message,
    NOTE: _parse_note,
    NUDGE: _parse_nudge,
    PING: _parse_ping,
}


def conversations_frame(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The console list snapshot, sent on connect: waiting first (longest wait first), then active, recent, resolved."""
    return {"type": CONVERSATIONS, "items": items}


def conversation_update_frame(item: dict[str, Any]) -> dict[str, Any]:
    """One list row changed (or is new): replace the row with the same ``item.conversation``."""
    return {"type": CONVERSATION_UPDATE, "item": item}


def trace_frame(conversation: uuid.UUID, message: uuid.UUID, trace: dict[str, Any], state: str) -> dict[str, Any]:
    """The assistant's retrieval trace of one answer: query, passages with scores, timings, generator."""
    return {"type": TRACE, "conversation": _hex(conversation), "message": _hex(message), "state": state,
            "trace": trace}


def note_frame(conversation: uuid.UUID, note: dict[str, Any]) -> dict[str, Any]:
    """An internal note as saved: ``note`` = {id, author, text, created_at}."""
    return {"type": NOTE, "conversation": _hex(conversation), "note": note}


def presence_frame(conversation: uuid.UUID, watchers: list[dict[str, Any]]) -> dict[str, Any]:
    """The staff members who have this conversation open right now: [{id, name}], sorted by name."""
    return {"type": PRESENCE, "conversation": _hex(conversation), "watchers": watchers}


def holder_frame(
    conversation: uuid.UUID, status: str, holder: dict[str, Any] | None, by: dict[str, Any] | None, action: str
) -> dict[str, Any]:
    """Who holds the conversation changed: ``action`` is take_over / hand_back / resolve, done ``by`` someone."""
    return {"type": HOLDER, "conversation": _hex(conversation), "status": status, "holder": holder, "by": by,
            "action": action}
