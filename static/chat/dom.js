// Building a page's own controls: an element with its attributes and text (never HTML), for the panels the chat
// page and the widget share (leave_message.js, csat.js).

/** A new `tag` element with `attributes` set and `text` as its text content. */
export function node(tag, attributes = {}, text = "") {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, value);
  if (text) el.textContent = text;
  return el;
}
