"""Answer generators behind one interface (``Generator``), picked by ``settings.ANSWER_GENERATOR``.

A new backend is one module here with a class that defines every member of ``Generator`` — the pipeline reads
them all, plainly, and guesses no defaults — and one line in ``GENERATORS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from django.conf import settings
from django.utils.module_loading import import_string

from knowledge.answering.events import AnswerBackendError

#: ANSWER_GENERATOR value -> the class that implements it.
GENERATORS: dict[str, str] = {
    "extractive": "knowledge.answering.generators.extractive.ExtractiveGenerator",
    "openai": "knowledge.answering.generators.openai.OpenAIChatGenerator",
}


@dataclass
class Composition:
    """An extractive answer, or the verdict that the passages do not answer the question (``declined``).

    Here, beside ``Generator``, because every generator returns one (``Generator.composition``): the extractive
    composition is the relevance verdict whatever writes the answer."""

    text: str
    declined: bool
    report: dict[str, Any] = field(default_factory=dict)  # for the trace: why these units, or why none
    #: The sources ``text`` cites: the retrieved passages, then any other chunk of their documents it quotes.
    passages: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class ToolOffer:
    """A tool the model may ask for (OpenAI function calling's ``tools`` entry): ``name`` as the model must write
    it (``^[A-Za-z0-9_-]{1,64}$``), what it does and when to use it, and its arguments as a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class ToolRequest:
    """The model asks for a tool mid-answer. ``Generator.stream`` yields it; the pipeline runs the tool (checks,
    signed identity, the company's API: knowledge/tools/) and sets ``result`` — a JSON-able object for the model's
    ``tool`` message — before it asks the stream for its next piece, so the generator reads ``result`` on resuming.
    ``arguments`` is what the model wrote, parsed (``{}`` when it was not a JSON object): nothing in it is trusted."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None


@runtime_checkable
class Generator(Protocol):
    """Writes an answer from numbered passages (``knowledge.retrieval.Passage``; source n = index + 1).

    Everything ``knowledge.answering.pipeline`` and ``grounding`` rely on is declared here; each generator defines
    each member (``isinstance(generator, Generator)`` checks that they are all there), ``composition`` by deriving
    from ``extractive.ComposesVerdict``, since every generator's verdict is the same extractive composition.
    """

    name: str
    """Who wrote the answer, in the trace and the logs: "extractive", "openai:<model>"."""

    grounded: bool
    """Its answers are the passages' own sentences, cited by construction, so the grounding guard leaves its stream
    alone. False: the guard removes citations of unlisted sources and notices an answer that cites none."""

    composes: bool
    """Its answer is exactly its ``composition`` (over the retrieved passages and the other chunks of their
    documents): the pipeline composes once, lists the composition's sources and paces its text, and ``stream`` is
    not called. False: the composition, over the retrieved passages alone, is only the verdict whether anything
    answers, and ``stream`` writes the answer."""

    answers_searched_query: bool
    """It cannot read the conversation, so it is handed the query that was searched (a follow-up's rewrite with
    the previous question's terms) instead of the customer's own words."""

    rewrites_cheaply: bool
    """``rewrite`` costs no model call, so every question asked after others is also searched rewritten; when it
    costs one, only questions that point back (``followups.refers_back``) are."""

    def composition(
        self,
        question: str,
        passages: Sequence[Any],
        *,
        whole_documents: bool = True,
        focus: str | None = None,
        context: str | None = None,
        requester: str | None = None,
    ) -> Composition:
        """The extractive composition of ``question`` over ``passages`` with this generator's limits
        (``extractive.compose``; synchronous: it reads the database): whether anything answers, for every
        generator, and the answer itself for one that ``composes``."""
        ...

    def pace(self) -> float:
        """Words per second a composed answer, or the refusal when nothing answers, is streamed at (0: no delay)."""
        ...

    def stream(
        self, question: str, passages: Sequence[Any], history: list[dict], tools: Sequence[ToolOffer] = ()
    ) -> AsyncIterator[str | ToolRequest]:
        """Text pieces of the answer, citing passages as [n]; with ``tools``, a ``ToolRequest`` for each tool the
        model asks for (see there), after which the answer goes on with the tool's result."""
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
