"""The frames the server sends, built in one place: plain dicts, serialised by ``encode``."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from conversations.protocol.names import (
    ACK,
    AGENT_JOINED,
    AGENT_LEFT,
    AGENT_MESSAGE,
    ANSWER_VERSION,
    ASSIGNED,
    COMPLETE,
    CONVERSATION,
    CONVERSATION_HIDDEN,
    CONVERSATION_UPDATE,
    CONVERSATIONS,
    FEEDBACK,
    FINAL,
    FINISHED_STATES,
    HOLDER,
    NOTE,
    NUDGE,
    PONG,
    PRESENCE,
    QUESTION,
    REMINDER,
    SOURCES,
    STATUS,
    TOKEN,
    TOOL_RESULT,
    TRACE,
    TYPING,
)


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
    conversation: uuid.UUID,
    question: uuid.UUID,
    message: uuid.UUID | None,
    id: str,
    text: str,
    attachments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A question was added to the conversation (for the other sockets showing it). ``attachments``: the images sent
    with it, [{id, url, content_type, width, height}] (conversations/attachments.py ``described``)."""
    return {
        "type": QUESTION,
        "conversation": _hex(conversation),
        "question": _hex(question),
        "message": _hex(message),
        "id": id,
        "text": text,
        "attachments": attachments or [],
    }


def status_frame(message: uuid.UUID, seq: int, stage: str, text: str) -> dict[str, Any]:
    return {"type": STATUS, "message": _hex(message), "seq": seq, "stage": stage, "text": text}


def sources_frame(message: uuid.UUID, seq: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": SOURCES, "message": _hex(message), "seq": seq, "items": items}


def tool_result_frame(message: uuid.UUID, seq: int, tool: dict[str, Any]) -> dict[str, Any]:
    """What a tool answered for this message, shown as a card: ``tool`` = {n, name, outcome, ok, fields: [{name,
    value}]} (only the tool's visible fields; ``n`` is the source number the answer cites it by, null when the call
    failed and nothing can be cited)."""
    return {"type": TOOL_RESULT, "message": _hex(message), "seq": seq, "tool": tool}


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
    version: int = 1,
) -> dict[str, Any]:
    """The last frame of a message. ``text`` is exactly the concatenation of its token texts.

    ``version``: which version of the answer to its question this is (1, or 2, 3… once regenerated).

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
        "version": version,
    }


def answer_version_frame(
    conversation: uuid.UUID, question: uuid.UUID, message: uuid.UUID, version: int, versions: int, id: str = ""
) -> dict[str, Any]:
    """A new version of the answer to ``question`` was started (``regenerate``): ``message`` is its id, ``version``
    its number and ``versions`` how many the question has now. Its stream frames follow like any answer's. Sent to
    every socket showing the conversation and the console; ``id`` echoes the regenerate frame's."""
    return {
        "type": ANSWER_VERSION,
        "conversation": _hex(conversation),
        "question": _hex(question),
        "message": _hex(message),
        "version": version,
        "versions": versions,
        "id": id,
    }


def feedback_frame(message: uuid.UUID, rating: int, comment: str) -> dict[str, Any]:
    """The feedback as saved (a later ``feedback`` on the same message replaces it)."""
    return {"type": FEEDBACK, "message": _hex(message), "rating": rating, "comment": comment}


def pong_frame(t: Any = None) -> dict[str, Any]:
    return {"type": PONG, "t": t}


def conversation_frame(
    conversation: uuid.UUID,
    status: str,
    title: str,
    streaming: list[uuid.UUID] | None = None,
    *,
    away: str | None = None,
    left_message: dict[str, Any] | None = None,
    ended: bool = False,
    rating: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A conversation's state: the reply to ``join`` and ``handoff``, and broadcast on every status change.

    ``streaming`` lists assistant messages still being generated, so a client can ``resume`` them. ``away``: while a
    person is asked for, why none can answer now (``closed``, ``nobody_online``; else null): the client asks for an
    e-mail address. ``left_message``: the customer's "offline" mark (``left_message``). ``ended``: the customer
    ended it or staff resolved it (the page asks for a CSAT rating); ``rating``: the customer's CSAT {score,
    comment}, or null.
    """
    return {
        "type": CONVERSATION,
        "conversation": _hex(conversation),
        "status": status,
        "title": title,
        "streaming": [_hex(m) for m in (streaming or [])],
        "away": away,
        "left_message": left_message,
        "ended": ended,
        "rating": rating,
    }


def left_message(email: str, at: datetime | None) -> dict[str, Any] | None:
    """"Customer offline" (``conversation`` frames, console rows): {email, at} while the customer is away with an
    address left, where staff replies are e-mailed (conversations/leave_message.py); else None."""
    return {"email": email, "at": _iso(at)} if email and at is not None else None


def encode(frame: dict[str, Any]) -> str:
    """Serialise an outgoing frame (compact; non-ASCII kept as is). Never NaN or Infinity, which a browser's
    ``JSON.parse`` rejects: a frame holding one is our bug and fails here, loudly."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# --- People in the conversation: frames the customer's sockets receive -----------------------------------
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


def typing_frame(conversation: uuid.UUID, typing: bool, agent: dict[str, Any] | None) -> dict[str, Any]:
    """Someone on the other side is typing (``typing`` false: stopped). To the customer: ``agent`` = {name}, the
    person's display name only; to the console: ``agent`` null, the customer. Never stored, never replayed."""
    return {"type": TYPING, "conversation": _hex(conversation), "typing": typing, "agent": agent}


# --- The staff console socket /ws/console/ ------------------------------------------------------------------
def conversations_frame(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The console list snapshot, sent on connect: waiting first (longest wait first), then active, recent, resolved."""
    return {"type": CONVERSATIONS, "items": items}


def conversation_update_frame(item: dict[str, Any]) -> dict[str, Any]:
    """One list row changed (or is new): replace the row with the same ``item.conversation``."""
    return {"type": CONVERSATION_UPDATE, "item": item}


def conversation_hidden_frame(conversation: uuid.UUID | str) -> dict[str, Any]:
    """A row this socket listed no longer matches its search and filters (conversations/console_search.py): drop it."""
    return {"type": CONVERSATION_HIDDEN, "conversation": _hex(conversation)}


def assigned_frame(
    conversation: uuid.UUID, assignee: dict[str, Any] | None, by: dict[str, Any] | None
) -> dict[str, Any]:
    """Who the conversation is assigned to changed (``assignee`` {id, name} or null: nobody), done ``by`` someone."""
    return {"type": ASSIGNED, "conversation": _hex(conversation), "assignee": assignee, "by": by}


def trace_frame(
    conversation: uuid.UUID, message: uuid.UUID, trace: dict[str, Any], state: str, version: int = 1, versions: int = 1
) -> dict[str, Any]:
    """The assistant's retrieval trace of one answer: query, passages with scores, timings, generator; ``version``
    of ``versions`` of the answer to its question (regenerate)."""
    return {"type": TRACE, "conversation": _hex(conversation), "message": _hex(message), "state": state,
            "trace": trace, "version": version, "versions": versions}


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
