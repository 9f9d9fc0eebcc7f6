// "Leave a message" (docs/widget.md): the customer asked for a person and nobody can answer now — outside the
// site's business hours, or nobody from the staff is online. Say so in the customer's language and ask for an e-mail
// address, which the `leave_message` frame saves: staff replies are then e-mailed there too, and the conversation
// keeps waiting for a person. Driven by the `conversation` frame alone (`status`, `away`, `left_message`;
// docs/protocol.md), so the chat page and the widget use it alike: put `el` where it belongs, pass frames in.

import { node } from "./dom.js";
import { format, gettext } from "./i18n.js";
import { AWAY, CONVERSATION_STATUS, FRAME } from "./protocol.js";
import { newId } from "./socket.js";

const WHY = {
  [AWAY.CLOSED]: gettext("Our support team is not available right now: it is outside our business hours."),
  [AWAY.NOBODY_ONLINE]: gettext("Nobody from our support team is online right now."),
};

let panels = 0; // a page may hold more than one (ids for labels)

/** The panel: why nobody answers, the address form, and once saved where the reply will go. */
export class LeaveMessage {
  /**
   * @param {{send: (frame: object) => boolean, conversation: () => string|null}} options
   *   send: sends a frame on the page's socket (false when it is not open); conversation: the open conversation.
   */
  constructor({ send, conversation }) {
    this.send = send;
    this.conversation = conversation;
    this.pending = null; // the id of the leave_message frame waiting for its answer
    this.changing = false; // the customer asked to change an address already left
    this.frame = null;
    this._build();
  }

  _build() {
    const id = `leave-email-${++panels}`;
    this.el = node("section", { class: "leave-message", "data-leave-message": "", "aria-live": "polite", hidden: "" });
    this.why = node("p", { class: "why", "data-why": "" });
    this.form = node("form", { "data-leave-form": "", novalidate: "" }); // the server judges the address, in one place
    const ask = node("p", { class: "ask" }, gettext("Leave your e-mail address and we will send our reply there. Your request stays in our queue."));
    const label = node("label", { for: id }, gettext("Your e-mail address"));
    this.input = node("input", {
      id, type: "email", name: "email", autocomplete: "email", inputmode: "email", maxlength: "254", required: "",
      "aria-describedby": `${id}-error`,
    });
    this.button = node("button", { type: "submit", class: "btn btn-primary" }, gettext("Send me the reply"));
    this.errorEl = node("p", { id: `${id}-error`, class: "field-error", role: "alert", hidden: "" });
    this.form.append(ask, label, this.input, this.button, this.errorEl);
    this.left = node("div", { class: "left", "data-left": "", hidden: "" });
    this.leftText = node("p", { "data-left-text": "" });
    const change = node("button", { type: "button", class: "btn-link", "data-change": "" }, gettext("Change the address"));
    this.left.append(this.leftText, change);
    this.el.append(this.why, this.form, this.left);

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this._submit();
    });
    change.addEventListener("click", () => {
      this.changing = true;
      this.input.value = this.frame?.left_message?.email || "";
      this._render();
      this.input.focus();
    });
  }

  /** A `conversation` frame of the open conversation. Returns whether the panel shows (the page may then hide its
   * own "we have asked a person" note, which this replaces). */
  update(frame) {
    const before = this.frame?.left_message?.email;
    this.frame = frame;
    const saved = frame.left_message?.email;
    if (saved && (this.pending || saved !== before)) {
      this.pending = null;
      this.changing = false;
    }
    return this._render();
  }

  _render() {
    const frame = this.frame || {};
    const waiting = frame.status === CONVERSATION_STATUS.WAITING_FOR_AGENT;
    const left = frame.left_message;
    const showLeft = waiting && Boolean(left) && !this.changing;
    const showForm = waiting && !showLeft && (Boolean(frame.away) || this.changing);
    this.el.hidden = !(showLeft || showForm);
    this.el.dataset.away = frame.away || "";
    this.why.textContent = WHY[frame.away] || "";
    this.why.hidden = !frame.away;
    this.form.hidden = !showForm;
    this.left.hidden = !showLeft;
    if (showLeft) {
      this.leftText.textContent = format(
        gettext("We will e-mail our reply to %(email)s. You can close this page; your request stays in our queue."),
        { email: left.email },
      );
    }
    this.button.disabled = Boolean(this.pending);
    this.button.textContent = this.pending ? gettext("Saving…") : gettext("Send me the reply");
    return !this.el.hidden;
  }

  _submit() {
    const conversation = this.conversation();
    if (!conversation || this.pending) return;
    this._showError("");
    const id = newId();
    const sent = this.send({ type: FRAME.LEAVE_MESSAGE, conversation, id, email: this.input.value.trim() });
    if (!sent) {
      this._showError(gettext("Not connected. Please try again in a moment."));
      return;
    }
    this.pending = id;
    this._render();
  }

  /** An `error` frame: the one answering this panel's frame is shown at the field (returns true), others are not
   * this panel's. */
  error(frame) {
    if (!this.pending || frame.id !== this.pending) return false;
    this.pending = null;
    this._showError(
      frame.code === "invalid"
        ? gettext("This does not look like an e-mail address. Please check it.")
        : gettext("Your address could not be saved. Please try again."),
    );
    this._render();
    this.input.focus();
    return true;
  }

  _showError(text) {
    this.errorEl.textContent = text;
    this.errorEl.hidden = !text;
    this.input.setAttribute("aria-invalid", text ? "true" : "false");
  }
}
