// CSAT (docs/analytics.md): once a conversation has ended — the customer pressed "End chat", or our team resolved
// it — ask how it went, 1 to 5 with an optional comment, for the assistant's conversations and people's alike.
// Driven by the `conversation` frame alone (`ended`, `rating`; docs/protocol.md), so the chat page and the widget
// use it alike: put `el` where it belongs, pass frames in. The `rate` frame saves it; the server's next
// `conversation` frame (on every socket showing the conversation) carries the saved rating, shown as thanks.

import { node } from "./dom.js";
import { format, gettext } from "./i18n.js";
import { FRAME } from "./protocol.js";
import { newId } from "./socket.js";

const SCORES = [
  [1, gettext("Very poor")],
  [2, gettext("Poor")],
  [3, gettext("OK")],
  [4, gettext("Good")],
  [5, gettext("Very good")],
];

let panels = 0; // a page may hold more than one (ids for labels)

/** The rating panel: five choices, a comment, Send; once saved, thanks and "Change". */
export class Satisfaction {
  /**
   * @param {{send: (frame: object) => boolean, conversation: () => string|null}} options
   *   send: sends a frame on the page's socket (false when it is not open); conversation: the open conversation.
   */
  constructor({ send, conversation }) {
    this.send = send;
    this.conversation = conversation;
    this.frame = null;
    this.score = null; // chosen, not yet sent
    this.pending = null; // the id of the rate frame waiting for the conversation frame that confirms it
    this.changing = false;
    this._build();
  }

  _build() {
    const id = `csat-${++panels}`;
    this.el = node("section", { class: "csat", "data-csat": "", "aria-labelledby": `${id}-q`, hidden: "" });
    const question = node("p", { id: `${id}-q`, class: "question" }, gettext("How was this conversation?"));
    this.form = node("form", { "data-csat-form": "" });
    this.choices = node("div", { class: "scores", role: "radiogroup", "aria-labelledby": `${id}-q` });
    this.buttons = SCORES.map(([score, label]) => {
      const button = node("button", {
        type: "button", class: "score", role: "radio", "aria-checked": "false", "data-score": String(score),
        title: label, "aria-label": `${score} – ${label}`,
      }, String(score));
      button.addEventListener("click", () => this._choose(score));
      return button;
    });
    this.choices.append(...this.buttons);
    this.choices.addEventListener("keydown", (event) => this._arrows(event));
    const ends = node("div", { class: "ends", "aria-hidden": "true" });
    ends.append(node("span", {}, gettext("Very poor")), node("span", {}, gettext("Very good")));
    const label = node("label", { for: `${id}-comment` }, gettext("Anything to add? (optional)"));
    this.comment = node("textarea", { id: `${id}-comment`, rows: "2", maxlength: "2000", "data-csat-comment": "" });
    this.button = node("button", { type: "submit", class: "btn btn-primary", disabled: "" }, gettext("Send"));
    this.errorEl = node("p", { class: "field-error", role: "alert", hidden: "" });
    this.form.append(this.choices, ends, label, this.comment, this.button, this.errorEl);
    this.thanks = node("div", { class: "thanks", "data-csat-thanks": "", hidden: "" });
    this.thanksText = node("p", { "data-csat-thanks-text": "" });
    const change = node("button", { type: "button", class: "btn-link" }, gettext("Change my rating"));
    this.thanks.append(this.thanksText, change);
    this.el.append(question, this.form, this.thanks);
    this.question = question;

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this._submit();
    });
    change.addEventListener("click", () => {
      this.changing = true;
      this.score = this.frame?.rating?.score ?? null;
      this.comment.value = this.frame?.rating?.comment || "";
      this._render();
      (this.buttons[(this.score || 1) - 1]).focus();
    });
  }

  /** A `conversation` frame of the open conversation. Returns whether the panel shows. */
  update(frame) {
    if (frame.rating && this.pending) {
      this.pending = null;
      this.changing = false;
    }
    if (!frame.ended) {
      this.score = null;
      this.changing = false;
      this.comment.value = "";
    }
    this.frame = frame;
    return this._render();
  }

  _render() {
    const frame = this.frame || {};
    const rated = Boolean(frame.rating) && !this.changing;
    this.el.hidden = !frame.ended;
    this.form.hidden = rated;
    this.question.hidden = rated;
    this.thanks.hidden = !rated;
    if (rated) {
      this.thanksText.textContent = format(gettext("Thank you! You rated this conversation %(score)s out of 5."), {
        score: frame.rating.score,
      });
    }
    for (const button of this.buttons) {
      const chosen = Number(button.dataset.score) === this.score;
      button.setAttribute("aria-checked", String(chosen));
      button.tabIndex = chosen || (this.score === null && button.dataset.score === "1") ? 0 : -1;
    }
    this.button.disabled = this.score === null || Boolean(this.pending);
    this.button.textContent = this.pending ? gettext("Sending…") : gettext("Send");
    return !this.el.hidden;
  }

  _choose(score) {
    this.score = score;
    this._render();
    this.buttons[score - 1].focus();
  }

  /** Arrow keys move the choice from the focused score, as in any radio group. */
  _arrows(event) {
    const step = { ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const from = this.score ?? Number(event.target.closest("[data-score]")?.dataset.score || 0);
    this._choose(Math.min(5, Math.max(1, from + step)));
  }

  _submit() {
    const conversation = this.conversation();
    if (!conversation || this.score === null || this.pending) return;
    this._showError("");
    const id = newId();
    const sent = this.send({ type: FRAME.RATE, id, conversation, score: this.score, comment: this.comment.value.trim() });
    if (!sent) {
      this._showError(gettext("Not connected. Please try again in a moment."));
      return;
    }
    this.pending = id;
    this._render();
  }

  /** An `error` frame: the one answering this panel's rating is shown here (returns true), others are not its. */
  error(frame) {
    if (!this.pending || frame.id !== this.pending) return false;
    this.pending = null;
    this._showError(frame.detail || gettext("Your rating could not be saved. Please try again."));
    this._render();
    return true;
  }

  _showError(text) {
    this.errorEl.textContent = text;
    this.errorEl.hidden = !text;
  }
}
