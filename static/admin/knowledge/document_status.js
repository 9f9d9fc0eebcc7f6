// Live ingestion progress for the document admin (changelist and detail page).
// Finds every status badge on the page, polls the admin status endpoint every ~2 s for the
// documents still pending/processing, updates badge, chunk count and error in place, and stops
// polling as soon as nothing is in progress any more.

const POLL_MS = 2000;
const IN_PROGRESS = new Set(["pending", "processing"]);

function badges() {
  return Array.from(document.querySelectorAll("[data-doc-status]"));
}

function pendingIds() {
  const ids = badges().filter((el) => IN_PROGRESS.has(el.dataset.status)).map((el) => el.dataset.docStatus);
  return Array.from(new Set(ids));
}

function truncate(text, limit) {
  if (!limit || text.length <= limit) return text;
  return text.slice(0, limit - 1) + "…";
}

function apply(id, info) {
  for (const el of document.querySelectorAll(`[data-doc-status="${id}"]`)) {
    el.className = `kb-status kb-status--${info.status}`;
    el.dataset.status = info.status;
    el.textContent = info.label;
  }
  for (const el of document.querySelectorAll(`[data-doc-chunks="${id}"]`)) {
    el.textContent = String(info.chunk_count);
  }
  for (const el of document.querySelectorAll(`[data-doc-error="${id}"]`)) {
    el.textContent = truncate(info.error, Number(el.dataset.truncate || 0));
    el.title = info.error;
  }
}

function showProgress(active, finishedSomething) {
  const note = document.querySelector("[data-kb-progress]");
  if (!note) return;
  if (active > 0) {
    note.hidden = false;
    note.textContent = `Indexing ${active} document${active === 1 ? "" : "s"}… this page updates by itself.`;
  } else if (finishedSomething && note.hasAttribute("data-reload-hint")) {
    note.hidden = false;
    note.innerHTML = 'Indexing finished. <a href="">Reload</a> to see the chunks.';
  } else {
    note.hidden = true;
  }
}

async function poll(url) {
  let finishedSomething = false;
  for (;;) {
    const ids = pendingIds();
    showProgress(ids.length, finishedSomething);
    if (ids.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    try {
      const response = await fetch(`${url}?ids=${ids.join(",")}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) throw new Error(`status endpoint answered ${response.status}`);
      const data = await response.json();
      for (const [id, info] of Object.entries(data)) {
        if (!IN_PROGRESS.has(info.status)) finishedSomething = true;
        apply(id, info);
      }
      // A document deleted meanwhile is absent from the answer: stop waiting for it.
      for (const id of ids) {
        if (!(id in data)) apply(id, { status: "gone", label: "Deleted", chunk_count: 0, error: "" });
      }
    } catch (error) {
      console.warn("document status poll failed; retrying", error);
    }
  }
}

const meta = document.querySelector('meta[name="kb-status-url"]');
if (meta) poll(meta.content);
