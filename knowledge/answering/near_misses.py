"""Near misses: a question about a thing the passages never name (issue 18, point 3).

"Do you sell iPhones?", "is there a student discount?", "can I buy bitcoin in the app?": close in meaning to the
knowledge base's own articles (a shop's products, its prices, its payments), so the cosine verdict lets them
through, and the answer quotes something next to the question. What gives them away is the thing asked about:
a customer asking whether the company offers, sells or has X needs an article that names X. When the question
has that form and a word of X appears in none of the passages the answer would be read from (the retrieved
ones and the rest of their documents), nothing there answers it.

Only the object of such a question counts, never its verb or the rest of the sentence: "can I get my 2FA codes
by text message?" asks about codes, and a paraphrase ("by text" for "SMS") is left to meaning. Words are compared
only with passages in the question's own language (a German word is never in an English article); a Latin word
inside a Chinese question ("飞机上有WiFi吗？") is a name, compared with every passage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from knowledge.answering.scoring import stem
from knowledge.language import detect as detect_language

#: Where the object starts, per language: after "do you offer / can I buy / is there / does X have …" opening a
#: clause ("how do I get rid of…" and "do I have to…" ask no such thing). The object runs to the first
#: preposition, conjunction or punctuation (``_OBJECT_END``).
_ASKS_FOR = {
    "en": re.compile(
        r"(?:^|[.?!,;:]\s*)(?:"
        r"(?:do|does|can|could|will|would)\s+(?:you|u)(?:\s+guys)?\s+(?:also\s+|still\s+)?"
        r"(?:sell|offer|do|have|provide|support|stock|carry|accept|rent|hire)(?!\s+to\b)"
        r"|(?:can|could)\s+(?:i|we)\s+(?:also\s+)?(?:buy|rent|hire|order|book)"
        r"|(?:is|are)\s+there"
        r"|(?:does|do)\s+[\w-]+\s+(?:have|offer|sell|support|include|come\s+with)(?!\s+to\b)"
        r")\s+",
        re.IGNORECASE,
    ),
    "de": re.compile(
        r"(?:^|[.?!,;:]\s*)(?:gibt\s+es|habt\s+ihr|haben\s+sie|verkauft\s+ihr|verkaufen\s+sie|bietet\s+ihr"
        r"|bieten\s+sie)\s+",
        re.IGNORECASE,
    ),
    "fr": re.compile(
        r"(?:^|[.?!,;:]\s*)(?:y\s+a-t-il|avez-vous|vendez-vous|proposez-vous"
        r"|(?:est-ce\s+que\s+)?vous\s+(?:avez|vendez|proposez))\s+",
        re.IGNORECASE,
    ),  # fmt: skip
    "es": re.compile(r"(?:^|[.?!,;:¿]\s*)(?:hay|tenéis|tienen|vendéis|venden|ofrecéis|ofrecen)\s+", re.IGNORECASE),
}
_OBJECT_END = re.compile(
    r"[?!.,;:()]|\s(?:in|on|at|for|with|by|from|to|as|into|if|when|or|and|instead|than|via|through|so|because"
    r"|im|in|auf|für|mit|bei|von|zu|oder|und|pour|avec|chez|de|ou|et|para|con|en|por|o|y)\b",
    re.IGNORECASE,
)
#: Words of an object that name nothing: determiners, possessives, quantifiers (en, de, fr, es).
_EMPTY = frozenset(
    "a an the my your our their his her its any some other another one this that these those such more own "
    "ein eine einen einem einer kein keine den die das der dem mein meine dein euer eure ihr ihre "
    "un une des le la les du mon ma mes votre vos notre nos "
    "uno una unos unas el los las mi mis tu tus su sus algún alguna algunos algunas "
    "something anything bit lot way kind sort".split()
)
#: Nouns that name the kind of fact asked, not a thing: "is there a fee for express delivery?" asks about express
#: delivery, whatever word the article uses for its price.
_KIND_OF_FACT = frozenset(
    "fee fees charge charges cost costs price prices limit limits deadline minimum maximum option options way "
    "possibility chance difference amount number time period extra surcharge "
    "gebühr gebühren kosten preis limit frais prix coût limite tarifa precio coste cargo límite".split()
)
#: A Chinese question asking whether something is had, offered or possible: 有…吗, 能/可以/支持…吗.
_CJK_ASKS_FOR = re.compile(r"(?:有|能|可以|支持|提供|卖).*[吗嘛][？?]?")
_LATIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9+-]{1,}")
_WORD = re.compile(r"[^\W\d_][\w'-]*")


def asked_object(question: str) -> tuple[list[str], str | None]:
    """The words naming what the question asks the company to have or offer, and the language they are written
    in (None: names, compared with passages of any language); ``[]`` when the question has no such form."""
    language = detect_language(question)
    if language and language.startswith("zh"):
        if _CJK_ASKS_FOR.search(question):
            return [w for w in _LATIN_NAME.findall(question)], None
        return [], None
    pattern = _ASKS_FOR.get(language or "")
    match = pattern.search(question) if pattern else None
    if match is None:
        return [], None
    rest = question[match.end() :]
    for _ in range(2):  # "a fee | for express delivery": past a kind of fact to the thing it is of
        end = _OBJECT_END.search(rest)
        phrase, rest = (rest[: end.start()], rest[end.end() :]) if end else (rest, "")
        words = [w for w in _WORD.findall(phrase)[:4] if w.lower() not in _EMPTY and len(w) > 2]
        if any(w.lower() not in _KIND_OF_FACT for w in words):
            return [w for w in words if w.lower() not in _KIND_OF_FACT], language
        if not rest or not end or not end.group().strip().isalpha():
            break  # the phrase ended at punctuation: nothing more is its object
    return [], None


def unnamed(question: str, passages: Sequence[Any]) -> str | None:
    """The first word of the question's object (``asked_object``) that none of ``passages`` (those in its
    language) names, in any form ("mortgages" is named by "mortgage", "car" is not named by "card"); None when
    every word is named or the question asks for nothing of that kind."""
    words, language = asked_object(question)
    if not words:
        return None
    texts = [p.text for p in passages if language is None or (p.language or language) == language]
    if not texts:
        return None  # no passage in the question's language: words can't be compared, meaning decides
    named = {w.lower() for w in _WORD.findall(" ".join(texts))}
    named |= {stem(w) for w in named}
    for word in words:
        lower = word.lower()
        if not {lower, stem(lower), stem(lower) + "e"} & named:
            return word
    return None
