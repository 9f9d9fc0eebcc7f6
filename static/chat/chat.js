// The chat page controller: turns protocol frames (docs/protocol.md) into DOM and user actions into frames.
//
// Invariants it keeps, because the server keeps them too:
//  * every question has a client id; until the server acks it, it is re-sent with the SAME id after a
//    reconnect (the server never creates it twice);
//  * stream frames carry (message, seq); a frame with a seq we already applied is ignored, so replays after
//    `resume` never duplicate text, and a gap triggers a `resume` so nothing is dropped.

import { format, gettext, ngettext } from "./i18n.js";

import {
  CLOSE,
  CONVERSATION_STATUS,
  FRAME,
  REVOKED_REASON,
  TOO_MANY_SOCKETS_ERROR,
  handoffAvailable,
} from "./protocol.js";
import { ChatSocket, isStreamFrame, newId } from "./socket.js";
import { attachImages, showImages } from "./attach.js";
import { agentMessage, localizeTimes, setUserPending, systemMessage, userMessage } from "./render.js";
import { AnswerStream, ORDER } from "./stream.js";
import { bindVersions, placeVersion } from "./versions.js";
import { LeaveMessage } from "./leave_message.js";
import { Satisfaction } from "./csat.js";
import { TypingIndicator, TypingSender } from "./typing.js";


const CONVERSATION_NOTES = {
  [CONVERSATION_STATUS.WAITING_FOR_AGENT]:
    gettext("We have asked a member of our support team to join. You can keep writing meanwhile."),
  [CONVERSATION_STATUS.AGENT]: gettext("You are chatting with a member of our support team."),
  [CONVERSATION_STATUS.RESOLVED]: gettext("This conversation was marked as resolved. Ask again any time."),
};
// Why a question is waiting to be sent again (an error with retry_after), in the customer's words.
const HELD_REASONS = {
  busy: gettext("The assistant is still answering your earlier questions."),
  rate_limited: gettext("You are asking faster than the assistant can take questions."),
  unavailable: gettext("The assistant is briefly unavailable."),
};
// Why the server closed the socket for good (the `reason` of the error before close 4001; docs/protocol.md).
const SIGNED_OUT_REASONS = {
  [REVOKED_REASON.LOGOUT]: gettext("You were signed out (in this or another tab)."),
  [REVOKED_REASON.DEACTIVATED]: gettext("You were signed out: your account was deactivated."),
  [REVOKED_REASON.PASSWORD_CHANGED]: gettext("You were signed out because your password was changed."),
  [REVOKED_REASON.SIGNED_OUT_EVERYWHERE]: gettext("You were signed out on every device."),
  [REVOKED_REASON.STAFF_REMOVED]: gettext("You were signed out: your staff access was removed."),
  [REVOKED_REASON.SITE_CLOSED]: gettext("The chat is closed on this website."),
};
// The view follows new content while the reader is within this many pixels of the end of the page.
const FOLLOW_SLACK_PX = 48;

class ChatPage {
  constructor(root, config) {
    this.root = root;
    this.config = config;
    this.conversation = config.conversation || null;
    this.log = root.querySelector("[data-log]");
    this.form = root.querySelector("[data-composer]");
    this.input = this.form.querySelector("textarea");
    this.stopButton = root.querySelector("[data-stop]");
    this.handoffButton = root.querySelector("[data-handoff]");
    this.banner = root.querySelector("[data-banner]");
    this.notice = root.querySelector("[data-notice]");
    this.heldBanner = root.querySelector("[data-held]"); // questions waiting for their retry_after, said once
    this.heldUntil = 0;
    this.heldTimer = null;
    this.agentBanner = root.querySelector("[data-agent-banner]");
    this.titleEl = root.querySelector("[data-title]");
    this.status = config.status || CONVERSATION_STATUS.BOT;
    this.asks = new Map(); // client id -> {id, text, acked, messageId, userEl}
    this.messages = new Map(); // assistant message id -> its AnswerStream (stream.js)
    this.regenerations = new Map(); // regenerate id -> the answer's id, until the server's answer_version
    this.connectedOnce = false;
    this.following = true; // keep the newest content in view until the reader scrolls up

    // Images sent with questions (attach.js): uploaded with the page's CSRF token for its session, or with the
    // widget's own headers (config.uploadHeaders: its visitor token); no uploadUrl, no attach control.
    this.imageHeaders = config.uploadHeaders || (() => ({ "X-CSRFToken": config.csrfToken || "" }));
    this.attach = config.uploadUrl
      ? attachImages(this.form, {
          uploadUrl: config.uploadUrl,
          headers: this.imageHeaders,
          conversation: () => this.conversation,
          max: config.maxImages,
        })
      : null;
    // Nobody can answer a request for a person now: the customer may leave an address (leave_message.js).
    this.leaveMessage = new LeaveMessage({ send: (frame) => this.socket.send(frame), conversation: () => this.conversation });
    this.log.after(this.leaveMessage.el);
    // Once the conversation ended ("End chat", or resolved by our team): how was it, 1–5 (csat.js).
    this.satisfaction = new Satisfaction({ send: (frame) => this.socket.send(frame), conversation: () => this.conversation });
    this.leaveMessage.el.after(this.satisfaction.el);
    this.endButton = root.querySelector("[data-end]");
    this.ended = Boolean(config.ended);
    // "Sam is typing…" above the composer, and telling the support team while this customer types (typing.js).
    this.typingIndicator = new TypingIndicator(this.form);
    this.typingSender = new TypingSender(this.input, {
      send: (frame) => this.socket.send(frame),
      conversation: () => this.conversation,
    });
    this._adoptServerHistory();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = config.wsUrl || `${scheme}://${location.host}/ws/chat/`;
    this.socket = new ChatSocket(url, {
      protocols: config.wsProtocols, // the widget's visitor token (static/widget/frame.js)
      onOpen: () => this._onOpen(),
      onFrame: (frame) => this._onFrame(frame),
      onState: (state, info) => this._onState(state, info),
      expecting: () => this._expecting(),
    });
    this._bindUi();
    this._updateControls();
    this._autosize();
    this.input.focus({ preventScroll: true });
    this.socket.connect();
  }

  // ---- startup ---------------------------------------------------------------------------------------

  /** Messages the server rendered. Unfinished ones (page reloaded mid-answer) are resumed from seq 0. */
  _adoptServerHistory() {
    showImages(this.log, this.imageHeaders());
    localizeTimes(this.log);
    for (const msgEl of this.log.querySelectorAll(".msg-assistant[data-message]")) {
      this.messages.set(msgEl.dataset.message, AnswerStream.adopt(msgEl, { offerHandoff: true }));
    }
    this._scrollToEnd({ force: true });
  }

  /** A new answer's bubble, placed by `place(el)`. */
  _newAnswer(messageId, question, place, replyTo) {
    const entry = AnswerStream.create({ messageId, question, replyTo }, { offerHandoff: true });
    place(entry.el);
    this.messages.set(messageId, entry);
  }

  // ---- connection -------------------------------------------------------------------------------------

  _onState(state, info) {
    if (state === "signed_out") {
      this._showSignedOut(info.code);
    } else if (state === "displaced") {
      this._showDisplaced();
    } else if (state === "open") {
      this.banner.hidden = true;
      this.connectedOnce = true;
    } else if (state === "reconnecting" || (state === "connecting" && this.connectedOnce)) {
      this.banner.hidden = false;
      this.banner.textContent = info.attempt > 1 ? format(gettext("Reconnecting… (attempt %(attempt)s)"), { attempt: info.attempt }) : gettext("Reconnecting…");
    }
    this.root.dataset.connection = state;
  }

  /** Closed for good (4001 revoked, 4401, 4403): say why, offer to sign in again, stop taking questions. */
  _showSignedOut(code) {
    if (this.config.onSignedOut && this.config.onSignedOut(code, this.signedOutReason)) return; // the widget's own
    const why =
      SIGNED_OUT_REASONS[this.signedOutReason] ||
      (code === CLOSE.FORBIDDEN ? gettext("You no longer have access to this chat.") : gettext("You are signed out."));
    const href = `${this.config.loginUrl || "/accounts/login/"}?next=${encodeURIComponent(location.pathname)}`;
    this._closedForGood(why, gettext("Sign in again"), href);
  }

  /** Closed with 4429: the person has this chat open in too many places and this was the oldest. Reconnecting by
   * itself would close another of theirs (which would do the same): say why and let them choose with a reload. */
  _showDisplaced() {
    const why = gettext("This chat is open in too many windows or tabs, so this one, the oldest, was closed.");
    this._closedForGood(why, gettext("Use it here"), location.href);
  }

  /** The banner saying why the socket will not come back, with the one link that helps; nothing sends any more. */
  _closedForGood(why, linkText, href) {
    const link = document.createElement("a");
    link.href = href;
    link.textContent = linkText;
    this.banner.replaceChildren(`${why} `, link);
    this.banner.classList.add("signed-out");
    this.banner.setAttribute("role", "alert");
    this.banner.hidden = false;
    this.notice.hidden = true;
    for (const field of this.form.elements) field.disabled = true;
    // Nothing else sends either: "Talk to a person", ratings and regenerate would only meet a closed socket.
    for (const button of this.root.querySelectorAll("[data-handoff], [data-action]")) button.disabled = true;
    this.stopButton.hidden = true;
  }

  _onOpen() {
    // Join the conversation (live frames from other tabs and people), resume unfinished answers (older
    // messages first), then re-send questions the server may never have received, with the same ids.
    if (this.conversation) this.socket.send({ type: FRAME.JOIN, conversation: this.conversation });
    for (const [key, entry] of this.messages) {
      if (!entry.done) {
        entry.resuming = true;
        this.socket.send({ type: FRAME.RESUME, message: key, after: entry.lastSeq });
      }
    }
    for (const ask of this.asks.values()) {
      if (!ask.acked && !ask.failed && !ask.held) this.socket.send(this._askFrame(ask));
    }
    for (const [id, message] of this.regenerations) this.socket.send({ type: FRAME.REGENERATE, message, id });
  }

  /** True while frames are due: an answer streams, or a sent question waits for its ack. */
  _expecting() {
    for (const entry of this.messages.values()) if (!entry.done) return true;
    for (const ask of this.asks.values()) if (!ask.acked && !ask.failed && !ask.held) return true;
    return false;
  }

  // ---- frames from the server ----------------------------------------------------------------------

  _onFrame(frame) {
    if (isStreamFrame(frame)) {
      this._onStreamFrame(frame);
      return;
    }
    switch (frame.type) {
      case FRAME.ACK:
        this._onAck(frame);
        break;
      case FRAME.ERROR:
        this._onError(frame);
        break;
      case FRAME.QUESTION:
        this._onQuestion(frame);
        break;
      case FRAME.CONVERSATION:
        this._onConversation(frame);
        break;
      case FRAME.ANSWER_VERSION:
        this._onAnswerVersion(frame);
        break;
      case FRAME.FEEDBACK:
        this._onFeedback(frame);
        break;
      case FRAME.AGENT_MESSAGE: // a person from the support team (docs/protocol.md "Console")
        if (frame.conversation !== this.conversation) break;
        this.typingIndicator.hide();
        this.appendAgent(frame.text, frame.agent?.name, frame.message, frame.created_at);
        break;
      case FRAME.TYPING:
        if (frame.conversation !== this.conversation) break;
        this.typingIndicator.update(frame.typing ? format(gettext("%(name)s is typing…"), { name: frame.agent?.name }) : null);
        break;
      case FRAME.AGENT_JOINED:
      case FRAME.AGENT_LEFT:
      case FRAME.NUDGE:
      case FRAME.REMINDER:
        if (frame.conversation === this.conversation) this.appendSystem(frame.text, frame.message, frame.type);
        break;
      case FRAME.PONG:
        break;
      default:
        console.warn("chat: unhandled frame", frame);
    }
  }

  _onAck(frame) {
    const ask = this.asks.get(frame.id);
    if (!ask) return;
    if (!this.conversation && frame.conversation) {
      this.conversation = frame.conversation;
      if (this.config.conversationUrl) {
        history.replaceState(null, "", this.config.conversationUrl.replace("__id__", frame.conversation));
      }
    }
    if (ask.acked) return; // the same ack again after a re-send: nothing new
    ask.acked = true;
    if (ask.text && this.titleEl && this.titleEl.hasAttribute("data-untitled")) {
      // Same fallback as the server: an untitled conversation is named by its first question.
      this.titleEl.removeAttribute("data-untitled");
      this.titleEl.textContent = ask.text.length > 80 ? `${ask.text.slice(0, 79)}…` : ask.text;
    }
    ask.messageId = frame.message;
    ask.userEl.dataset.message = frame.question;
    if (frame.message && !this.messages.has(frame.message)) {
      this._newAnswer(frame.message, ask.text, (el) => ask.userEl.after(el), frame.question);
    }
    const waiting = [...this.messages.values()].some((e) => !e.done && e.el.dataset.message !== frame.message);
    setUserPending(ask.userEl, waiting ? gettext("Queued — answered next") : "");
    this._updateControls();
    this._scrollToEnd();
  }

  _onStreamFrame(frame) {
    const entry = this.messages.get(frame.message);
    if (!entry) return; // a message this page does not show
    const order = entry.order(frame);
    if (order === ORDER.SEEN) return; // already applied (replay after resume)
    if (order === ORDER.GAP) {
      // Ask for everything after what we have; the replay fills it in order.
      if (!entry.resuming) {
        entry.resuming = true;
        this.socket.send({ type: FRAME.RESUME, message: frame.message, after: entry.lastSeq });
      }
      return;
    }
    entry.apply(frame);
    if (entry.lastSeq === 1) this._clearQueuedNote(frame.message);
    if (frame.type === FRAME.FINAL) this._finished();
  }

  /** A question asked on another socket of this conversation (another tab or device). */
  _onQuestion(frame) {
    if (frame.conversation !== this.conversation || this.asks.has(frame.id)) return;
    if (frame.message && this.messages.has(frame.message)) return;
    const userEl = userMessage(frame.text, { images: frame.attachments || [] });
    showImages(userEl, this.imageHeaders());
    userEl.dataset.message = frame.question;
    this.log.append(userEl);
    if (frame.message) this._newAnswer(frame.message, frame.text, (el) => this.log.append(el), frame.question);
    this._updateControls();
    this._scrollToEnd();
  }

  /** A new version of an answer (Regenerate, from this page or another): shown beside the earlier ones, in their
   * place, as the current one; its stream follows. */
  _onAnswerVersion(frame) {
    this.regenerations.delete(frame.id);
    if (frame.conversation !== this.conversation || this.messages.has(frame.message)) return;
    const earlier = [...this.log.querySelectorAll(".msg-assistant[data-reply-to]")].find((m) => m.dataset.replyTo === frame.question);
    if (!earlier) return; // an answer this page does not show
    const fields = { messageId: frame.message, question: earlier.dataset.question, replyTo: frame.question, version: frame.version };
    const entry = AnswerStream.create(fields, { offerHandoff: true });
    this.messages.set(frame.message, entry);
    placeVersion(this.log, entry.el);
    this._updateControls();
  }

  _onConversation(frame) {
    if (frame.conversation !== this.conversation) return;
    this.status = frame.status;
    this.root.dataset.status = frame.status;
    const note = CONVERSATION_NOTES[frame.status];
    const shown = !this.leaveMessage.el.hidden;
    const leaving = this.leaveMessage.update(frame); // nobody can answer now: the panel says so instead
    this.agentBanner.hidden = !note || leaving;
    if (leaving && !shown) this._scrollToEnd({ force: true }); // just shown: the reason and the form in view
    this.agentBanner.textContent = note || "";
    if (frame.title && this.titleEl) this.titleEl.textContent = frame.title;
    this.ended = Boolean(frame.ended);
    if (this.satisfaction.update(frame) && frame.ended && !frame.rating) this._scrollToEnd({ force: true });
    this._updateControls();
  }

  /** "End chat": the conversation is resolved and its outcome set; the rating panel follows (csat.js). */
  end() {
    if (!this.conversation || this.ended) return;
    this.socket.send({ type: FRAME.END, conversation: this.conversation });
  }

  _onFeedback(frame) {
    const entry = this.messages.get(frame.message);
    if (!entry) return;
    for (const b of entry.el.querySelectorAll("[data-action^=feedback]")) {
      const rating = b.dataset.action === "feedback-up" ? 1 : -1;
      b.setAttribute("aria-pressed", String(rating === frame.rating));
    }
  }

  /** An answer finished: Stop and the handoff buttons follow; "Talk to a person" of a nothing-found answer too. */
  _finished() {
    this._updateControls();
    this._scrollToEnd(); // the whole finished bubble, chips and buttons included, above the input
  }

  _clearQueuedNote(messageId) {
    for (const ask of this.asks.values()) {
      if (ask.messageId === messageId) setUserPending(ask.userEl, "");
    }
  }

  _onError(frame) {
    if (frame.reason) {
      this.signedOutReason = frame.reason; // access revoked: the close (4001) follows, and the banner says why
      return;
    }
    if (frame.code === TOO_MANY_SOCKETS_ERROR) return; // the close (4429) follows, and the banner says why
    if (frame.id) this.regenerations.delete(frame.id); // a refused regenerate is not sent again (its reason shows)
    if (this.leaveMessage.error(frame)) return; // about the address the customer left
    if (this.satisfaction.error(frame)) return; // about the rating
    const ask = frame.id ? this.asks.get(frame.id) : null;
    if (ask && !ask.acked && frame.retry_after) {
      this._hold(ask, frame); // busy, rate limited or an outage: sent again by itself after retry_after
      return;
    }
    if (ask && !ask.acked) {
      // Not accepted: keep the question visible with the reason and let the user retry it (same id).
      ask.failed = true;
      setUserPending(ask.userEl, `Not sent: ${frame.detail || frame.code}`);
      const retry = document.createElement("button");
      retry.type = "button";
      retry.className = "btn-link";
      retry.textContent = gettext("Retry");
      retry.addEventListener("click", () => {
        retry.remove();
        ask.failed = false;
        setUserPending(ask.userEl, gettext("Sending…"));
        this.socket.send(this._askFrame(ask));
      });
      ask.userEl.querySelector(".pending-note").append(" ", retry);
      return;
    }
    const entry = frame.message ? this.messages.get(frame.message) : null;
    if (entry && !entry.done && frame.code === "not_found") {
      // The server does not know this message any more: stop waiting for it.
      entry.finish({ message: frame.message, state: "failed", text: entry.text, html: "", citations: [] });
      this._finished();
      return;
    }
    this._showNotice(frame.detail || `Error: ${frame.code}`);
  }

  /** Keep a refused question and send it again (same id) after ``retry_after``; all held ones go together. */
  _hold(ask, frame) {
    ask.held = true;
    setUserPending(ask.userEl, gettext("Waiting to send…"));
    this.heldReason = frame.code;
    this.heldUntil = Math.max(this.heldUntil, Date.now() + frame.retry_after * 1000);
    clearTimeout(this.heldTimer);
    this.heldTimer = setTimeout(() => this._sendHeld(), this.heldUntil - Date.now());
    clearInterval(this.heldTicker);
    this.heldTicker = setInterval(() => this._renderHeld(), 1000);
    this._renderHeld();
  }

  _renderHeld() {
    const held = [...this.asks.values()].filter((ask) => ask.held);
    this.heldBanner.hidden = held.length === 0;
    if (!held.length) {
      clearInterval(this.heldTicker);
      return;
    }
    const seconds = Math.max(1, Math.ceil((this.heldUntil - Date.now()) / 1000));
    const when = format(
      ngettext(
        "Your question will be sent in %(seconds)s s.",
        "Your %(count)s questions will be sent in %(seconds)s s.",
        held.length,
      ),
      { count: held.length, seconds },
    );
    this.heldBanner.textContent = `${HELD_REASONS[this.heldReason] || HELD_REASONS.unavailable} ${when} `;
    const now = document.createElement("button");
    now.type = "button";
    now.className = "btn-link";
    now.textContent = gettext("Send now");
    now.addEventListener("click", () => this._sendHeld());
    this.heldBanner.append(now);
  }

  _sendHeld() {
    clearTimeout(this.heldTimer);
    this.heldUntil = 0;
    for (const ask of this.asks.values()) {
      if (!ask.held) continue;
      ask.held = false;
      setUserPending(ask.userEl, gettext("Sending…"));
      this.socket.send(this._askFrame(ask)); // if closed, _onOpen re-sends it
    }
    this._renderHeld();
  }

  _showNotice(text) {
    this.notice.textContent = text;
    this.notice.hidden = false;
    clearTimeout(this.noticeTimer);
    this.noticeTimer = setTimeout(() => {
      this.notice.hidden = true;
    }, 8000);
  }

  // ---- user actions ----------------------------------------------------------------------------------

  _askFrame(ask) {
    const frame = { type: FRAME.ASK, id: ask.id, text: ask.text };
    if (ask.images.length) frame.attachments = ask.images.map((image) => image.id);
    if (this.conversation) frame.conversation = this.conversation;
    else if (this.config.kb) frame.kb = this.config.kb;
    return frame;
  }

  ask(text, images = []) {
    const trimmed = text.trim();
    if (!trimmed && !images.length) return;
    const id = newId();
    this.log.querySelector("[data-empty]")?.remove();
    const userEl = userMessage(trimmed, { clientId: id, pending: true, images });
    showImages(userEl, this.imageHeaders());
    this.log.append(userEl);
    const ask = { id, text: trimmed, images, acked: false, failed: false, held: false, messageId: null, userEl };
    this.asks.set(id, ask);
    this.typingSender.stop();
    this.socket.send(this._askFrame(ask)); // if closed, _onOpen re-sends it
    this._scrollToEnd({ force: true }); // asking means "show me the answer": follow it again
  }

  stop() {
    const streaming = [...this.messages.entries()].find(([, e]) => !e.done);
    if (streaming) this.socket.send({ type: FRAME.CANCEL, message: streaming[0] });
  }

  /** "Talk to a person", from the page's button or from a nothing-found answer's: one request, one frame. */
  requestHandoff() {
    if (!this.conversation || !handoffAvailable(this.status)) return;
    this.socket.send({ type: FRAME.HANDOFF, conversation: this.conversation });
  }

  _bindUi() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = this.input.value;
      if (this.attach?.busy) {
        this._showNotice(gettext("Wait for the image to finish uploading."));
        return;
      }
      const images = this.attach ? this.attach.take() : [];
      if (!text.trim() && !images.length) return;
      this.input.value = "";
      this._autosize();
      this.ask(text, images);
      this.input.focus();
    });
    this.input.addEventListener("input", () => this._autosize());
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.stopButton.addEventListener("click", () => this.stop());
    if (this.handoffButton) this.handoffButton.addEventListener("click", () => this.requestHandoff());
    if (this.endButton) this.endButton.addEventListener("click", () => this.end());
    this.log.addEventListener("click", (event) => this._onLogClick(event));
    bindVersions(this.log); // ‹ n/m › of an answer's versions
    this._bindPopovers();
    // Follow the conversation as it grows (tokens, chips, a taller input) unless the reader scrolled up.
    window.addEventListener("scroll", () => {
      this.following = this._nearEnd();
    }, { passive: true });
    if (window.ResizeObserver) {
      new ResizeObserver(() => {
        if (this.following) this._scrollToEnd();
      }).observe(this.root);
    }
    window.addEventListener("online", () => {
      if (!this.socket.isOpen) this.socket.reconnectNow();
    });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && !this.socket.isOpen) this.socket.reconnectNow();
    });
    window.addEventListener("pagehide", () => this.socket.close());
  }

  _onLogClick(event) {
    const chip = event.target.closest(".chip");
    if (chip) {
      // Tap support: toggle the passage popover (hover and focus show it too).
      const wrap = chip.closest(".source");
      const open = !wrap.classList.contains("open") || wrap.classList.contains("dismissed");
      this._closePopovers({ except: wrap });
      wrap.classList.remove("dismissed");
      wrap.classList.toggle("open", open);
      chip.setAttribute("aria-expanded", String(open));
      return;
    }
    const cite = event.target.closest(".cite a");
    if (cite) {
      event.preventDefault();
      // A cited tool result: its card in the same bubble flashes too.
      const card = cite.closest(".bubble")?.querySelector(`.tool-card[data-n="${cite.dataset.n}"]`);
      if (card) {
        card.classList.add("pulse");
        setTimeout(() => card.classList.remove("pulse"), 1200);
      }
      const target = document.getElementById(cite.getAttribute("href").slice(1));
      if (target) {
        this._closePopovers({ except: target });
        target.classList.remove("dismissed");
        target.querySelector(".chip").setAttribute("aria-expanded", "true");
        target.classList.add("open", "pulse");
        target.scrollIntoView({ block: "nearest", behavior: "smooth" });
        setTimeout(() => target.classList.remove("pulse"), 1200);
      }
      return;
    }
    const button = event.target.closest("[data-action]");
    if (!button) return;
    if (button.dataset.action === "handoff") {
      this.requestHandoff();
      return;
    }
    const msgEl = button.closest(".msg-assistant");
    const messageId = msgEl.dataset.message;
    switch (button.dataset.action) {
      case "feedback-up":
      case "feedback-down": {
        const rating = button.dataset.action === "feedback-up" ? 1 : -1;
        this.socket.send({ type: FRAME.FEEDBACK, message: messageId, rating });
        for (const b of msgEl.querySelectorAll("[data-action^=feedback]")) b.setAttribute("aria-pressed", String(b === button));
        break;
      }
      case "regenerate": {
        // Another version beside this one (docs/protocol.md "Regenerate"); the same id again after a reconnect.
        const id = newId();
        this.regenerations.set(id, messageId);
        this.socket.send({ type: FRAME.REGENERATE, message: messageId, id });
        break;
      }
      case "copy":
        this._copy(msgEl.dataset.text || msgEl.querySelector(".answer").innerText, button);
        break;
      default:
        break;
    }
  }

  async _copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
    } catch (err) {
      // Clipboard API needs a secure context; fall back to a hidden textarea.
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    const label = button.textContent;
    button.textContent = gettext("Copied");
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  }

  _updateControls() {
    const busy = [...this.messages.values()].some((e) => !e.done);
    this.stopButton.hidden = !busy;
    // Every "Talk to a person" (the page's and the nothing-found answers') follows the same rule.
    const available = handoffAvailable(this.status);
    if (this.handoffButton) {
      this.handoffButton.disabled = !this.conversation;
      this.handoffButton.hidden = !available;
    }
    for (const offer of this.log.querySelectorAll('[data-action="handoff"]')) offer.hidden = !available;
    if (this.endButton) {
      // Nothing to end before the first question, nor once ended (the rating panel shows then).
      this.endButton.hidden = !this.conversation || this.ended || !this.log.querySelector(".msg-user");
    }
  }

  /** The input grows with its text up to its CSS max-height, then scrolls. */
  _autosize() {
    const area = this.input;
    area.style.height = "auto";
    const max = parseFloat(getComputedStyle(area).maxHeight) || Infinity;
    const needed = area.scrollHeight + (area.offsetHeight - area.clientHeight);
    area.style.height = `${Math.min(needed, max)}px`;
    area.style.overflowY = needed > max ? "auto" : "hidden";
  }

  _nearEnd() {
    const doc = document.documentElement;
    return window.scrollY + window.innerHeight >= doc.scrollHeight - FOLLOW_SLACK_PX;
  }

  /** To the end of the page (the input sticks to the bottom), if the reader follows or `force`. */
  _scrollToEnd({ force = false } = {}) {
    if (force) this.following = true;
    if (!this.following) return;
    window.scrollTo({ top: document.documentElement.scrollHeight });
  }

  // ---- source popovers ---------------------------------------------------------------------------------

  /** A passage popover closes on a click outside it and on Escape (hover and focus open it too). */
  _bindPopovers() {
    document.addEventListener("click", (event) => {
      if (!event.target.closest(".source, .cite")) this._closePopovers();
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this._closePopovers({ dismiss: true });
    });
    // A popover dismissed with Escape stays shut while the pointer or focus that opened it remains.
    const undismiss = (event) => {
      const wrap = event.target.closest?.(".source");
      if (wrap && !wrap.contains(event.relatedTarget)) wrap.classList.remove("dismissed");
    };
    this.log.addEventListener("mouseout", undismiss);
    this.log.addEventListener("focusout", undismiss);
  }

  _closePopovers({ dismiss = false, except = null } = {}) {
    for (const wrap of this.log.querySelectorAll(".source")) {
      if (wrap === except) continue;
      if (wrap.classList.contains("open")) {
        wrap.classList.remove("open");
        wrap.querySelector(".chip").setAttribute("aria-expanded", "false");
      }
      if (dismiss && wrap.matches(":hover, :focus-within")) wrap.classList.add("dismissed");
    }
  }

  /** Live messages from a person or the system (see docs/protocol.md). */
  appendAgent(text, name, messageId, at) {
    this._appendOnce(agentMessage(text, name, at), messageId);
  }

  appendSystem(text, messageId, kind) {
    const msg = systemMessage(text);
    if (kind) msg.dataset.kind = kind; // agent_joined, agent_left, nudge, reminder
    this._appendOnce(msg, messageId);
  }

  _appendOnce(msg, messageId) {
    if (messageId && this.log.querySelector(`[data-message="${messageId}"]`)) return;
    if (messageId) msg.dataset.message = messageId;
    this.log.querySelector("[data-empty]")?.remove();
    this.log.append(msg);
    this._scrollToEnd();
  }
}

export { ChatPage };

const root = document.querySelector("[data-chat]");
if (root && document.getElementById("chat-config")) {
  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const page = new ChatPage(root, config);
  // For debugging in the console and for the browser tests (they cut the connection with it).
  window.__chat = {
    page,
    get socket() {
      return page.socket.socket;
    },
  };
}
