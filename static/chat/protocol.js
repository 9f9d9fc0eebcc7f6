// The WebSocket protocol's names for the browser, defined once: frame types of /ws/chat/ and /ws/console/ and
// the conversation statuses. Mirrors conversations/protocol/names.py (docs/protocol.md); tests/test_chat_views.py
// checks that the two agree.

export const FRAME = Object.freeze({
  // chat, client -> server
  ASK: "ask",
  CANCEL: "cancel",
  RESUME: "resume",
  FEEDBACK: "feedback", // also server -> client: the saved rating
  HANDOFF: "handoff",
  JOIN: "join",
  LEAVE_MESSAGE: "leave_message", // nobody can answer now: an e-mail address for the reply
  PING: "ping",
  TYPING: "typing", // both sockets, and server -> client: who is typing on the other side (never stored)
  REGENERATE: "regenerate", // another version of a finished answer
  END: "end", // the customer ends the conversation ("End chat"); CSAT is asked next
  RATE: "rate", // CSAT: the customer's 1–5 rating of an ended conversation
  // chat, server -> client
  ACK: "ack",
  QUESTION: "question",
  STATUS: "status",
  SOURCES: "sources",
  TOOL_RESULT: "tool_result", // what a tool answered, for a card; cited like a source
  TOKEN: "token",
  FINAL: "final",
  ERROR: "error",
  PONG: "pong",
  CONVERSATION: "conversation",
  ANSWER_VERSION: "answer_version", // a new version of an answer was started (the reply to `regenerate`)
  AGENT_MESSAGE: "agent_message", // also console -> server: a reply
  AGENT_JOINED: "agent_joined",
  AGENT_LEFT: "agent_left",
  NUDGE: "nudge", // also console -> server
  REMINDER: "reminder",
  // console, console -> server
  WATCH: "watch",
  UNWATCH: "unwatch",
  TAKE_OVER: "take_over",
  HAND_BACK: "hand_back",
  RESOLVE: "resolve",
  NOTE: "note", // also server -> console: a saved note
  ASSIGN: "assign", // also a `holder` frame's action: a held conversation passed to a colleague
  // console, server -> console
  CONVERSATIONS: "conversations",
  CONVERSATION_UPDATE: "conversation_update",
  TRACE: "trace",
  PRESENCE: "presence",
  HOLDER: "holder",
  ASSIGNED: "assigned", // who the conversation is assigned to changed
  CONVERSATION_HIDDEN: "conversation_hidden", // a row left this socket's filtered list
});

// A `conversation` frame's `away`: why no person can answer now while one is asked for (conversations/protocol/names.py
// AWAY_*; static/chat/leave_message.js then asks for an e-mail address).
export const AWAY = Object.freeze({
  CLOSED: "closed", // outside the business hours of the conversation's site
  NOBODY_ONLINE: "nobody_online", // no staff member has the support console open
});

// WebSocket close codes the server sends (conversations/protocol/errors.py, docs/protocol.md "Close codes").
export const CLOSE = Object.freeze({
  REVOKED: 4001, // access revoked while open (logout, deactivation, password change, …): the error before says why
  UNAUTHENTICATED: 4401, // the handshake had no valid session or token
  FORBIDDEN: 4403, // console: signed in, but not staff
  TOO_SLOW: 4008,
  TRY_AGAIN_LATER: 4013,
  TOO_MANY_SOCKETS: 4429, // the user opened more than CHAT_MAX_SOCKETS_PER_USER sockets: this, the oldest, closed
});

// The `code` of the error frame sent before a TOO_MANY_SOCKETS close (conversations/protocol/errors.py).
export const TOO_MANY_SOCKETS_ERROR = "too_many_sockets";

// Why a socket was closed with REVOKED: the `reason` of the `error` frame before it
// (conversations/protocol/errors.py REVOKED_*; tests/test_revocation.py checks that the two agree).
export const REVOKED_REASON = Object.freeze({
  LOGOUT: "logout",
  DEACTIVATED: "deactivated",
  STAFF_REMOVED: "staff_removed",
  PASSWORD_CHANGED: "password_changed",
  SIGNED_OUT_EVERYWHERE: "signed_out_everywhere",
  SITE_CLOSED: "site_closed",
});

// A widget socket offers its visitor token as the subprotocol `visitor.<token>` beside this one, which the server
// answers with (conversations/protocol/names.py CHAT_SUBPROTOCOL; docs/widget.md).
export const CHAT_SUBPROTOCOL = "chat";
export const VISITOR_TOKEN_SUBPROTOCOL_PREFIX = "visitor.";

// Closes after which reconnecting cannot help: the person has to sign in (again).
export const SIGNED_OUT_CLOSES = new Set([CLOSE.REVOKED, CLOSE.UNAUTHENTICATED, CLOSE.FORBIDDEN]);
// Closes after which reconnecting by itself would do harm: a socket closed for being the user's oldest past the bound
// would close another of theirs by reconnecting, which would reconnect in turn. The person chooses (a reload).
export const DISPLACED_CLOSES = new Set([CLOSE.TOO_MANY_SOCKETS]);

// Frames that belong to one assistant message and carry `message` + `seq` (an `error` only when it has them).
export const STREAM_TYPES = new Set([FRAME.STATUS, FRAME.SOURCES, FRAME.TOOL_RESULT, FRAME.TOKEN, FRAME.FINAL, FRAME.ERROR]);

export const CONVERSATION_STATUS = Object.freeze({
  BOT: "bot",
  WAITING_FOR_AGENT: "waiting_for_agent",
  AGENT: "agent",
  RESOLVED: "resolved",
});

/** Whether the customer may ask for a person now. Mirrors conversations.views.handoff_available. */
export function handoffAvailable(status) {
  return status !== CONVERSATION_STATUS.WAITING_FOR_AGENT && status !== CONVERSATION_STATUS.AGENT;
}
