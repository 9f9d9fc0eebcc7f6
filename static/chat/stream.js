// An answer's stream frames (status, sources, tool_result, token, error, final; docs/protocol.md) turned into its
// bubble: the one place that does it, for the chat page (chat.js) and the staff console (console.js), so an answer
// looks the same to the customer and to the staff member watching. A new stream frame is drawn here (and its
// markup built in render.js, mirrored by a template under templates/conversations/ for finished messages).
//
// Frames of one message carry seq 1, 2, 3…; `order()` says whether one is the next, already applied (a replay
// after `resume`) or past a gap; the page decides what a gap means (the chat page resumes, the console applies it).

import { FRAME } from "./protocol.js";
import {
  Typewriter,
  assistantMessage,
  linkCitations,
  markUsedSources,
  renderSources,
  setStateNote,
  showFinalHtml,
  showHandoffOffer,
  toolCard,
} from "./render.js";

export const ORDER = Object.freeze({ NEXT: "next", SEEN: "seen", GAP: "gap" });

/** One assistant message's bubble and what its stream has applied to it so far. */
export class AnswerStream {
  /**
   * `offerHandoff`: a nothing-found answer shows "Talk to a person" in its bubble (the customer's page; the
   * console's staff member is the person).
   */
  constructor(el, { done = false, offerHandoff = false } = {}) {
    this.el = el;
    this.done = done;
    this.offerHandoff = offerHandoff;
    this.lastSeq = 0;
    this.text = ""; // the streamed tokens so far
    this.found = ""; // "Found 3 passages in 2 documents", kept beside the later status lines
    this.resuming = false; // a `resume` was sent and its replay has not finished yet
    this.typewriter = new Typewriter(el.querySelector(".answer"));
  }

  /** A new, empty bubble for an answer about to stream (append `stream.el` to the log): `assistantMessage`'s fields. */
  static create(fields, options = {}) {
    return new AnswerStream(assistantMessage(fields), options);
  }

  /**
   * A message the server rendered (templates/conversations/_message.html). A finished one only gets its citations
   * linked; an unfinished one (reloaded mid-answer) is emptied, since its frames are replayed from seq 1.
   */
  static adopt(el, options = {}) {
    const done = el.dataset.state !== "streaming";
    const answer = el.querySelector(".answer");
    if (done) {
      linkCitations(answer, el.dataset.message);
    } else {
      answer.textContent = "";
      answer.classList.add("streaming");
      answer.setAttribute("aria-busy", "true");
      el.dataset.text = "";
      el.dataset.streamed = "";
      el.querySelector(".tools").replaceChildren();
      el.querySelector(".msg-actions").hidden = true;
    }
    return new AnswerStream(el, { ...options, done });
  }

  /** Where `frame` stands in this message's sequence: ORDER.NEXT, ORDER.SEEN (skip it) or ORDER.GAP. */
  order(frame) {
    if (frame.seq <= this.lastSeq) return ORDER.SEEN;
    return frame.seq === this.lastSeq + 1 ? ORDER.NEXT : ORDER.GAP;
  }

  /** Draw one stream frame of this message (the caller checked its `order`). */
  apply(frame) {
    this.lastSeq = frame.seq;
    const el = this.el;
    switch (frame.type) {
      case FRAME.STATUS: {
        // "Found 3 passages in 2 documents" is worth keeping visible while the answer is written.
        if (frame.stage === "retrieved") this.found = frame.text;
        const status = el.querySelector(".status");
        status.textContent = frame.stage === "generating" && this.found ? `${this.found} · ${frame.text}` : frame.text;
        status.classList.add("busy");
        break;
      }
      case FRAME.SOURCES:
        renderSources(el.querySelector(".sources"), frame.items || [], frame.message);
        break;
      case FRAME.TOOL_RESULT:
        el.querySelector(".tools").append(toolCard(frame.tool || {}));
        break;
      case FRAME.TOKEN:
        this.text += frame.text;
        el.dataset.streamed = this.text;
        el.dataset.text = this.text;
        this.typewriter.push(frame.text);
        break;
      case FRAME.ERROR:
        setStateNote(el, "failed", frame.detail);
        break;
      case FRAME.FINAL:
        this.finish(frame);
        break;
      default:
        break;
    }
  }

  /** The answer is over (a `final` frame, or the page gave up on it): its final HTML, used chips, state note. */
  finish(frame) {
    const el = this.el;
    this.done = true;
    this.resuming = false;
    this.typewriter.stop();
    el.dataset.state = frame.state;
    el.dataset.text = frame.text;
    // final.replaced: the server's grounding guard swapped an uncited answer for the knowledge base's own
    // sentences after streaming it; the bubble shows final.html below, the streamed draft is dropped.
    el.dataset.replaced = String(Boolean(frame.replaced));
    if (frame.replaced) {
      this.text = frame.text;
    } else if (frame.text !== this.text) {
      console.warn("stream: final text differs from the streamed tokens", { streamed: this.text, final: frame.text });
    }
    const status = el.querySelector(".status");
    status.textContent = "";
    status.classList.remove("busy");
    showFinalHtml(el, frame.html, frame.message);
    const citations = frame.citations || [];
    const sources = el.querySelector(".sources");
    // Nothing found: no chips (the passages did not answer it), and "Talk to a person" in the answer itself.
    const nothingFound = frame.state === "complete" && Boolean(frame.offer_handoff);
    if (nothingFound && !citations.length) sources.replaceChildren();
    markUsedSources(sources, citations);
    showHandoffOffer(el, this.offerHandoff && nothingFound);
    setStateNote(el, frame.state === "complete" ? "" : frame.state);
    el.querySelector(".msg-actions").hidden = false;
  }
}
