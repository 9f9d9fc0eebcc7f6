// Typing indicators (docs/protocol.md "Typing"), shared by the chat page, the widget and the console: tell the
// other side while this person types, and show who is typing on the other side. The frames are never stored; a
// page that reloads just sees nobody typing until the next one.

import { FRAME } from "./protocol.js";

// At most one `typing` frame this often while keys are pressed (the server drops any closer than 1 s).
const SEND_EVERY_MS = 2000;
// The indicator goes away this long after the last frame (a lost "stopped", a closed tab).
const SHOW_FOR_MS = 5000;

/** Sends `typing` while `input` holds text (at most every SEND_EVERY_MS), and a "stopped" when it is emptied or
 * when `stop()` is called (the message was sent). `send(frame)` returns false while disconnected;
 * `conversation()` is the conversation's id, or null before there is one (nothing to tell then). */
export class TypingSender {
  constructor(input, { send, conversation }) {
    this.input = input;
    this.send = send;
    this.conversation = conversation;
    this.sentAt = -Infinity;
    this.open = null; // the conversation told "typing" and not yet "stopped"
    input.addEventListener("input", () => this._changed());
  }

  _changed() {
    if (!this.input.value.trim()) {
      this.stop();
      return;
    }
    const conversation = this.conversation();
    const now = Date.now();
    if (!conversation || now - this.sentAt < SEND_EVERY_MS) return;
    if (this.send({ type: FRAME.TYPING, conversation, typing: true })) {
      this.sentAt = now;
      this.open = conversation;
    }
  }

  stop() {
    if (this.open) this.send({ type: FRAME.TYPING, conversation: this.open, typing: false });
    this.open = null;
  }
}

/** "Sam is typing…" in a polite live region at the top of the `composer` form (chat.css shows it just above it):
 * its text changes only when the indicator appears, changes person or goes, so a screen reader says it once, not
 * on every frame. */
export class TypingIndicator {
  constructor(composer) {
    this.el = document.createElement("p");
    this.el.className = "typing-indicator";
    this.el.dataset.typing = "";
    this.el.setAttribute("aria-live", "polite");
    composer.prepend(this.el);
    this.timer = null;
  }

  /** `text`: what to say while someone types (already translated), or null when the frame says they stopped. */
  update(text) {
    clearTimeout(this.timer);
    if (!text) {
      this.hide();
      return;
    }
    if (this.el.textContent !== text) this.el.textContent = text;
    this.timer = setTimeout(() => this.hide(), SHOW_FOR_MS);
  }

  hide() {
    clearTimeout(this.timer);
    this.el.textContent = "";
  }
}
