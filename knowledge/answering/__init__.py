"""Answering questions from the knowledge base.

- ``pipeline``: ``answer()``, the one async generator of events (retrieval, generation, the trace).
- ``events``: the typed events it yields and ``AnswerBackendError``.
- ``rendering``: answer text -> sanitised HTML with citation links.
- ``generators``: the registry of answer generators, one module each (``extractive``, ``openai``).
"""

from knowledge.answering.events import (
    AnswerBackendError,
    Event,
    FinalEvent,
    SourcesEvent,
    StatusEvent,
    TokenEvent,
    ToolResultEvent,
)
from knowledge.answering.generators import GENERATORS, Generator, get_generator
from knowledge.answering.pipeline import answer, retrieved_text, source_items
from knowledge.answering.rendering import cited_sources, render_answer_html

__all__ = [
    "GENERATORS",
    "AnswerBackendError",
    "Event",
    "FinalEvent",
    "Generator",
    "SourcesEvent",
    "StatusEvent",
    "TokenEvent",
    "ToolResultEvent",
    "answer",
    "cited_sources",
    "get_generator",
    "render_answer_html",
    "retrieved_text",
    "source_items",
]
