"""Answer generators behind one interface, picked by ``settings.ANSWER_GENERATOR``.

A new backend is one module here with a class that has ``name``, ``stream()`` and ``rewrite()``, and one line
in ``GENERATORS``. Optional flags the pipeline reads: ``composes`` (its answer is exactly the extractive
composition), ``answers_searched_query`` (it answers the rewritten query, not the conversation) and
``rewrites_cheaply`` (``rewrite`` costs no model call, so every question after others may be tried
rewritten; otherwise only questions that point back are).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from knowledge.answering.events import AnswerBackendError

#: ANSWER_GENERATOR value -> the class that implements it.
GENERATORS: dict[str, str] = {
    "extractive": "knowledge.answering.generators.extractive.ExtractiveGenerator",
    "openai": "knowledge.answering.generators.openai.OpenAIChatGenerator",
}


class Generator(Protocol):
    """Writes an answer from numbered passages (``knowledge.retrieval.Passage``; source n = index + 1)."""

    name: str

    def stream(self, question: str, passages: Sequence[Any], history: list[dict]) -> AsyncIterator[str]:
        """Text pieces of the answer, citing passages as [n]."""
        ...

    async def rewrite(self, question: str, history: list[dict]) -> str:
        """The follow-up ``question`` as a standalone search query, given earlier turns."""
        ...


def get_generator(name: str | None = None) -> Generator:
    """A freshly built generator named by ``name`` or ``settings.ANSWER_GENERATOR``."""
    name = name or settings.ANSWER_GENERATOR
    if name not in GENERATORS:
        choices = ", ".join(repr(n) for n in GENERATORS)
        raise AnswerBackendError(f"Unknown ANSWER_GENERATOR={name!r}; use one of {choices}.")
    return import_string(GENERATORS[name])()
