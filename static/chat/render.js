// DOM for chat messages: the same markup the server renders for history (templates/conversations/
// _message.html), so live and reloaded conversations look and behave the same.

import { gettext } from "./i18n.js";

const ALLOWED_TAGS = new Set([
  "P", "BR", "STRONG", "B", "EM", "I", "CODE", "PRE", "UL", "OL", "LI", "A", "BLOCKQUOTE", "H1", "H2", "H3",
  "H4", "H5", "H6", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD", "SUP", "SUB", "SPAN", "HR", "DEL", "S",
]);
const ALLOWED_ATTRS = { A: ["href", "title", "data-n"], SUP: ["class"], TD: ["align"], TH: ["align"], OL: ["start"] };

/**
 * Defence in depth: the server already sanitises `final.html` (nh3); this keeps the page safe even if a
 * future backend forgets. Unknown elements are replaced by their text, unknown attributes dropped.
 */
export function sanitizeHtml(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  const walk = (node) => {
    for (const child of Array.from(node.childNodes)) {
      if (child.nodeType === Node.ELEMENT_NODE) {
        if (!ALLOWED_TAGS.has(child.tagName)) {
          if (["SCRIPT", "STYLE", "IFRAME", "OBJECT", "EMBED", "TEMPLATE"].includes(child.tagName)) {
            child.remove();
          } else {
            child.replaceWith(document.createTextNode(child.textContent));
          }
          continue;
        }
        const allowed = ALLOWED_ATTRS[child.tagName] || [];
        for (const attr of Array.from(child.attributes)) {
          if (!allowed.includes(attr.name)) child.removeAttribute(attr.name);
        }
        if (child.tagName === "SUP" && child.getAttribute("class") !== "cite") child.removeAttribute("class");
        if (child.tagName === "A") {
          const href = child.getAttribute("href") || "";
          if (!/^(https?:|mailto:|\/|#)/i.test(href.trim())) child.removeAttribute("href");
          child.setAttribute("rel", "noopener noreferrer");
        }
        walk(child);
      } else if (child.nodeType !== Node.TEXT_NODE) {
        child.remove();
      }
    }
  };
  walk(template.content);
  return template.content;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---- when a message was written: a <time datetime> in the reader's language and time zone --------------------
function dateFormat(options) {
  try {
    return new Intl.DateTimeFormat(document.documentElement.lang || undefined, options);
  } catch {
    return new Intl.DateTimeFormat(undefined, options); // a page language the browser does not know
  }
}
const CLOCK = dateFormat({ hour: "numeric", minute: "2-digit" });
const DAY_AND_CLOCK = dateFormat({ day: "numeric", month: "short", hour: "numeric", minute: "2-digit" });
const FULL_DATE = dateFormat({ dateStyle: "full", timeStyle: "short" });

/**
 * Write a <time> for the reader: the hour (and the day, if not today) as its text, the full date as its title
 * (what a hover shows); `at` (a Date or an ISO string) defaults to its own datetime (a server-rendered one).
 */
export function showTime(time, at = time.dateTime) {
  const date = new Date(at);
  if (!at || Number.isNaN(date.getTime())) return;
  time.dateTime = date.toISOString();
  const today = date.toDateString() === new Date().toDateString();
  time.textContent = (today ? CLOCK : DAY_AND_CLOCK).format(date);
  time.title = FULL_DATE.format(date);
}

/** Every server-rendered time under `root` (messages, console rows), in the reader's language and time zone. */
export function localizeTimes(root) {
  for (const time of root.querySelectorAll("time[datetime]")) showTime(time);
}

/** A message's time (templates/conversations/_message.html): shown on hover or focus (chat.css `.msg-time`). */
export function messageTime(at = new Date()) {
  const time = el("time", "msg-time");
  showTime(time, at);
  return time;
}

/** A message's head line: who wrote it and when. */
function messageHead(who, at) {
  const head = el("div", "msg-head");
  head.append(el("div", "who", who), messageTime(at));
  return head;
}

function citeLink(n, messageKey) {
  const sup = el("sup", "cite");
  const a = el("a", "", `[${n}]`);
  a.href = `#src-${messageKey}-${n}`;
  a.dataset.n = n;
  a.setAttribute("aria-label", `source ${n}`);
  sup.append(a);
  return sup;
}

/**
 * Point the answer's citations at this message's source chips: the server renders "[2]" as
 * <sup class="cite"><a href="#source-2" data-n="2">[2]</a></sup> (ids must be unique per page, so we rewrite
 * them); bare "[2]" in text (plain-text history) gets the same markup.
 */
export function linkCitations(answerEl, messageKey) {
  for (const a of answerEl.querySelectorAll('a[href^="#source-"]')) {
    const n = a.dataset.n || a.getAttribute("href").slice("#source-".length);
    a.href = `#src-${messageKey}-${n}`;
    a.dataset.n = n;
    a.setAttribute("aria-label", `source ${n}`);
  }
  const walker = document.createTreeWalker(answerEl, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) {
    if (/\[\d+\]/.test(walker.currentNode.nodeValue) && !walker.currentNode.parentElement.closest("a, code, pre")) {
      nodes.push(walker.currentNode);
    }
  }
  for (const node of nodes) {
    const frag = document.createDocumentFragment();
    const parts = node.nodeValue.split(/(\[\d+\])/);
    for (const part of parts) {
      const match = /^\[(\d+)\]$/.exec(part);
      if (match) {
        frag.append(citeLink(match[1], messageKey));
      } else if (part) {
        frag.append(document.createTextNode(part));
      }
    }
    node.replaceWith(frag);
  }
}

/**
 * The chip's words: the passage's own section (last heading) tells several passages of one document apart;
 * the document title when there is no heading. Mirrors conversations.views.chip_label.
 */
export function chipLabel(item) {
  const section = (item.heading || "").split(" > ").pop().trim();
  return section || item.title || gettext("Source");
}

/** Source chips: numbered, the passage on hover/focus/tap, a link to the document page. A tool's result
 * (kind "tool") is a source too, cited the same way, but has no page to open. */
export function renderSources(container, items, messageKey, citations = []) {
  container.replaceChildren();
  for (const item of items) {
    const wrap = el("span", "source");
    wrap.id = `src-${messageKey}-${item.n}`;
    wrap.dataset.n = item.n;
    wrap.dataset.kind = item.kind || "document";
    const chip = el("button", "chip");
    chip.type = "button";
    chip.setAttribute("aria-expanded", "false");
    if (citations.includes(item.n)) chip.classList.add("used");
    chip.append(el("span", "n", String(item.n)), el("span", "t", chipLabel(item)));
    const pop = el("span", "source-pop");
    pop.setAttribute("role", "note");
    const heading = [item.heading || item.title, item.page ? `page ${item.page}` : ""].filter(Boolean).join(" · ");
    pop.append(el("span", "h", heading), el("span", "snippet", item.snippet || ""));
    if (item.url) {
      const link = el("a", "open-doc", `${gettext("Open document")} ↗`);
      link.href = item.url;
      link.target = "_blank";
      link.rel = "noopener";
      pop.append(link);
    }
    wrap.append(chip, pop);
    container.append(wrap);
  }
}

/**
 * What a tool (the company's API) answered, as a compact card in the answer's bubble: the tool's name, its number
 * when the answer cites it ("[1]"), a short line in the customer's language and the fields the customer may see; a
 * failed call (data-ok="false") shows only its line, marked. From a `tool_result` frame's `tool`; the same markup as
 * templates/conversations/_tool_card.html.
 */
export function toolCard(tool) {
  const card = el("section", "tool-card");
  const cited = tool.n !== null && tool.n !== undefined;
  card.dataset.ok = String(Boolean(tool.ok));
  card.dataset.outcome = tool.outcome || "";
  if (cited) card.dataset.n = tool.n;
  card.setAttribute("aria-label", tool.name || "");
  const head = el("div", "tool-head");
  if (cited) head.append(el("span", "n", `[${tool.n}]`));
  head.append(el("span", "tool-name", tool.name || ""));
  if (tool.text) head.append(el("span", "tool-text", tool.text));
  card.append(head);
  const fields = tool.fields || [];
  if (fields.length) {
    const list = el("dl", "tool-fields");
    for (const field of fields) {
      const row = el("div");
      row.append(el("dt", "", field.name), el("dd", "", String(field.value ?? "")));
      list.append(row);
    }
    card.append(list);
  }
  return card;
}

/** Mark the chips whose numbers the final answer actually cites. */
export function markUsedSources(container, citations) {
  for (const wrap of container.querySelectorAll(".source")) {
    wrap.querySelector(".chip").classList.toggle("used", citations.includes(Number(wrap.dataset.n)));
  }
}

/**
 * Reveals streamed text a few characters per animation frame so tokens read like typing, catching up
 * faster when it falls behind (it never lags more than a few frames behind the network).
 */
export class Typewriter {
  constructor(target) {
    this.target = target;
    this.text = "";
    this.shown = 0;
    this.raf = null;
  }

  push(text) {
    this.text += text;
    if (this.raf === null) this.raf = requestAnimationFrame(() => this._tick());
  }

  _tick() {
    this.raf = null;
    const remaining = this.text.length - this.shown;
    if (remaining <= 0) return;
    this.shown += Math.max(1, Math.ceil(remaining / 6));
    this.target.textContent = this.text.slice(0, this.shown);
    if (this.shown < this.text.length) this.raf = requestAnimationFrame(() => this._tick());
  }

  stop() {
    if (this.raf !== null) cancelAnimationFrame(this.raf);
    this.raf = null;
  }
}

const STATE_NOTES = {
  cancelled: gettext("Stopped — the answer above is incomplete."),
  interrupted: gettext("Interrupted — the answer above is incomplete."),
  failed: gettext("Something went wrong while answering. Please try again."),
};

export function setStateNote(msgEl, state, detail) {
  const note = msgEl.querySelector(".state-note");
  if (!note) return;
  note.className = `state-note ${state}`;
  note.textContent = detail || STATE_NOTES[state] || "";
  note.hidden = !note.textContent;
}

/**
 * The images sent with a question ({id, url, width, height}: a `question` frame's `attachments`), as
 * templates/conversations/_attachments.html renders them; their addresses wait in `data-src` for attach.js
 * `showImages`, which knows how the page may fetch them.
 */
export function attachmentList(images) {
  const list = el("div", "attachments");
  images.forEach((image, i) => {
    const link = el("a", "attachment");
    link.href = image.url;
    link.target = "_blank";
    link.rel = "noopener";
    const img = el("img");
    img.dataset.src = image.url;
    img.width = image.width;
    img.height = image.height;
    img.alt = `${gettext("Image")} ${i + 1}`;
    img.loading = "lazy";
    link.append(img);
    list.append(link);
  });
  return list;
}

/** A user's question bubble (and the images sent with it); `pending` while not yet acknowledged by the server. */
export function userMessage(text, { clientId, pending = false, images = [] } = {}) {
  const msg = el("article", "msg msg-user");
  msg.dataset.role = "user";
  if (clientId) msg.dataset.clientId = clientId;
  msg.append(messageHead(gettext("You")), el("div", "bubble", text));
  if (images.length) msg.append(attachmentList(images));
  const note = el("div", "pending-note", pending ? gettext("Sending…") : "");
  note.hidden = !pending;
  msg.append(note);
  msg.classList.toggle("pending", pending);
  return msg;
}

export function setUserPending(msg, note) {
  const noteEl = msg.querySelector(".pending-note");
  msg.classList.toggle("pending", Boolean(note));
  noteEl.textContent = note || "";
  noteEl.hidden = !note;
}

/** An assistant answer placeholder, filled by status/sources/token/final frames. `replyTo`: its question's id, and
 * `version` its number among that question's answers (Regenerate; static/chat/versions.js). */
export function assistantMessage({ messageId, question, replyTo, version = 1 }) {
  const msg = el("article", "msg msg-assistant");
  msg.dataset.role = "assistant";
  msg.dataset.state = "streaming";
  if (messageId) msg.dataset.message = messageId;
  msg.dataset.question = question || "";
  if (replyTo) {
    msg.dataset.replyTo = replyTo;
    msg.dataset.version = String(version);
  }
  msg.dataset.text = "";
  const status = el("div", "status busy", gettext("Waiting for the assistant…"));
  status.setAttribute("role", "status");
  const bubble = el("div", "bubble");
  const answer = el("div", "answer streaming");
  answer.setAttribute("aria-live", "polite");
  answer.setAttribute("aria-busy", "true");
  const note = el("div", "state-note");
  note.hidden = true;
  const sources = el("div", "sources");
  sources.setAttribute("aria-label", gettext("Sources"));
  bubble.append(el("div", "tools"), answer, note, sources);
  msg.append(messageHead(gettext("Assistant")), status, bubble, actionBar());
  msg.querySelector(".msg-actions").hidden = true;
  return msg;
}

export function actionBar() {
  const bar = el("div", "msg-actions");
  const buttons = [
    ["feedback-up", "", gettext("Helpful"), "thumb up"],
    ["feedback-down", "", gettext("Not helpful"), "thumb down"],
    ["regenerate", `↻ ${gettext("Regenerate")}`, gettext("Write another version of this answer"), ""],
    ["copy", gettext("Copy"), gettext("Copy the answer"), ""],
  ];
  for (const [action, label, title, icon] of buttons) {
    const button = el("button", `icon-btn ${icon}`.trim(), label);
    button.type = "button";
    button.dataset.action = action;
    button.title = title;
    button.setAttribute("aria-label", title);
    if (icon) button.setAttribute("aria-pressed", "false");
    bar.append(button);
  }
  return bar;
}

/**
 * A nothing-found answer (`final.offer_handoff`) offers a person inside its own bubble; the button carries
 * data-action="handoff" and chat.js sends the `handoff` frame and hides it while a person is asked or there.
 * Same markup as templates/conversations/_message.html.
 */
export function showHandoffOffer(msgEl, offered) {
  const bubble = msgEl.querySelector(".bubble");
  let button = bubble.querySelector(".handoff-offer");
  if (!offered) {
    button?.remove();
    return null;
  }
  if (!button) {
    button = el("button", "btn handoff-offer", gettext("Talk to a person"));
    button.type = "button";
    button.dataset.action = "handoff";
    bubble.append(button);
  }
  return button;
}

/** A message written by a human support agent: shown as a person, never as the bot. `at`: its created_at. */
export function agentMessage(text, name, at) {
  const msg = el("article", "msg msg-agent");
  msg.dataset.role = "agent";
  msg.append(messageHead(name ? `${name} · ${gettext("Support team")}` : gettext("Support team"), at), el("div", "bubble", text));
  return msg;
}

export function systemMessage(text) {
  const msg = el("article", "msg msg-system");
  msg.dataset.role = "system";
  msg.append(el("div", "bubble", text), messageTime());
  return msg;
}

/** Replace the streamed plain text with the server's final HTML, keeping the raw text for Copy. */
export function showFinalHtml(msgEl, html, messageKey) {
  const answer = msgEl.querySelector(".answer");
  answer.classList.remove("streaming");
  answer.setAttribute("aria-busy", "false");
  if (html) {
    answer.replaceChildren(sanitizeHtml(html));
  } else {
    answer.textContent = msgEl.dataset.text || "";
  }
  linkCitations(answer, messageKey);
}
