"""The answer to a message with no words: a customer sent only an image (conversations/attachments.py).

Nothing is searched and no model is called: an empty question would match nothing, and a follow-up rewrite would
answer the conversation's previous question again, as if the customer had repeated it. The assistant reads text
only, so it says so, in the customer's language (their browser's, there being no words to tell it from), and offers
a person, who sees the image in the console.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from django.utils.translation import gettext

from knowledge.answering.events import Event, FinalEvent, SourcesEvent, TokenEvent
from knowledge.answering.generators.extractive import pace_words
from knowledge.answering.rendering import render_answer_html
from knowledge.language import in_language


def wordless_text() -> str:
    """What the assistant says to an image without words, in the active language."""
    return gettext(
        "I can only read text, so I cannot see what your image shows. Please tell me in a few words what you need, "
        "or talk to a person."
    )


async def answer(language: str, pace: float, generator_name: str) -> AsyncIterator[Event]:
    """The pipeline's events for a message with no words: no sources, the sentence above, a person offered."""
    started = time.perf_counter()
    text = in_language(language, wordless_text)
    yield SourcesEvent([])
    first_token_ms = None
    async for piece in pace_words(text, pace):
        first_token_ms = first_token_ms or round((time.perf_counter() - started) * 1000, 1)
        yield TokenEvent(piece)
    total_ms = round((time.perf_counter() - started) * 1000, 1)
    timings = {"first_token_ms": first_token_ms or 0.0, "total_ms": total_ms}
    trace = {"query": "", "mode": "no_words", "searches": [], "passages": [], "timings": timings,
             "generator": generator_name, "language": language, "tools": []}  # fmt: skip
    yield FinalEvent(text=text, html=render_answer_html(text, 0), citations=[], state="complete", timings=timings,
                     trace=trace, offer_handoff=True)  # fmt: skip
