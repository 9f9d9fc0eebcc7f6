"""Curated answers in an answer: when one matches the question, it is the answer (docs/analytics.md "Curated answers").

A curated answer (``CuratedAnswer``, knowledge/curated/) is in the knowledge base as a passage of its own, so search
finds it like any passage. Among the retrieved passages it is *preferred* — its whole text is the answer, cited as
"Answer from the support team" — when the question matches one of the questions it was written for:

* **meaning**: the question is one of its question lines word for word (case and punctuation aside), or comes close
  enough on the answerer's own scale (cosines put on the one scale of ``knowledge.cross_lingual``): the curated
  passage as retrieved (its questions and answer in one vector) at least ``PASSAGE_SHARE`` of the way from the
  answerer's threshold (``extractive.min_similarity``) to 1, or one question line alone (embedded as a passage, like
  the articles' sentences) at least ``QUESTION_SHARE`` of the way. Scale-free, like the follow-ups' margin, and
  always the bar of a text in the question's own language. Measured (bench/curated.py, docs/benchmarks.md "Curated
  answers"): with multilingual-e5-small paraphrases of a question lie at 0.83-0.93 from it and unrelated questions of
  the same help centre at up to 0.92, so neither vector alone tells them apart; together they fix 21 of 48 wrong
  paraphrases and break none of 140 other questions;
* **the same things**: a question naming a code the curated answer never names ("KS-204" for one written about
  KS-101), asking whether the company offers a thing it never names (``near_misses``), or naming one of the
  knowledge base's names (a plan, a fare, a city: a word the passages capitalise mid-sentence) that the curated
  answer does not name while the answer names another that the question does not ("Metal" for one about "Plus")
  is another question, however close in meaning.

Several match: the one in the question's language, then the one that clears its bar by the most. None: the curated
passages are left out (``without``) and the articles answer as usual: a curated answer is never quoted in part.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from django.utils.translation import gettext, gettext_noop

from knowledge.answering import near_misses
from knowledge.answering.scoring import Question, terms
from knowledge.language import detect as detect_language
from knowledge.models import CuratedAnswer, Document

#: What a customer sees as the source of a curated answer (translated in the answer's language).
LABEL = gettext_noop("Answer from the support team")
#: How far above the answerer's threshold, as a share of the way from it to 1, a question must come to a curated
#: answer — to its passage as retrieved (questions and answer together), or to one of its questions alone — for the
#: curated answer to be preferred (module docstring; docs/benchmarks.md "Curated answers").
PASSAGE_SHARE = 0.3
QUESTION_SHARE = 0.35
_WORDS = re.compile(r"\w+")
_NAME = re.compile(r"(?<=[a-z0-9,;:)] )([A-Z][\w'-]+)")


@dataclass
class Match:
    """The curated answer preferred for a question, and why."""

    passage: Any  # the retrieved ``Passage`` of its document, relabelled
    curated_id: int
    answer: str
    question: str  # the line of ``questions`` that matched; "": the passage (its questions and answer together)
    similarity: float
    threshold: float

    def report(self) -> dict[str, Any]:
        """For the trace: which curated answer answered, by which of its questions, how closely."""
        return {"curated": self.curated_id, "matched": self.question or "its questions and answer together",
                "similarity": round(self.similarity, 3),
                "threshold": round(self.threshold, 3)}  # fmt: skip


def label() -> str:
    """The source's name in the active language."""
    return gettext(LABEL)


def labelled(passage: Any) -> Any:
    """A curated passage as customers see it: the label for a title and no heading (its heading holds the questions,
    for search)."""
    if getattr(passage, "kind", None) != Document.Kind.CURATED:
        return passage
    return replace(passage, title=label(), heading="")


def without(passages: Sequence[Any]) -> list[Any]:
    """The passages that are not curated answers: what the articles answer from when no curated answer matches."""
    return [p for p in passages if getattr(p, "kind", None) != Document.Kind.CURATED]


def names(texts: Sequence[str]) -> set[str]:
    """Words written with a capital in mid-sentence (names of plans, fares, places, products), as ``terms``."""
    return terms(" ".join(m.group(1) for text in texts for m in _NAME.finditer(text)))


def preferred(
    question: str,
    passages: Sequence[Any],
    vector: Sequence[float],
    shifts: dict[str, float],
    threshold_for: Callable[[str, str], float],
    *,
    focus: str | None = None,
) -> Match | None:
    """The curated answer among ``passages`` that answers ``question`` (see the module docstring), or None.

    ``vector``: the question's embedding; ``shifts``: its ``cross_lingual.shifts``; ``threshold_for(question,
    language)``: the answerer's threshold. Synchronous: reads the curated answers of the curated passages."""
    curated = {p.document_id: p for p in passages if getattr(p, "kind", None) == Document.Kind.CURATED}
    if not curated:
        return None
    asked_text = focus or question
    asked = Question.of(question, vector, focus=focus)
    asked_language = detect_language(asked_text)
    known_names = names([p.text for p in passages])
    found: list[tuple[bool, float, Match]] = []
    rows = CuratedAnswer.objects.filter(document_id__in=list(curated), active=True).values_list(
        "pk", "document_id", "questions", "answer", "question_vectors"
    )
    for pk, document_id, questions, answer, packed in rows:
        passage = curated[document_id]
        match = _closest(asked.vector, asked_text, questions, packed, passage, shifts, threshold_for)
        if match is None or not _same_things(asked, asked_text, questions, answer, passage, known_names):
            continue
        line, similarity, needed = match
        in_language = detect_language(answer) == asked_language
        found.append(
            (in_language, similarity - needed, Match(labelled(passage), pk, answer.strip(), line, similarity, needed))
        )
    if not found:
        return None
    return max(found, key=lambda item: (item[0], item[1]))[2]


def _above(similarity: float, floor: float, share: float) -> tuple[float, float]:
    """(by how much ``similarity`` clears the bar, the bar): ``share`` of the way from ``floor`` to 1 above it."""
    needed = floor + share * (1.0 - floor)
    return similarity - needed, needed


def _closest(
    vector: np.ndarray, asked: str, questions: str, packed: bytes | None, passage: Any, shifts: dict[str, float],
    threshold_for: Callable[[str, str], float],
) -> tuple[str, float, float] | None:  # fmt: skip
    """(what matched, its similarity, the bar it cleared) for the question that clears its bar by the most: the
    curated passage as retrieved (its questions and answer together) or one question line; None when none does."""
    best: tuple[float, str, float, float] | None = None
    # Always the bar of a text in the question's own language: a curated passage may hold questions in several
    # languages and an answer in another, and the lower cross-lingual bar let other questions in (measured); an
    # answer for customers of another language is a curated answer written in theirs.
    floor = threshold_for(asked, detect_language(asked) or "")
    if passage.vector_score is not None:  # retrieval's cosine, already on the one scale of ``cross_lingual``
        margin, needed = _above(passage.vector_score, floor, PASSAGE_SHARE)
        if margin >= 0:
            best = (margin, "", passage.vector_score, needed)
    lines = [line.strip() for line in questions.splitlines() if line.strip()]
    if exact := next((line for line in lines if _plain(line) == _plain(asked)), None):
        return exact, 1.0, 0.0  # asked word for word (a knowledge gap's question, copied): no bar, and it wins
    matrix = np.frombuffer(bytes(packed or b""), dtype=np.float32)
    if lines and matrix.size == len(lines) * vector.size:  # else indexed by another model: a save re-embeds it
        for line, cosine in zip(lines, matrix.reshape(len(lines), -1) @ vector, strict=True):
            language = detect_language(line) or ""
            similarity = float(cosine) + shifts.get(language, 0.0)
            margin, needed = _above(similarity, floor, QUESTION_SHARE)
            if margin >= 0 and (best is None or margin > best[0]):
                best = (margin, line, similarity, needed)
    return None if best is None else best[1:]


def _plain(text: str) -> str:
    """Words only, in lower case: "Can I pay by card?" and "can i pay by card" are the same question."""
    return " ".join(_WORDS.findall(text.casefold()))


def _same_things(asked: Question, asked_text: str, questions: str, answer: str, passage: Any, known: set[str]) -> bool:
    """Whether the question is about what the curated answer is about: no code, offered thing or name of the
    knowledge base that the question names and the answer does not (see the module docstring)."""
    texts = [questions, answer]
    if asked.unknown_codes(texts):
        return False
    if near_misses.unnamed(asked_text, [replace(passage, text=f"{questions}\n{answer}")]):
        return False
    written = terms(f"{questions}\n{answer}")
    asked_names = (asked.focus & known) - written
    answer_names = (names(texts) & known) - asked.terms
    return not (asked_names and answer_names)


def text_of(match: Match, n: int) -> str:
    """The curated answer as the answer's text, cited as source ``n`` at its end (Markdown kept as written)."""
    body = match.answer.rstrip()
    if body and body[-1] in ".!?。！？":
        return f"{body[:-1]} [{n}]{body[-1]}"
    return f"{body} [{n}]"
