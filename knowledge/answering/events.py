"""What the answer pipeline yields: typed events the chat streaming layer turns into frames.

Order: status(retrieving) -> status(retrieved) -> sources -> status(generating) -> token... -> final. A tool step
(knowledge/answering/tool_answers.py) adds status(tool) "Checking …", status(tool) "Found it" and a tool_result
before the sources (with an LLM, mid-answer, followed by the sources again with the tool's result among them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


class AnswerBackendError(RuntimeError):
    """The answer generator (e.g. an LLM endpoint) failed; the message is safe to show."""


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusEvent:
    """Progress line for the user ("Searching the knowledge base…")."""

    type: ClassVar[str] = "status"
    stage: str  # "retrieving" | "retrieved" | "generating"
    text: str


@dataclass(frozen=True)
class SourcesEvent:
    """The numbered passages the answer may cite; items: n, document, title, heading, page, snippet, score, url."""

    type: ClassVar[str] = "sources"
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ToolResultEvent:
    """What a tool answered, for the customer's card: ``tool`` = {n, name, outcome, ok, text, fields: [{name,
    value}]}, only the tool's visible fields (``knowledge.tools.running.ToolRun.card``)."""

    type: ClassVar[str] = "tool_result"
    tool: dict[str, Any]


@dataclass(frozen=True)
class TokenEvent:
    """A piece of answer text; the final text is exactly the concatenation of these."""

    type: ClassVar[str] = "token"
    text: str


@dataclass(frozen=True)
class FinalEvent:
    """The finished answer with rendered, sanitised HTML, the cited source numbers and the retrieval trace.

    ``replaced``: the grounding guard replaced an uncited LLM answer after its tokens were streamed, so
    ``text`` is NOT the concatenation of the tokens but the answer to show and store instead.
    """

    type: ClassVar[str] = "final"
    text: str
    html: str
    citations: list[int]
    state: str  # "complete"
    timings: dict[str, float]
    trace: dict[str, Any]
    replaced: bool = False
    offer_handoff: bool = False  # nothing in the knowledge base answers: the client offers a person


Event = StatusEvent | SourcesEvent | ToolResultEvent | TokenEvent | FinalEvent
