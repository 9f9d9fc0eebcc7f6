"""The names of the WebSocket protocol: frame types of both sockets, message states, limits.

static/chat/protocol.js is the browser's copy of the frame names (tests/test_chat_views.py compares them).
"""

from __future__ import annotations

# --- /ws/chat/, client -> server ----------------------------------------------------------------------------
ASK = "ask"
CANCEL = "cancel"
RESUME = "resume"
FEEDBACK = "feedback"  # also server -> client: the saved rating
HANDOFF = "handoff"
JOIN = "join"
LEAVE_MESSAGE = "leave_message"  # nobody can answer now: an e-mail address for the reply
PING = "ping"  # both sockets
TYPING = "typing"  # both sockets, and server -> client: who is typing on the other side (never stored)
REGENERATE = "regenerate"  # another version of a finished answer (conversations/answer_versions.py)
END = "end"  # the customer ends the conversation ("End chat"); CSAT is asked next (conversations/csat.py)
RATE = "rate"  # CSAT: the customer's 1–5 rating of an ended conversation, with an optional comment

# --- /ws/chat/, server -> client ----------------------------------------------------------------------------
ACK = "ack"
QUESTION = "question"
STATUS = "status"
SOURCES = "sources"
TOOL_RESULT = "tool_result"  # what a tool (the company's API) answered, for a card; cited like a source
TOKEN = "token"
FINAL = "final"
ERROR = "error"
PONG = "pong"
CONVERSATION = "conversation"
ANSWER_VERSION = "answer_version"  # a new version of an answer was started (the reply to ``regenerate``)
# A ``conversation`` frame's ``away``: why no person can answer now while one is asked for
# (conversations/leave_message.py).
AWAY_CLOSED = "closed"  # outside the business hours of the conversation's site
AWAY_NOBODY_ONLINE = "nobody_online"  # no staff member has the support console open
# What a person (support staff) or the system says to the customer; not part of any message stream.
AGENT_MESSAGE = "agent_message"  # also console -> server: a reply
AGENT_JOINED = "agent_joined"
AGENT_LEFT = "agent_left"
NUDGE = "nudge"  # also console -> server
REMINDER = "reminder"
# Frames that belong to one assistant message and carry ``message`` + ``seq`` (1, 2, 3… without gaps).
STREAM_TYPES = (STATUS, SOURCES, TOOL_RESULT, TOKEN, ERROR, FINAL)
# The status stage an answer waiting for a free slot on its node starts with (its text: place in line, estimate);
# the answer pipeline's own stages follow (retrieving, retrieved, generating).
QUEUED = "queued"

# --- /ws/console/, console -> server ------------------------------------------------------------------------
WATCH = "watch"
UNWATCH = "unwatch"
TAKE_OVER = "take_over"
HAND_BACK = "hand_back"
RESOLVE = "resolve"
NOTE = "note"  # also server -> console: a saved internal note
ASSIGN = "assign"  # also a `holder` frame's action: a held conversation passed to a colleague

# --- /ws/console/, server -> console ------------------------------------------------------------------------
CONVERSATIONS = "conversations"
CONVERSATION_UPDATE = "conversation_update"
TRACE = "trace"
PRESENCE = "presence"
HOLDER = "holder"
ASSIGNED = "assigned"  # who the conversation is assigned to changed (conversations/assignment.py)
CONVERSATION_HIDDEN = "conversation_hidden"  # a row left this socket's filtered list (conversations/console_search.py)

# --- Message states and conversation statuses (mirrors conversations.models) ------------------------------
STREAMING = "streaming"
COMPLETE = "complete"
CANCELLED = "cancelled"
FAILED = "failed"
INTERRUPTED = "interrupted"
FINISHED_STATES = (COMPLETE, CANCELLED, FAILED, INTERRUPTED)

# --- Field limits (the frame's byte size: CHAT_MAX_FRAME_BYTES; a question's length: CHAT_MAX_QUESTION_CHARS) --
MAX_ID_CHARS = 64
MAX_COMMENT_CHARS = 2000
MAX_NOTE_CHARS = 4000
MAX_NUDGE_CHARS = 500
MAX_EMAIL_CHARS = 254  # RFC 5321's longest path; an EmailField's length
MAX_SEQ = 2**31 - 1  # seq is a PostgreSQL integer
MAX_SAFE_INTEGER = 2**53 - 1  # a number the browser's JSON.parse reads exactly (ping.t is echoed back)
MAX_DEPTH = 16  # JSON nesting of a client frame (ours are flat objects)
TYPING_MIN_INTERVAL_SECONDS = 1.0  # a socket's ``typing`` frames closer together than this are dropped, silently

# A widget socket (docs/widget.md) offers its visitor token as the subprotocol ``visitor.<token>`` beside
# ``chat``, which the server answers with (browsers cannot set headers on a WebSocket, and a URL ends up in logs).
CHAT_SUBPROTOCOL = "chat"
VISITOR_TOKEN_SUBPROTOCOL_PREFIX = "visitor."
