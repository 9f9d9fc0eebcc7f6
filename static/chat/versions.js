// An answer's versions (Regenerate; docs/protocol.md "Regenerate"): the assistant messages answering one question
// (`data-reply-to`, numbered by `data-version`) sit together in the log, one shown at a time — the latest, unless the
// reader switched — with ‹ n/m › in each one's head line to switch. For the chat page, the widget and the console,
// which show an answer the same way (templates/conversations/_message.html renders the same control for history).

import { format, gettext } from "./i18n.js";

/** The versions of the answer to `question` in `log`, in version order. */
function versionsOf(log, question) {
  return [...log.querySelectorAll(".msg-assistant[data-reply-to]")]
    .filter((msg) => msg.dataset.replyTo === question)
    .sort((a, b) => Number(a.dataset.version) - Number(b.dataset.version));
}

function stepButton(step, label, symbol, disabled) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "icon-btn version-step";
  button.dataset.step = String(step);
  button.setAttribute("aria-label", label);
  button.title = label;
  button.textContent = symbol;
  button.disabled = disabled;
  return button;
}

/** ‹ n/m ›: the same markup as templates/conversations/_message.html. */
export function versionNav(n, count) {
  const nav = document.createElement("nav");
  nav.className = "versions";
  nav.setAttribute("aria-label", gettext("Versions of this answer"));
  const shown = document.createElement("span");
  shown.className = "version-count";
  shown.textContent = `${n}/${count}`;
  shown.title = format(gettext("Version %(version)s of %(versions)s"), { version: n, versions: count });
  nav.append(
    stepButton(-1, gettext("Previous version"), "‹", n <= 1),
    shown,
    stepButton(1, gettext("Next version"), "›", n >= count),
  );
  return nav;
}

/** Show `msgEl` among its question's versions (the others hidden) and bring every one's ‹ n/m › up to date. */
export function showVersion(log, msgEl) {
  const all = versionsOf(log, msgEl.dataset.replyTo);
  all.forEach((msg, i) => {
    msg.hidden = msg !== msgEl;
    msg.querySelector(".versions")?.remove();
    if (all.length > 1) msg.querySelector(".msg-head .who").after(versionNav(i + 1, all.length));
  });
}

/** A new version's bubble (`data-reply-to` set): after its question's last version, and shown. False when none of its
 * question's versions is in the log (the caller places it, or leaves it out). */
export function placeVersion(log, msgEl) {
  const all = versionsOf(log, msgEl.dataset.replyTo);
  if (!all.length) return false;
  all[all.length - 1].after(msgEl);
  showVersion(log, msgEl);
  return true;
}

/** Move `by` versions from the one holding `button`; the focus stays on the control (the one that moved, if it can). */
function step(log, button, by) {
  const msgEl = button.closest(".msg-assistant");
  const all = versionsOf(log, msgEl.dataset.replyTo);
  const target = all[all.indexOf(msgEl) + by];
  if (!target) return;
  showVersion(log, target);
  const buttons = [...target.querySelectorAll(".versions .version-step")];
  (buttons.find((b) => b.dataset.step === String(by) && !b.disabled) || buttons.find((b) => !b.disabled))?.focus();
}

/** The controls' clicks, and ←/→ on a focused control. */
export function bindVersions(log) {
  log.addEventListener("click", (event) => {
    const button = event.target.closest(".versions .version-step");
    if (button) step(log, button, Number(button.dataset.step));
  });
  log.addEventListener("keydown", (event) => {
    const nav = event.target.closest?.(".versions");
    if (!nav || (event.key !== "ArrowLeft" && event.key !== "ArrowRight")) return;
    event.preventDefault();
    step(log, nav.querySelector(".version-step"), event.key === "ArrowLeft" ? -1 : 1);
  });
}
