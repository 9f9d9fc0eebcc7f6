"""When a question depends on the conversation, and which search query to use for it.

A question is rewritten with the conversation only when it refers back: a pronoun or demonstrative
("is it valid?", "how long does that take?"), a leading "and …" / "what about …" (ellipsis: "and to
Austria?"), in any of the languages the assistant is asked in. Length alone never counts: "how much is
express delivery" after "I forgot my password" is a new question. Even then the rewrite is only taken on
evidence: ``choose_query`` keeps the standalone search when it matched the knowledge base better.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

#: Words that point back at something said before (lower case, whole words).
_REFERRING = frozenset(
    "it its it's that this they them those these there one ones same such "  # en
    "es das dies dieser diese dort davon dafür damit ihn sie "  # de
    "ça cela celui celle ceux cette "  # fr
    "eso esto ese esa ello allí "  # es
    .split()
)
#: Openings that continue the previous question ("and to Austria?", "what about the blender?").
_CONTINUING = re.compile(
    r"^\s*(?:and|also|or|but|what about|how about|same for|und|auch|und was|et|aussi|et pour|y|también|y para"
    r"|que tal|qué tal)\b",
    re.IGNORECASE,
)
#: Chinese references and continuations: 它 (it), 这/那 (this/that), 还有/那么 (and/then), trailing 呢.
_CJK_REFERRING = re.compile(r"^(?:那|还有|另外|那么)|它|这个|那个|这些|那些|呢[？?]?\s*$")
_WORD = re.compile(r"[\w'-]+")

#: How much better (cosine of the best passage) the rewritten search must be than the standalone one.
REWRITE_MARGIN = 0.0


def refers_back(question: str) -> bool:
    """True when the question cannot be understood without the earlier turns."""
    if _CONTINUING.match(question) or _CJK_REFERRING.search(question.strip()):
        return True
    words = [w.lower() for w in _WORD.findall(question)]
    return any(w in _REFERRING for w in words)


def best_similarity(passages: Sequence[Any]) -> float:
    """The best vector similarity among retrieved passages (0 when none has one)."""
    return max((p.vector_score or 0.0 for p in passages), default=0.0)


def choose_query(standalone: Sequence[Any], rewritten: Sequence[Any]) -> bool:
    """Whether the rewritten search wins: its best passage is at least as close to the question."""
    if not rewritten:
        return False
    return best_similarity(rewritten) + 1e-9 >= best_similarity(standalone) + REWRITE_MARGIN
