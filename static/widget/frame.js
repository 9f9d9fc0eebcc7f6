// The widget's chat panel, inside the host page's iframe (templates/widget/frame.html; docs/widget.md).
//
// It is the chat page (static/chat/chat.js, the same ChatPage and stream renderer) with a visitor instead of a
// signed-in user: the host page's script (static/widget/widget.js) says which page the visitor is on and, for a
// customer signed in there, who they are (signed by the host site's server), and the visitor token it keeps; this
// frame exchanges its embed ticket for a (refreshed) visitor token and offers it to the socket as a subprotocol.
// The host page keeps the token in its own storage (its origin's localStorage), so the visitor and their
// conversation survive reloads and navigation on the host site: a frame's own storage is third-party storage, which
// browsers that block third-party cookies block too (and others partition).

import { ChatPage } from "../chat/chat.js";
import { format, gettext } from "../chat/i18n.js";
import { CHAT_SUBPROTOCOL, VISITOR_TOKEN_SUBPROTOCOL_PREFIX } from "../chat/protocol.js";

export const MESSAGE = Object.freeze({
  READY: "support:ready", // frame -> host page: send me the page and the identity
  INIT: "support:init", // host page -> frame: {page, identity, token}
  TOKEN: "support:token", // frame -> host page: {token}, the visitor token to keep
  CLOSE: "support:close", // frame -> host page: the visitor closed the panel
  OPEN: "support:open", // host page -> frame: the panel was opened (focus the composer)
});

const config = JSON.parse(document.getElementById("widget-config").textContent);
const colour = JSON.parse(document.getElementById("widget-color").textContent);
const root = document.querySelector("[data-widget]");
const body = root.querySelector("[data-widget-body]");
const errorBanner = root.querySelector("[data-widget-error]");
let started = false;

if (colour) {
  document.documentElement.style.setProperty("--brand", colour);
  document.documentElement.style.setProperty("--user-bg", colour);
}

function toHost(type, data = {}) {
  window.parent.postMessage({ ...data, type }, config.hostOrigin);
}

function showError(text) {
  errorBanner.textContent = text;
  errorBanner.hidden = false;
}

/** A visitor token for this visitor (the stored one's, refreshed) and their latest conversation, rendered. */
async function visitorToken(init) {
  const response = await fetch(config.visitorUrl, {
    method: "POST",
    credentials: "omit",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      ticket: config.ticket,
      token: typeof init.token === "string" ? init.token : null,
      page: typeof init.page === "string" ? init.page : "",
      identity: init.identity || null,
      language: config.language,
    }),
  });
  if (!response.ok) {
    const why = await response.json().catch(() => ({}));
    throw new Error(why.error || String(response.status));
  }
  return response.json();
}

async function start(init) {
  if (started) return;
  started = true;
  let visitor;
  try {
    visitor = await visitorToken(init);
  } catch (err) {
    started = false;
    showError(
      err.message === "rate_limited"
        ? gettext("Too many new chats from your network. Please try again in a while.")
        : err.message === "ticket"
          ? gettext("This chat has been open a long time. Reload the page to continue.")
          : format(gettext("The chat could not start (%(reason)s). Please try again later."), { reason: err.message }),
    );
    return;
  }
  toHost(MESSAGE.TOKEN, { token: visitor.token });
  const greeting = body.querySelector("[data-empty]")?.textContent;
  body.innerHTML = visitor.chat_html; // the server's rendering of the conversation, as on the chat page
  const empty = body.querySelector("[data-empty]");
  if (empty && greeting) empty.textContent = greeting; // the page's own data-greeting, if it gave one
  root.dataset.status = visitor.status;
  root.dataset.identity = visitor.identity; // "verified", "refused" or "none" (tests and styling)
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const page = new ChatPage(root, {
    conversation: visitor.conversation,
    status: visitor.status,
    ended: visitor.ended,
    wsUrl: `${scheme}://${location.host}/ws/chat/`,
    wsProtocols: [CHAT_SUBPROTOCOL, VISITOR_TOKEN_SUBPROTOCOL_PREFIX + visitor.token],
    // Images (static/chat/attach.js): uploaded and shown with the visitor token, no cookie.
    uploadUrl: config.uploadUrl,
    maxImages: config.maxImages,
    uploadHeaders: () => ({ Authorization: `Visitor ${visitor.token}` }),
    // A refused or revoked visitor socket: a reload gets a fresh token (or says the chat is closed here).
    onSignedOut: () => {
      showError(gettext("The chat was interrupted. Reload the page to continue."));
      return true;
    },
  });
  window.__chat = {
    page,
    get socket() {
      return page.socket.socket;
    },
  };
}

window.addEventListener("message", (event) => {
  if (event.source !== window.parent || event.origin !== config.hostOrigin) return;
  const data = event.data || {};
  if (data.type === MESSAGE.INIT) start(data);
  if (data.type === MESSAGE.OPEN) root.querySelector("textarea")?.focus();
});
root.querySelector("[data-close]").addEventListener("click", () => toHost(MESSAGE.CLOSE));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") toHost(MESSAGE.CLOSE);
});
toHost(MESSAGE.READY);
