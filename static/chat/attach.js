// Photos and screenshots in the composer: pick, paste or drop an image, see it uploaded and re-encoded by the
// server (POST /attachments/, docs/security.md "Customers' images"), remove it, and send its id with the question.
// The chat page (chat.js) and the widget (static/widget/) use the same control; they differ only in how they
// authenticate the upload: the page's CSRF token for its session, the widget's `Authorization: Visitor <token>`.

import { format, gettext } from "./i18n.js";

// What the customer is told when the server refuses a file (the `code` of its JSON answer); other codes show the
// server's own `error`.
const REFUSALS = {
  too_large: gettext("This image is too large."),
  not_an_image: gettext("Only PNG, JPEG and WebP images can be attached."),
  too_many_pixels: gettext("This image has too many pixels."),
  damaged: gettext("This image is damaged or incomplete."),
  polyglot: gettext("This file is not only an image, so it was refused."),
  too_many: gettext("Too many images are waiting to be sent. Send them first."),
};
export const ACCEPTED_TYPES = "image/png,image/jpeg,image/webp";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A small picture (a frame, a sun, a hill), drawn in the button's text colour; decoration only. */
function pictureIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const attributes = { class: "attach-icon", viewBox: "0 0 24 24", width: "20", height: "20", fill: "none",
    stroke: "currentColor", "stroke-width": "2", "stroke-linecap": "round", "stroke-linejoin": "round",
    "aria-hidden": "true", focusable: "false" };
  for (const [name, value] of Object.entries(attributes)) svg.setAttribute(name, value);
  for (const [tag, shape] of [["rect", { x: 3, y: 4, width: 18, height: 16, rx: 2 }], ["circle", { cx: 9, cy: 10, r: 2 }],
    ["polyline", { points: "21 16 15.5 10.5 5 20" }]]) {
    const part = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(shape)) part.setAttribute(name, String(value));
    svg.append(part);
  }
  return svg;
}

/**
 * Show the images under `root` whose address is in `data-src` (a message's attachments; templates/conversations/
 * _attachments.html and render.js `attachmentList`). With an `Authorization` header (the widget, which has no
 * cookie to show) each is fetched with it and shown from a data: URL, which the pages' policy allows; otherwise the
 * address is used as it is, and the session cookie goes with it.
 */
export function showImages(root, headers = {}) {
  for (const img of root.querySelectorAll("img[data-src]")) {
    const url = img.dataset.src;
    img.removeAttribute("data-src");
    if (!headers.Authorization) {
      img.src = url;
      continue;
    }
    img.closest("a")?.removeAttribute("href"); // a new tab would not carry the header
    fetch(url, { headers, credentials: "omit" })
      .then((response) => (response.ok ? response.blob() : Promise.reject(new Error(String(response.status)))))
      .then((blob) => new Promise((resolve) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.readAsDataURL(blob);
      }))
      .then((dataUrl) => { img.src = dataUrl; })
      .catch(() => img.classList.add("missing"));
  }
}

/**
 * The attach control of a composer `form`: a button (keyboard: Tab to it, Enter or Space) that opens the file
 * picker, pasting or dropping an image on the form too, and a tray of thumbnails above the text, each removable.
 * Each file is uploaded at once; the thumbnail is the server's re-encoded image, so the customer sees exactly what
 * will be sent. A refused file says why, under the tray, and is not kept.
 *
 * options: `uploadUrl` (string), `headers()` (extra request headers), `conversation()` (the conversation's id or
 * null), `max` (images per question).
 * Returns {take(), clear(), busy, count}: `take()` hands over the uploaded images ({id, url, width, height}) for a
 * question and empties the tray. While the tray holds an image the text is not required.
 */
export function attachImages(form, { uploadUrl, headers = () => ({}), conversation = () => null, max = 4 }) {
  const input = el("input");
  input.type = "file";
  input.accept = ACCEPTED_TYPES;
  input.multiple = true;
  input.hidden = true;
  input.tabIndex = -1;
  const button = el("button", "btn attach-btn");
  button.type = "button";
  button.dataset.attach = "";
  button.title = gettext("Attach an image");
  button.setAttribute("aria-label", gettext("Attach an image (PNG, JPEG or WebP)"));
  button.append(pictureIcon(), el("span", "label", gettext("Image")));
  const tray = el("ul", "attach-tray");
  tray.setAttribute("aria-label", gettext("Images to send"));
  tray.hidden = true;
  const error = el("div", "attach-error");
  error.setAttribute("role", "alert");
  error.hidden = true;
  const textarea = form.querySelector("textarea");
  form.prepend(tray, error);
  (textarea || form.firstChild).before(button, input);

  const items = []; // {tile, image|null, uploading}
  const state = {
    get busy() {
      return items.some((item) => item.uploading);
    },
    get count() {
      return items.length;
    },
    take() {
      const images = items.filter((item) => item.image).map((item) => item.image);
      state.clear();
      return images;
    },
    clear() {
      items.splice(0).forEach((item) => item.tile.remove());
      update();
    },
  };

  function update() {
    tray.hidden = items.length === 0;
    if (textarea) textarea.required = items.length === 0;
    button.disabled = items.length >= max;
    items.forEach((item, i) => {
      item.remove.setAttribute("aria-label", format(gettext("Remove image %(n)s"), { n: i + 1 }));
    });
  }

  function say(text) {
    error.textContent = text;
    error.hidden = !text;
  }

  function drop(item) {
    const at = items.indexOf(item);
    if (at >= 0) items.splice(at, 1);
    item.tile.remove();
    update();
  }

  async function upload(file) {
    if (items.length >= max) {
      say(format(gettext("At most %(max)s images per message."), { max }));
      return;
    }
    const tile = el("li", "attach-tile uploading");
    const img = el("img");
    img.alt = file.name || gettext("Image");
    const note = el("span", "attach-note", gettext("Uploading…"));
    const remove = el("button", "attach-remove", "×");
    remove.type = "button";
    tile.append(img, note, remove);
    tray.append(tile);
    const item = { tile, remove, image: null, uploading: true };
    items.push(item);
    remove.addEventListener("click", () => {
      drop(item);
      (textarea || button).focus();
    });
    update();
    const body = new FormData();
    body.append("image", file, file.name || "image");
    if (conversation()) body.append("conversation", conversation());
    try {
      const response = await fetch(uploadUrl, { method: "POST", body, headers: headers(), credentials: "same-origin" });
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(REFUSALS[answer.code] || answer.error || `HTTP ${response.status}`);
      item.image = answer;
      item.uploading = false;
      tile.classList.remove("uploading");
      tile.dataset.attachment = answer.id;
      note.remove();
      img.alt = format(gettext("Image %(n)s to send"), { n: items.indexOf(item) + 1 });
      img.dataset.src = answer.url;
      showImages(tile, headers());
    } catch (err) {
      drop(item);
      say(`${file.name ? `${file.name}: ` : ""}${err.message}`);
    }
  }

  function add(files) {
    say("");
    for (const file of files) upload(file);
  }

  button.addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    add([...input.files]);
    input.value = ""; // the same file again is a new choice
  });
  form.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])].filter((file) => file.type.startsWith("image/"));
    if (!files.length) return;
    event.preventDefault();
    add(files);
  });
  form.addEventListener("dragover", (event) => {
    if ([...(event.dataTransfer?.types || [])].includes("Files")) event.preventDefault();
  });
  form.addEventListener("drop", (event) => {
    if (!event.dataTransfer?.files?.length) return;
    event.preventDefault();
    add([...event.dataTransfer.files]);
  });
  update();
  return state;
}
