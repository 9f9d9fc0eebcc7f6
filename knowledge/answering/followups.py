"""When a question depends on the conversation, and which search query to use for it.

A question asked after others is also searched rewritten with the conversation, and the rewrite is taken
only on evidence (``choose_query``): it must match the knowledge base at least as well as the question alone
when the question refers back — a pronoun or demonstrative ("is it valid?", "does he need a passport?"), a
leading "and …" / "what about …" (ellipsis: "and to Austria?"), in any of the languages the assistant is
asked in — and clearly better (``rewrite_margin``) when it does not ("what do I need to bring?", a Chinese
question that drops its subject). Length alone never counts: "how much is express delivery" after "I forgot
my password" is a new question and keeps its own search.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from knowledge.language import detect as detect_language

#: Words that point back at something said before, per language (lower case, whole words): a word of one
#: language's list can be a plain word in another's (Spanish "es" is "is", German "es" is "it").
_REFERRING = {
    "en": frozenset("it its that this they them those these there one ones same such he him his she her".split()),
    "de": frozenset("es das dies dieser diese dort davon dafür damit er ihn ihm sie".split()),
    "fr": frozenset("ça cela celui celle ceux cette il elle lui".split()),
    "es": frozenset("eso esto ese esa ello allí él ella".split()),
}
#: German demonstratives that are also articles: "was kostet das?" points back, "das Übergewicht" does not.
_GERMAN_ARTICLES = frozenset("das dies diese dieser".split())
#: Openings that continue the previous question ("and to Austria?", "what about the blender?").
_CONTINUING = re.compile(
    r"^\s*(?:and|also|or|but|what about|how about|same for|und|auch|und was|et|aussi|et pour|y|también|y para"
    r"|que tal|qué tal)\b",
    re.IGNORECASE,
)
#: Chinese references and continuations: 它 (it), 这/那 (this/that), 还有/那么 (and/then), trailing 呢.
_CJK_REFERRING = re.compile(r"^(?:那|还有|另外|那么)|它|这个|那个|这些|那些|呢[？?]?\s*$")
_WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")  # "qu'il" is "qu" and "il"

#: How much better the rewritten search of a question that does not point back must be than its standalone
#: search: this share of the distance from the answer threshold to a perfect match (a scale-free margin:
#: 0.02 of cosine for multilingual-e5, whose similarities are compressed near 1, 0.08 for MiniLM).
UNMARKED_SHARE = 0.14


def refers_back(question: str) -> bool:
    """True when the question cannot be understood without the earlier turns."""
    if _CONTINUING.match(question) or _CJK_REFERRING.search(question.strip()):
        return True
    language = detect_language(question)
    referring = _REFERRING.get(language or "", frozenset()) | _REFERRING["en"]
    words = _WORD.findall(question)
    for word, following in zip(words, [*words[1:], ""], strict=True):
        lower = word.lower()
        if lower in _GERMAN_ARTICLES and following[:1].isupper() or word == "Sie":
            continue  # an article before a German noun; "Sie" is the polite "you"
        if lower in referring:
            return True
    return False


def previous_question(turns: Sequence[dict]) -> str | None:
    """The customer's last earlier message: what a follow-up is rewritten with, and the kind of fact it asks
    when it names none. When that message itself pointed back ("how do I claim for that?" after "my suitcase
    came off the belt cracked"), the one it pointed at comes with it: the topic is in the earlier one."""
    asked = [t["text"] for t in turns if t.get("role") == "user"]
    if not asked:
        return None
    if len(asked) > 1 and refers_back(asked[-1]):
        return f"{asked[-1]} {asked[-2]}"
    return asked[-1]


def best_similarity(passages: Sequence[Any]) -> float:
    """The best vector similarity among retrieved passages (0 when none has one)."""
    return max((p.vector_score or 0.0 for p in passages), default=0.0)


def rewrite_margin(points_back: bool, min_similarity: float) -> float:
    """The margin ``choose_query`` asks of a rewrite (``min_similarity``: the model's answer threshold)."""
    return 0.0 if points_back else UNMARKED_SHARE * (1.0 - min_similarity)


def choose_query(standalone: Sequence[Any], rewritten: Sequence[Any], margin: float = 0.0) -> bool:
    """Whether the rewritten search wins: its best passage is at least ``margin`` closer to the question."""
    if not rewritten:
        return False
    return best_similarity(rewritten) + 1e-9 >= best_similarity(standalone) + margin
