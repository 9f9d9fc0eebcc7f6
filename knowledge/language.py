"""Which language a customer wrote in, so the answer's own words (and the server's) are in it.

A question is short, so this is a script check (Chinese, Japanese, Korean) plus a count of very common words for
the Latin-script languages the site speaks (``settings.LANGUAGES``). ``None`` means "can't tell" (a bare product
code, "E42"): the caller keeps the language it already has (the page's, from ``Accept-Language``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.conf import settings
from django.utils import translation

T = TypeVar("T")

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

#: Frequent words that are rare in the other languages listed (no words shared between two lists).
_COMMON = {
    "en": "the and is are you your how what can do does my with when where which why have has not this it i "
    "will there of for from be".split(),
    "de": "der die das und ist sind ich mein meine meinen ihr wie was wann kann ich nicht mit für ein eine einen "
    "zu den im auf es bei gibt auch noch habe hab bis wo warum".split(),
    "fr": "le la les et est sont je mon ma mes vous votre comment que quoi peux pas avec pour un une des du au "
    "il ce quand où pourquoi combien faire ai".split(),
    "es": "el los las y es son yo mi mis usted cómo qué puedo con para una del se lo por cuándo dónde cuánto "
    "hay tengo mí".split(),
}


#: Characters that only one of the Latin-script languages uses: "¿Hay que…?" is Spanish though "que" is in
#: French's list too. Each counts as two frequent words.
_MARKS = {"es": "¿¡ñ", "de": "ßäöü", "fr": "çèêùœ"}


def detect(text: str) -> str | None:
    """The language code of ``text`` among the site's languages (``zh-hans``, ``en``, ``de``…), or None."""
    letters = sum(1 for c in text if c.isalpha())
    if letters:
        han = len(_HAN.findall(text))
        if _HANGUL.search(text) and len(_HANGUL.findall(text)) / letters >= 0.3:
            return _available("ko")
        if _KANA.search(text) and (han + len(_KANA.findall(text))) / letters >= 0.3:
            return _available("ja")
        if han / letters >= 0.3:
            return _available("zh-hans")
    words = [w.lower() for w in _WORD.findall(text)]
    counts = {lang: sum(w in common for w in words) for lang, common in _COMMON.items()}
    for lang, marks in _MARKS.items():  # letters and punctuation only one of the languages writes
        counts[lang] += 2 * sum(text.count(mark) for mark in marks)
    best = max(counts, key=lambda lang: counts[lang])
    if counts[best] == 0:
        return None
    if best != "en" and counts[best] == counts["en"]:
        best = "en"
    return _available(best)


def _available(code: str) -> str | None:
    return code if code in {c for c, _ in settings.LANGUAGES} else None


def in_language(language: str, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` with ``language`` active, and only for that call: an async generator must not leave a
    language switched on in its consumer's context between two events."""
    with translation.override(language):
        return function(*args)


def for_language(texts: Mapping[str, Any], language: str, *, fallback: str = "en", or_any: bool = True) -> Any:
    """The entry of ``texts`` (keyed by language code) for ``language``: its own (``de-ch``), its base language's
    (``de``), ``fallback``'s, else any (``or_any``), else None. What staff write per language — a tool's questions and
    answer templates, a site's greeting — is read through it."""
    language = language.lower()
    for key in (language, language.split("-")[0], fallback):
        if texts.get(key):
            return texts[key]
    return next((value for value in texts.values() if value), None) if or_any else None
