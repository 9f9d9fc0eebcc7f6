// Saved replies in the console's reply box: "/" at the start of the box or after a space opens the list of the
// team's saved replies (managed in the admin), filtered as the agent types; ArrowUp/ArrowDown move, Enter or Tab
// inserts, Escape closes, a click inserts. The chosen reply replaces "/shortcut" with its text, placeholders filled.
//
// Everything comes from the page config (conversations/console_views.py): the enabled replies, unfilled, and what
// each placeholder is in this conversation. Filling is string replacement into the textarea's value: nothing is
// parsed as markup or run. The list is an ARIA listbox controlled by the textarea as a combobox.

// A word in braces, with the space before it (dropped with an empty value when punctuation follows).
const PLACEHOLDER = /([ \t]?)\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
// "/" then what the agent typed so far, at the start of the box or after whitespace, up to the caret.
const TRIGGER = /(?:^|\s)\/([^\s/]*)$/;
const LIST_ID = "saved-replies-list";

/** A saved reply's text with its placeholders filled from `values` (the server's, per conversation).
 * A known placeholder without a value becomes empty, and the space before it goes too when punctuation, a space
 * or the end follows: "Hi {customer_name}, thanks" reads "Hi, thanks". Unknown names stay as written (the admin
 * refuses them, so only a reply saved before that rule could hold one). */
export function fillPlaceholders(text, values) {
  return text.replace(PLACEHOLDER, (match, space, name, offset, whole) => {
    if (!Object.hasOwn(values, name)) return match;
    const value = String(values[name] ?? "");
    if (value) return space + value;
    const next = whole.charAt(offset + match.length);
    return next === "" || /[\s.,!?;:)]/.test(next) ? "" : space;
  });
}

/** The replies matching what was typed after "/": shortcut prefix first, then shortcut or title containing it. */
export function matchReplies(replies, query) {
  const q = query.toLowerCase();
  const rank = (reply) => {
    const shortcut = reply.shortcut.toLowerCase();
    if (shortcut.startsWith(q)) return 0;
    if (shortcut.includes(q)) return 1;
    return reply.title.toLowerCase().includes(q) ? 2 : -1;
  };
  return replies
    .map((reply, index) => ({ reply, index, rank: rank(reply) }))
    .filter((entry) => entry.rank >= 0)
    .sort((a, b) => a.rank - b.rank || a.index - b.index)
    .map((entry) => entry.reply);
}

/** Where "/query" starts before the caret, and the query; null when the caret is not in one. */
export function slashAt(value, caret) {
  const found = TRIGGER.exec(value.slice(0, caret));
  return found ? { start: caret - found[1].length - 1, query: found[1] } : null;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

export class SavedReplyPicker {
  constructor(textarea, replies, values) {
    this.area = textarea;
    this.replies = replies;
    this.values = values || {};
    this.shown = []; // the replies in the list, in order
    this.active = -1;
    this.slash = null; // {start, query} of the "/shortcut" being typed
    this.dismissed = null; // the start of a "/…" the agent closed with Escape: not reopened while typing it
    this.box = el("div", "saved-replies");
    this.box.hidden = true;
    this.list = el("ul", "saved-replies-list");
    this.list.id = LIST_ID;
    this.list.setAttribute("role", "listbox");
    this.list.setAttribute("aria-label", "Saved replies");
    this.empty = el("p", "saved-replies-empty muted");
    this.box.append(this.list, this.empty);
    textarea.form.classList.add("has-saved-replies");
    textarea.insertAdjacentElement("afterend", this.box);
    textarea.setAttribute("role", "combobox");
    textarea.setAttribute("aria-autocomplete", "list");
    textarea.setAttribute("aria-controls", LIST_ID);
    textarea.setAttribute("aria-expanded", "false");
    this.bind();
  }

  bind() {
    this.area.addEventListener("input", () => this.update());
    this.area.addEventListener("click", () => this.update());
    this.area.addEventListener("keyup", (event) => {
      if (["ArrowLeft", "ArrowRight", "Home", "End"].includes(event.key)) this.update();
    });
    this.area.addEventListener("blur", () => this.close());
    // Capture on the form: these keys are the list's while it is open, before the box's own handlers (Enter
    // sends the reply, console.js) see them.
    this.area.form.addEventListener("keydown", (event) => this.onKey(event), true);
    // Keep the focus (and the caret) in the box while choosing with the mouse.
    this.list.addEventListener("mousedown", (event) => event.preventDefault());
    this.list.addEventListener("click", (event) => {
      const option = event.target.closest("[role=option]");
      if (option) this.insert(this.shown[Number(option.dataset.index)]);
    });
    this.list.addEventListener("mousemove", (event) => {
      const option = event.target.closest("[role=option]");
      if (option) this.highlight(Number(option.dataset.index), false);
    });
  }

  get isOpen() {
    return !this.box.hidden;
  }

  onKey(event) {
    if (event.target !== this.area || !this.isOpen || event.isComposing) return;
    const plain = !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey;
    let handled = true;
    if (event.key === "ArrowDown" && this.shown.length) this.highlight((this.active + 1) % this.shown.length);
    else if (event.key === "ArrowUp" && this.shown.length) {
      this.highlight((this.active - 1 + this.shown.length) % this.shown.length);
    } else if ((event.key === "Enter" || event.key === "Tab") && plain && this.shown.length) {
      this.insert(this.shown[this.active]);
    } else if (event.key === "Escape") {
      this.dismissed = this.slash?.start ?? null;
      this.close();
    } else handled = false;
    if (handled) {
      event.preventDefault();
      event.stopPropagation();
    }
  }

  /** Open, filter or close the list for what is before the caret. */
  update() {
    const slash = this.area.disabled ? null : slashAt(this.area.value, this.area.selectionStart);
    if (!slash || slash.start !== this.dismissed) this.dismissed = null;
    if (!slash || this.dismissed !== null) {
      this.close();
      return;
    }
    this.slash = slash;
    this.shown = matchReplies(this.replies, slash.query);
    this.list.replaceChildren(...this.shown.map((reply, index) => this.option(reply, index)));
    this.empty.textContent = this.shown.length ? "" : `No saved reply matches “/${slash.query}”.`;
    this.empty.hidden = this.shown.length > 0;
    this.box.hidden = false;
    this.area.setAttribute("aria-expanded", "true");
    this.highlight(this.shown.length ? 0 : -1);
  }

  option(reply, index) {
    const item = el("li", "saved-reply");
    item.id = `${LIST_ID}-${index}`;
    item.dataset.index = String(index);
    item.dataset.shortcut = reply.shortcut;
    item.setAttribute("role", "option");
    item.setAttribute("aria-selected", "false");
    const head = el("div", "saved-reply-head");
    head.append(el("span", "saved-reply-shortcut", `/${reply.shortcut}`), el("span", "saved-reply-title", reply.title));
    if (reply.language) head.append(el("span", "saved-reply-language", reply.language));
    item.append(head, el("div", "saved-reply-preview", fillPlaceholders(reply.text, this.values)));
    return item;
  }

  highlight(index, scroll = true) {
    this.active = index;
    for (const option of this.list.children) {
      option.setAttribute("aria-selected", option.dataset.index === String(index) ? "true" : "false");
    }
    const current = index >= 0 ? this.list.children[index] : null;
    if (current) {
      this.area.setAttribute("aria-activedescendant", current.id);
      if (scroll) current.scrollIntoView({ block: "nearest" });
    } else this.area.removeAttribute("aria-activedescendant");
  }

  /** "/shortcut" becomes the reply's text, filled; the caret goes after it. */
  insert(reply) {
    if (!reply || !this.slash) return;
    const end = this.area.selectionStart;
    this.area.setRangeText(fillPlaceholders(reply.text, this.values), this.slash.start, end, "end");
    this.close();
    this.area.focus();
    // Others listening to the box (typing, autosize) hear of the change; it holds no "/…" to reopen the list for
    // unless the reply itself ends in one, which is then the agent's to continue.
    this.area.dispatchEvent(new Event("input", { bubbles: true }));
  }

  close() {
    this.box.hidden = true;
    this.slash = null;
    this.shown = [];
    this.active = -1;
    this.area.setAttribute("aria-expanded", "false");
    this.area.removeAttribute("aria-activedescendant");
  }
}

/** The picker on `textarea` when the team has saved replies; null (and nothing changed) when it has none. */
export function attachSavedReplies(textarea, replies, values) {
  return textarea && replies?.length ? new SavedReplyPicker(textarea, replies, values) : null;
}
