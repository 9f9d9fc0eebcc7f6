// Asks before a form marked `data-confirm="question"` is submitted (deleting a conversation). A module and not an
// inline onsubmit= handler, because the Content-Security-Policy runs no inline script (docs/security.md).

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
