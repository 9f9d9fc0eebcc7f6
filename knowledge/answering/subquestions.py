"""A message that asks two things, as its separate questions.

"heading to New York on Metal. how much cash can I pull out per day, and how much a month is free of the cash
fee?" asks two facts that two articles hold; one search and one composition answer whichever part the closest
passage is about. Split, each part is searched and answered on its own (``pipeline``), with the message's
statements ("heading to New York on Metal.") kept in front of every part: they say what the parts are about.

Only clear joints split: a second question after a question mark, or ", and" followed by a question word, in the
languages the assistant is asked in. "Can I return it and get my money back?" stays one question.
"""

from __future__ import annotations

import re

from knowledge.answering.followups import refers_back

#: ", and how …", ", and will …": a comma, the language's "and", then a word that starts a question.
_JOINT = re.compile(
    r"[,，]\s*(?:and|also|plus)\s+(?=(?:how|what|whats|what's|when|where|which|who|why|will|would|can|could|do|"
    r"does|did|is|are|if|should)\b)"
    r"|[,，]\s*(?:und|außerdem)\s+(?=(?:wie|was|wann|wo|welche[rsmn]?|wer|warum|kann|muss|gibt|ist|sind|bekomme)\b)"
    r"|[,，]\s*(?:et)\s+(?=(?:comment|combien|quand|où|quel(?:le)?s?|qui|pourquoi|est-ce|puis-je|dois-je)\b)"
    r"|[,，]\s*(?:y)\s+(?=(?:c[oó]mo|cu[aá]nt[oa]s?|cu[aá]ndo|d[oó]nde|qu[eé]|cu[aá]l(?:es)?|qui[eé]n|puedo|tengo)\b)"
    r"|[，,]\s*(?:还有|另外|以及|那)(?=\S)",
    re.IGNORECASE,
)
#: The end of a question followed by more text: "…cancel? and how long…", "…怎么申请保修？多久能拿到新的？".
_QUESTION_END = re.compile(r"(?<=[?？])\s*(?=\S)")
_STATEMENT_END = re.compile(r"(?<=[.!。！])\s+")
#: A part must say something: at least this many letters and digits (a CJK character counts two).
MIN_PART_CHARS = 6
#: A later part this short ("how much?", "在哪里申请？": letters and digits, CJK counting two) is asked with the part
#: before it.
ELLIPTIC_SIZE = 12


def split(question: str) -> list[str]:
    """The message's questions, each with the message's leading statements; ``[question]`` when it asks one."""
    text = " ".join(question.split())
    sentences = [s for s in _STATEMENT_END.split(text) if s]
    lead: list[str] = []
    while len(sentences) > 1 and not sentences[0].rstrip().endswith(("?", "？")) and not _asks(sentences[0]):
        lead.append(sentences.pop(0))
    body = " ".join(sentences)
    parts = [p.strip() for piece in _QUESTION_END.split(body) for p in _JOINT.split(piece)]
    parts = [p for p in parts if _size(p) >= MIN_PART_CHARS]
    if len(parts) < 2:
        return [question]
    # "can we get a bit more time? how much?", "…, and how long does it take?": a part that names no topic of its
    # own, or points back, asks about the one before it.
    parts = [f"{parts[i - 1]} {part}" if i and _elliptic(part) else part for i, part in enumerate(parts)]
    prefix = " ".join(lead)
    return [f"{prefix} {part}".strip() for part in parts]


def _elliptic(part: str) -> bool:
    return _size(part) <= ELLIPTIC_SIZE or refers_back(part)


def _size(text: str) -> int:
    """Letters and digits, a CJK character counting two (it is a word or half of one)."""
    return sum((2 if "\u3040" <= ch <= "\u9fff" else 1) for ch in text if ch.isalnum())


def _asks(sentence: str) -> bool:
    """A sentence that asks though it ends with a full stop ("how do I reset it.")."""
    return bool(re.match(r"\s*(?:how|what|whats|when|where|which|who|why|can|could|do|does|is|are)\b", sentence, re.I))
