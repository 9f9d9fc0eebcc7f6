// The staff support console: the live conversation list (/console/) and one conversation (/console/c/<id>/).
//
// Speaks /ws/console/ (docs/protocol.md, "Console"). Reuses the chat page's socket (reconnect, backoff, ping),
// its stream renderer (stream.js) and its message markup (render.js), so an answer looks here exactly as the
// customer sees it. List rows are cloned from the server's own row (templates/console/_row.html).

import { CLOSE, CONVERSATION_STATUS, FRAME, REVOKED_REASON, TOO_MANY_SOCKETS_ERROR } from "../chat/protocol.js";
import { showImages } from "../chat/attach.js";
import { agentMessage, localizeTimes, showTime, systemMessage, userMessage } from "../chat/render.js";
import { ChatSocket, isStreamFrame, newId } from "../chat/socket.js";
import { AnswerStream, ORDER } from "../chat/stream.js";
import { TypingIndicator, TypingSender } from "../chat/typing.js";
import { bindVersions, placeVersion } from "../chat/versions.js";
import { WaitingAlerts } from "./alerts.js";
import { attachSavedReplies } from "./saved_replies.js";

const STATUS_LABELS = {
  [CONVERSATION_STATUS.BOT]: "Answered by the assistant",
  [CONVERSATION_STATUS.WAITING_FOR_AGENT]: "Waiting for a person",
  [CONVERSATION_STATUS.AGENT]: "A person is answering",
  [CONVERSATION_STATUS.RESOLVED]: "Resolved",
};
const SECTION_ORDER = ["waiting", "active", "recent", "resolved"];
// Why the server closed the console for good (the `reason` of the error before close 4001; docs/protocol.md).
const SIGNED_OUT_REASONS = {
  [REVOKED_REASON.LOGOUT]: "You were signed out (in this or another tab).",
  [REVOKED_REASON.DEACTIVATED]: "You were signed out: your account was deactivated.",
  [REVOKED_REASON.PASSWORD_CHANGED]: "You were signed out because your password was changed.",
  [REVOKED_REASON.SIGNED_OUT_EVERYWHERE]: "You were signed out on every device.",
  [REVOKED_REASON.STAFF_REMOVED]: "Your staff access was removed.",
  [REVOKED_REASON.SITE_CLOSED]: "The chat is closed on this website.", // widget sockets; never a console's
};

const config = JSON.parse(document.getElementById("console-config").textContent);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

/** "Title · Section": the heading path often starts with the document title; say it once. */
function passageLabel(p) {
  const title = p.title || "";
  let heading = p.heading || "";
  if (title && heading.startsWith(title)) heading = heading.slice(title.length).replace(/^\s*>\s*/, "");
  return [title, heading].filter(Boolean).join(" · ");
}

/** Every search of an answer, one line each: ✓ the one used (– the others), the query, its best passage's
 * similarity and, for a rewritten search, why it was kept or not. */
function searchList(searches, fmt) {
  const list = el("ul", "searches muted");
  for (const s of searches) {
    const item = el("li", "search");
    item.dataset.used = s.used ? "true" : "false";
    const mark = el("span", "mark", s.used ? "✓" : "–");
    mark.title = s.used ? "used for the answer" : "not used";
    item.append(mark, " ", el("span", "query", `“${s.query ?? ""}”`), " ", el("span", "sim", `best ${fmt(s.best_similarity)}`));
    if (s.why) item.append(el("div", "why", s.why));
    list.append(item);
  }
  return list;
}

/** "12.3 ms": a latency, to a tenth of a millisecond; "–" when unknown. */
function millis(value) {
  return typeof value === "number" ? `${Math.round(value * 10) / 10} ms` : "–";
}

/** `name: value` lines of a flat object (a call's arguments, its visible fields, its redacted headers). */
function pairs(className, object) {
  const list = el("dl", className);
  for (const [name, value] of Object.entries(object || {})) {
    const text = value !== null && typeof value === "object" ? JSON.stringify(value) : String(value ?? "");
    list.append(el("dt", "", name), el("dd", "", text));
  }
  return list;
}

/** Every tool call of an answer (trace.tools): ✓ or ✕, name, outcome, HTTP status, latency, then its arguments, the
 * fields the customer may see and the request as sent, secrets redacted by the server; a failed call is marked. */
function toolCalls(calls) {
  const list = el("ul", "tool-calls");
  for (const call of calls) {
    const item = el("li", "tool-call");
    item.dataset.ok = call.ok ? "true" : "false";
    item.dataset.outcome = call.outcome || "";
    const head = el("div", "call-head");
    const mark = el("span", "mark", call.ok ? "✓" : "✕");
    mark.title = call.ok ? "answered" : "failed";
    head.append(
      mark,
      el("strong", "call-name", call.name || "tool"),
      el("span", `badge outcome ${call.ok ? "ok" : "failed"}`, call.outcome || (call.ok ? "ok" : "failed")),
      el("span", "call-status", call.status ? `HTTP ${call.status}` : "no response"),
      el("span", "call-latency", millis(call.latency_ms)),
    );
    item.append(head);
    const sections = [
      ["arguments", pairs("call-args", call.arguments)],
      ["fields", pairs("call-fields", call.fields)],
    ];
    for (const [label, list] of sections) {
      if (list.childElementCount) item.append(el("div", "call-label muted", label), list);
    }
    const request = call.request;
    if (request) {
      const line = `${request.method || ""} ${request.url || ""}`.trim();
      item.append(el("div", "call-label muted", "request"), el("code", "call-request", line));
      const headers = pairs("call-headers", request.headers);
      if (headers.childElementCount) item.append(headers);
    }
    list.append(item);
  }
  return list;
}

/** "3 min", "1 h 5 min": how long since an ISO time. */
export function since(iso, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** `search`: the list page's query string (its search and filters, conversations/console_search.py), so the
 * server sends this socket only the rows that match them. */
function openSocket(handlers, connectionEl, search = "") {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let revoked = ""; // the `reason` of the error frame sent before a 4001 close
  const socket = new ChatSocket(`${scheme}://${location.host}/ws/console/${search}`, {
    onOpen: handlers.onOpen,
    onFrame: (frame) => {
      if (frame.type === FRAME.ERROR && frame.reason) revoked = frame.reason;
      else if (frame.type === FRAME.ERROR && frame.code === TOO_MANY_SOCKETS_ERROR) return; // the 4429 close says it
      else handlers.onFrame(frame);
    },
    onState: (state, info) => {
      if (!connectionEl) return;
      connectionEl.dataset.state = state;
      if (state === "signed_out") {
        // Closed for good (4001 revoked, 4401, 4403): no reconnect loop; say why and how to get back.
        const why = SIGNED_OUT_REASONS[revoked] ||
          (info.code === CLOSE.FORBIDDEN ? "The support console is for staff only." : "You are signed out.");
        const link = el("a", "", "Sign in again");
        link.href = `/accounts/login/?next=${encodeURIComponent(location.pathname)}`;
        connectionEl.replaceChildren(`${why} `, link);
        document.body.dataset.signedOut = revoked || String(info.code);
        return;
      }
      if (state === "displaced") {
        // Closed with 4429: the console is open in too many tabs and this was the oldest; no reconnect by itself.
        const link = el("a", "", "Use it here");
        link.href = location.href;
        connectionEl.replaceChildren("The console is open in too many tabs, so this one, the oldest, was closed. ", link);
        return;
      }
      connectionEl.textContent = state === "open" ? "Live" : state === "closed" ? "Offline" : "Reconnecting…";
    },
  });
  socket.connect();
  window.addEventListener("pagehide", () => socket.close());
  return socket;
}

// ---- the list ----------------------------------------------------------------------------------------------

/** A live row (a `conversation_update` item, the same fields as the server's rows): a clone of the empty row the
 * server rendered from templates/console/_row.html into the list page's <template>, filled in. */
function rowElement(item) {
  const li = document.querySelector("template[data-row-template]").content.firstElementChild.cloneNode(true);
  li.dataset.conversation = item.conversation;
  const link = li.querySelector(".row-title");
  link.href = item.url;
  link.textContent = item.title;
  li.querySelector("[data-customer]").textContent = item.customer;
  li.querySelector("[data-unread]").textContent = String(item.unread);
  const badge = li.querySelector("[data-badge]");
  badge.className = `badge ${item.status}`;
  badge.textContent = item.status_label || STATUS_LABELS[item.status];
  li.querySelector("[data-holder]").textContent = item.holder ? `held by ${item.holder.name}` : "";
  const assignee = li.querySelector("[data-assignee]");
  assignee.hidden = !item.assignee || Boolean(item.holder); // a held row already says who has it
  assignee.dataset.assigneeId = item.assignee ? String(item.assignee.id) : "";
  assignee.querySelector("[data-assignee-name]").textContent = item.assignee ? item.assignee.name : "";
  li.querySelector("[data-last-role]").textContent = item.last_message ? `${item.last_message.role}:` : "";
  li.querySelector("[data-last-text]").textContent = item.last_message ? item.last_message.text : "";
  const lastAt = li.querySelector("[data-last-at]");
  showTime(lastAt, item.last_message?.at);
  lastAt.hidden = !item.last_message;
  showOffline(li, item.left_message);
  applyRowData(li, item);
  return li;
}

/** "Customer offline · <address>" (docs/protocol.md `left_message`): they left an address, replies are e-mailed. */
function showOffline(root, leftMessage) {
  root.querySelector("[data-offline]").hidden = !leftMessage;
  root.querySelector("[data-offline-email]").textContent = leftMessage ? leftMessage.email : "";
}

function applyRowData(li, item) {
  li.dataset.section = item.section;
  li.dataset.status = item.status;
  li.dataset.updatedAt = item.updated_at;
  if (item.waiting_since) li.dataset.waitingSince = item.waiting_since;
  else delete li.dataset.waitingSince;
  li.querySelector("[data-unread]").hidden = !item.unread;
}

function rowOrder(a, b) {
  // Waiting: longest wait first. Everything else: latest activity first.
  if (a.dataset.section === "waiting") return (a.dataset.waitingSince || "").localeCompare(b.dataset.waitingSince || "");
  return (b.dataset.updatedAt || "").localeCompare(a.dataset.updatedAt || "");
}

class ConsoleList {
  constructor(root) {
    this.root = root;
    this.sections = {};
    for (const key of SECTION_ORDER) this.sections[key] = root.querySelector(`[data-section-list="${key}"]`);
    localizeTimes(root);
    this.alerts = new WaitingAlerts(config.me?.id);
    this.alerts.bindToggles(root);
    this.bindFilters(root.querySelector("[data-console-filters]"));
    this.socket = openSocket(
      { onOpen: () => {}, onFrame: (frame) => this.onFrame(frame) },
      root.querySelector("[data-connection-state]"),
      location.search,
    );
    this.tick();
    setInterval(() => this.tick(), 5000);
  }

  onFrame(frame) {
    if (frame.type === FRAME.CONVERSATIONS) {
      for (const section of Object.values(this.sections)) section.querySelector("ul").replaceChildren();
      for (const item of frame.items) this.upsert(item);
      this.alerts.snapshot(frame.items);
    } else if (frame.type === FRAME.CONVERSATION_UPDATE) {
      this.upsert(frame.item);
      this.alerts.update(frame.item);
    } else if (frame.type === FRAME.CONVERSATION_HIDDEN) {
      // It no longer matches this page's search or filters.
      this.root.querySelector(`.console-row[data-conversation="${frame.conversation}"]`)?.remove();
      this.alerts.gone(frame.conversation);
      this.count();
    } else if (frame.type === FRAME.ERROR) {
      this.root.querySelector("[data-connection-state]").textContent = frame.detail;
    }
    this.tick();
  }

  upsert(item) {
    this.root.querySelector(`.console-row[data-conversation="${item.conversation}"]`)?.remove();
    const row = rowElement(item);
    const list = this.sections[item.section].querySelector("ul");
    const before = [...list.children].find((other) => rowOrder(row, other) < 0);
    list.insertBefore(row, before || null);
    row.classList.add("pulse");
    setTimeout(() => row.classList.remove("pulse"), 1200);
    this.count();
  }

  count() {
    for (const section of Object.values(this.sections)) {
      section.querySelector("[data-count]").textContent = section.querySelectorAll(".console-row").length;
    }
  }

  /** A menu changed: the page reloads with it in its query string (the server filters, the URL keeps it). */
  bindFilters(form) {
    for (const menu of form.querySelectorAll("select")) menu.addEventListener("change", () => form.requestSubmit());
    form.addEventListener("submit", () => {
      for (const field of form.elements) if (field.name && !field.value) field.disabled = true; // a clean URL
    });
  }

  tick() {
    for (const row of this.root.querySelectorAll(".console-row")) {
      const waited = row.querySelector("[data-waited]");
      waited.textContent = row.dataset.waitingSince ? `waiting ${since(row.dataset.waitingSince)}` : "";
    }
  }
}

// ---- one conversation --------------------------------------------------------------------------------------

class ConsoleConversation {
  constructor(root) {
    this.root = root;
    this.id = config.conversation;
    this.status = config.status;
    this.holder = config.holder;
    this.assignee = config.assignee;
    this.leftMessage = config.left_message;
    this.log = root.querySelector("[data-log]");
    this.notice = root.querySelector("[data-notice]");
    this.traces = root.querySelector("[data-traces]");
    this.notes = root.querySelector("[data-notes]");
    this.composer = root.querySelector("[data-agent-composer]");
    this.noteForm = root.querySelector("[data-note-form]");
    this.messages = new Map(); // assistant message id -> its AnswerStream (stream.js)
    this.pending = new Map(); // agent_message id -> text, until the server confirms it
    // "Customer is typing…" above the reply box, and telling the customer while this person types (typing.js).
    this.typing = new TypingIndicator(this.composer);
    this.typingSender = new TypingSender(this.composer.querySelector("textarea"), {
      send: (frame) => this.socket.send(frame),
      conversation: () => this.id,
    });
    this.adoptHistory();
    bindVersions(this.log); // ‹ n/m › of an answer's versions (Regenerate)
    this.bind();
    this.render();
    this.alerts = new WaitingAlerts(config.me?.id); // new waiting conversations, while working in this one
    this.socket = openSocket(
      { onOpen: () => this.onOpen(), onFrame: (frame) => this.onFrame(frame) },
      root.querySelector("[data-connection-state]"),
    );
  }

  adoptHistory() {
    localizeTimes(this.log);
    for (const msgEl of this.log.querySelectorAll(".msg-assistant[data-message]")) {
      // An unfinished answer is emptied: `watch` replays its frames from seq 1.
      this.messages.set(msgEl.dataset.message, AnswerStream.adopt(msgEl));
    }
    this.scroll();
  }

  /** A new answer's bubble at the end of the transcript. */
  newAnswer(messageId, question) {
    const entry = AnswerStream.create({ messageId, question });
    this.log.append(entry.el);
    this.messages.set(messageId, entry);
    return entry;
  }

  onOpen() {
    this.socket.send({ type: FRAME.WATCH, conversation: this.id });
    for (const [id, text] of this.pending) {
      this.socket.send({ type: FRAME.AGENT_MESSAGE, conversation: this.id, id, text }); // same id: never twice
    }
  }

  send(frame) {
    if (!this.socket.send({ ...frame, conversation: this.id })) this.showNotice("Not connected; try again in a moment.");
  }

  // -- frames --
  onFrame(frame) {
    if (frame.type === FRAME.CONVERSATIONS) this.alerts.snapshot(frame.items);
    else if (frame.type === FRAME.CONVERSATION_UPDATE) this.alerts.update(frame.item);
    if (frame.conversation && frame.conversation !== this.id && frame.type !== FRAME.CONVERSATION_UPDATE) return;
    if (isStreamFrame(frame)) {
      this.onStream(frame);
      return;
    }
    switch (frame.type) {
      case FRAME.QUESTION:
        this.typing.hide();
        this.onQuestion(frame);
        break;
      case FRAME.TYPING:
        this.typing.update(frame.typing ? "Customer is typing…" : null);
        break;
      case FRAME.AGENT_MESSAGE:
        this.pending.delete(frame.id);
        this.appendOnce(frame.message, () => agentMessage(frame.text, frame.agent?.name, frame.created_at));
        break;
      case FRAME.AGENT_JOINED:
      case FRAME.AGENT_LEFT:
      case FRAME.NUDGE:
      case FRAME.REMINDER:
        this.appendOnce(frame.message, () => systemMessage(frame.text));
        break;
      case FRAME.CONVERSATION:
        this.status = frame.status;
        this.leftMessage = frame.left_message;
        this.render();
        break;
      case FRAME.CONVERSATION_UPDATE:
        if (frame.item.conversation === this.id) {
          this.status = frame.item.status;
          this.holder = frame.item.holder;
          this.assignee = frame.item.assignee;
          this.leftMessage = frame.item.left_message;
          this.render();
        }
        break;
      case FRAME.HOLDER:
        this.status = frame.status;
        this.holder = frame.holder;
        if (frame.status === CONVERSATION_STATUS.AGENT) this.assignee = frame.holder;
        else this.assignee = null; // handing back and resolving clear the assignment
        this.render();
        break;
      case FRAME.ASSIGNED:
        this.assignee = frame.assignee;
        this.render();
        break;
      case FRAME.PRESENCE:
        this.renderPresence(frame.watchers);
        break;
      case FRAME.NOTE:
        this.addNote(frame.note);
        break;
      case FRAME.ANSWER_VERSION:
        this.onAnswerVersion(frame);
        break;
      case FRAME.TRACE:
        this.renderTrace(frame.message, frame.trace, frame.state, frame);
        break;
      case FRAME.ERROR:
        this.showNotice(frame.detail || frame.code);
        break;
      default:
        break;
    }
  }

  onQuestion(frame) {
    if (this.log.querySelector(`[data-message="${frame.question}"]`)) return;
    const userEl = userMessage(frame.text, { images: frame.attachments || [] });
    showImages(userEl); // staff's session cookie goes with them
    userEl.querySelector(".who").textContent = "Customer";
    userEl.dataset.message = frame.question;
    this.log.append(userEl);
    if (frame.message && !this.messages.has(frame.message)) this.newAnswer(frame.message, frame.text);
    this.scroll();
  }

  /** The customer regenerated an answer: the new version beside the earlier ones, shown, its stream following. */
  onAnswerVersion(frame) {
    if (this.messages.has(frame.message)) return;
    const earlier = [...this.log.querySelectorAll(".msg-assistant[data-reply-to]")].find((m) => m.dataset.replyTo === frame.question);
    const fields = { messageId: frame.message, question: earlier?.dataset.question || "", replyTo: frame.question, version: frame.version };
    const entry = AnswerStream.create(fields);
    this.messages.set(frame.message, entry);
    if (!placeVersion(this.log, entry.el)) this.log.append(entry.el);
    this.scroll();
  }

  onStream(frame) {
    const entry = this.messages.get(frame.message) || this.newAnswer(frame.message, "");
    // No `resume` here: `watch` replays an answer from seq 1, so a gap is drawn as it comes.
    if (entry.order(frame) === ORDER.SEEN) return;
    entry.apply(frame);
    if (frame.type === FRAME.SOURCES) {
      // Live trace: the passages and their scores are known before the answer is written.
      const trace = { passages: frame.items, timings: {}, query: entry.el.dataset.question };
      this.renderTrace(frame.message, trace, "streaming");
    }
    this.scroll();
  }

  appendOnce(messageId, build) {
    if (messageId && this.log.querySelector(`[data-message="${messageId}"]`)) return;
    const msgEl = build();
    if (messageId) msgEl.dataset.message = messageId;
    this.log.append(msgEl);
    this.scroll();
  }

  // -- panels --
  /** `versions`: the trace frame's `version` and `versions` (Regenerate), shown as "version n of m" when m > 1. */
  renderTrace(messageId, trace, state, versions = null) {
    this.traces.querySelector("[data-traces-empty]")?.remove();
    let card = this.traces.querySelector(`.trace[data-message="${messageId}"]`);
    if (!card) {
      card = el("article", "trace");
      card.dataset.message = messageId;
      this.traces.append(card);
    }
    card.dataset.state = state;
    const head = el("div", "trace-head");
    head.append(el("strong", "", trace.query ? `“${trace.query}”` : "Answer"), " ", el("span", `badge ${state}`, state));
    if (versions?.versions > 1) head.append(" ", el("span", "trace-version", `version ${versions.version} of ${versions.versions}`));
    const fmt = (x) => (typeof x === "number" ? x.toFixed(3) : "–");
    const searches = Array.isArray(trace.searches) ? trace.searches : [];
    if (searches.length > 1) head.append(searchList(searches, fmt));
    else if (trace.rewritten_query) head.append(el("div", "muted", `searched as: ${trace.rewritten_query}`));
    const table = el("table", "passages");
    const header = el("tr");
    for (const label of ["#", "passage", "score", "vector", "keyword"]) header.append(el("th", "", label));
    table.append(header);
    for (const p of trace.passages || []) {
      const row = el("tr");
      row.append(
        el("td", "", String(p.n ?? "")),
        el("td", "", passageLabel(p)),
        el("td", "score", fmt(p.score)),
        el("td", "", fmt(p.vector_score)),
        el("td", "", fmt(p.keyword_score)),
      );
      table.append(row);
    }
    const timings = el("dl", "timings");
    for (const [key, value] of Object.entries(trace.timings || {})) {
      timings.append(el("dt", "", key.replace(/_ms$/, "")), el("dd", "", `${value} ms`));
    }
    const generator = el("div", "generator", trace.generator ? `generator: ${trace.generator}` : "");
    const failedCall = (trace.tools || []).some((call) => !call.ok);
    const why = failedCall ? "A tool call failed or was refused" : "Nothing relevant found";
    const offer = el("div", "muted", trace.offer_handoff ? `${why}: offered the customer a person.` : "");
    const tools = Array.isArray(trace.tools) && trace.tools.length ? [toolCalls(trace.tools)] : [];
    // An answer from tools alone searched nothing: no empty passage table under its calls.
    const passages = (trace.passages || []).length || !tools.length ? [table] : [];
    card.replaceChildren(head, ...tools, ...passages, timings, generator, offer);
  }

  renderPresence(watchers) {
    const others = watchers.filter((w) => !config.me || w.id !== config.me.id);
    this.root.querySelector("[data-presence]").textContent = others.length
      ? `Also here: ${others.map((w) => w.name).join(", ")}`
      : "";
  }

  addNote(note) {
    if (this.notes.querySelector(`[data-note="${note.id}"]`)) return;
    const li = el("li", "note");
    li.dataset.note = note.id;
    li.append(el("div", "note-meta", `${note.author ? note.author.name : "Someone"} · ${new Date(note.created_at).toLocaleTimeString()}`));
    li.append(el("div", "note-text", note.text));
    this.notes.append(li);
  }

  render() {
    const mine = this.status === "agent" && this.holder && config.me && this.holder.id === config.me.id;
    const heldByOther = this.status === "agent" && this.holder && !mine;
    this.root.dataset.status = this.status;
    const badge = this.root.querySelector("[data-status-badge]");
    badge.className = `badge ${this.status}`;
    badge.textContent = STATUS_LABELS[this.status] || this.status;
    showOffline(this.root, this.leftMessage);
    this.root.querySelector("[data-holder]").textContent = this.holder && this.status === "agent"
      ? mine ? "You are answering this conversation" : `Held by ${this.holder.name}`
      : "";
    const button = (action) => this.root.querySelector(`[data-action="${action}"]`);
    button(FRAME.TAKE_OVER).hidden = mine;
    button(FRAME.TAKE_OVER).disabled = heldByOther;
    button(FRAME.HAND_BACK).hidden = !mine;
    button(FRAME.RESOLVE).disabled = heldByOther || this.status === "resolved";
    button(FRAME.NUDGE).disabled = heldByOther;
    const assign = this.root.querySelector("[data-assign-select]");
    assign.value = this.assignee ? String(this.assignee.id) : "";
    assign.disabled = heldByOther; // only the holder passes a held conversation on (conversations/assignment.py)
    for (const field of this.composer.elements) field.disabled = !mine;
    this.composer.querySelector("textarea").placeholder = mine
      ? `Reply to the customer as yourself…${config.saved_replies?.length ? " Type / for a saved reply." : ""}`
      : "Take the conversation over to reply";
  }

  showNotice(text) {
    this.notice.textContent = text;
    this.notice.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => {
      this.notice.hidden = true;
    }, 8000);
  }

  scroll() {
    this.log.scrollTop = this.log.scrollHeight;
  }

  bind() {
    // "/" in the reply box: the team's saved replies, filled for this conversation (saved_replies.js).
    attachSavedReplies(this.composer.querySelector("textarea"), config.saved_replies, config.placeholders);
    this.root.querySelector("[data-assign-select]").addEventListener("change", (event) => {
      const agent = event.target.value ? Number(event.target.value) : null;
      this.send({ type: FRAME.ASSIGN, agent }); // the `assigned` frame confirms it, to every console
    });
    this.root.querySelector(".console-actions").addEventListener("click", (event) => {
      const action = event.target.closest("[data-action]")?.dataset.action;
      if (action) this.send({ type: action });
    });
    this.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const area = this.composer.querySelector("textarea");
      const text = area.value.trim();
      if (!text) return;
      const id = newId();
      this.pending.set(id, text);
      this.typingSender.stop();
      this.send({ type: FRAME.AGENT_MESSAGE, id, text });
      area.value = "";
    });
    this.composer.querySelector("textarea").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.composer.requestSubmit();
      }
    });
    this.noteForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const area = this.noteForm.querySelector("textarea");
      const text = area.value.trim();
      if (!text) return;
      this.send({ type: FRAME.NOTE, text });
      area.value = "";
    });
  }
}

const listRoot = document.querySelector("[data-console-list]");
const detailRoot = document.querySelector("[data-console-detail]");
if (listRoot) window.__console = new ConsoleList(listRoot);
if (detailRoot) window.__console = new ConsoleConversation(detailRoot);
