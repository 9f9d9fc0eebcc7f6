// The page's words in the customer's language: Django's JavaScript catalog (/jsi18n/, loaded by base.html
// before the modules) defines the global gettext() and interpolate(); without it the English source strings are
// shown. Call sites spell `gettext("…")` literally so `make messages` (xgettext) collects the strings into
// locale/<lang>/LC_MESSAGES/djangojs.po.

/** The translation of an English source string. */
export function gettext(text) {
  return typeof globalThis.gettext === "function" ? globalThis.gettext(text) : text;
}

/** The translation of ``singular`` / ``plural`` for ``count`` (the language's own plural rules). */
export function ngettext(singular, plural, count) {
  if (typeof globalThis.ngettext === "function") return globalThis.ngettext(singular, plural, count);
  return count === 1 ? singular : plural;
}

/** ``text`` (already translated) with its %(name)s placeholders filled from ``values``. */
export function format(text, values) {
  if (typeof globalThis.interpolate === "function") return globalThis.interpolate(text, values, true);
  return text.replace(/%\((\w+)\)s/g, (_, name) => String(values[name]));
}
