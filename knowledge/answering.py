"""The answer pipeline: question -> retrieval -> grounded generation, as typed events.

One async generator, ``answer()``, with no WebSocket knowledge: the chat consumer
turns each event into a frame. Event order is always
``status(retrieving) -> status(retrieved) -> sources -> status(generating) -> token... -> final``.

Failure contract: if the generator backend fails, ``answer()`` has already yielded
the tokens produced so far and then raises ``AnswerBackendError`` (no ``final``);
the caller sends ``error {code: backend_error}`` and marks the message failed,
keeping the partial text. Cancellation: the caller cancels the consuming task;
``asyncio.CancelledError`` is never swallowed here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

from knowledge.models import KnowledgeBase


class AnswerBackendError(RuntimeError):
    """The answer generator (e.g. an LLM endpoint) failed; the message is safe to show."""


@dataclass(frozen=True)
class StatusEvent:
    """Progress line for the user ("Searching the knowledge base…")."""

    type: ClassVar[str] = "status"
    stage: str  # "retrieving" | "retrieved" | "generating"
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SourcesEvent:
    """The numbered passages the answer may cite; items: n, document, title, heading, page, snippet, score, url."""

    type: ClassVar[str] = "sources"
    items: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenEvent:
    """A piece of answer text; the final text is exactly the concatenation of these."""

    type: ClassVar[str] = "token"
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FinalEvent:
    """The finished answer with rendered, sanitised HTML, the cited source numbers and the retrieval trace."""

    type: ClassVar[str] = "final"
    text: str
    html: str
    citations: list[int]
    state: str  # "complete"
    timings: dict[str, float]
    trace: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Event = StatusEvent | SourcesEvent | TokenEvent | FinalEvent


class Generator(Protocol):
    """Writes an answer from numbered passages. Passages are ``knowledge.retrieval.Passage``; [n] = index + 1."""

    name: str

    def stream(self, question: str, passages: list[Any], history: list[dict]) -> AsyncIterator[str]: ...

    async def rewrite(self, question: str, history: list[dict]) -> str: ...


async def answer(
    question: str,
    *,
    kb: KnowledgeBase | None,
    history: list[dict] | None = None,
    generator: Generator | None = None,
) -> AsyncIterator[Event]:
    """Answer ``question`` from ``kb`` as a stream of events (first version; see module docstring)."""
    raise NotImplementedError
    yield  # pragma: no cover
