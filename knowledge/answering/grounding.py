"""The grounding guard for generated (LLM) answers: citations must exist, and an uncited answer is noticed.

Two checks, both needed because a language model, small ones especially, cites passages that were never listed
("[7]" of three) or cites nothing at all:

* **Citations point at listed sources.** ``CitationFilter`` removes ``[n]`` (or the bad numbers inside
  ``[1, 9]``) for any n outside 1..len(sources). The protocol says ``final.text`` is exactly the concatenation
  of the streamed tokens, so this happens on the token stream: text from a ``[`` is held back until the bracket
  closes (or is clearly not a citation, or is too long to be one), then let through, trimmed or dropped.
* **An answer without any citation although sources exist** is marked in the trace
  (``trace["grounding"]["cited"] = False``) and, with ``LLM_UNCITED_ANSWER=replace``, replaced by the
  extractive answer over the same passages. The LLM's tokens were already streamed by then, so the final event
  says so (``replaced=True``) and carries the replacement; the stored message holds the replacement
  (docs/protocol.md, ``final.replaced``).

Generators whose answers quote the passages by construction (``Generator.grounded``: the extractive one) are not
guarded.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from knowledge.answering.generators import Generator
from knowledge.answering.generators.extractive import ExtractiveGenerator
from knowledge.answering.rendering import CITATION, cited_sources
from knowledge.inference import answer_work

logger = logging.getLogger(__name__)

UNCITED_ACTIONS = ("mark", "replace")
#: Longest text held back after a "[" before it is let through as not-a-citation ("[12, 13, 14]" is 12).
MAX_HOLD = 32

# A prefix that can still become a citation (rendering.CITATION): "[", "[1", "[12", "[1,", "[1, 2 ".
_VIABLE = re.compile(r"\[(?:\d{1,3}(?:\s*,\s*\d{1,3})*\s*(?:,\s*)?)?")


class CitationFilter:
    """A streaming filter over answer text that drops citations of sources that do not exist.

    ``feed(piece)`` returns the text that is safe to emit now; ``flush()`` the rest at the end of the stream
    (an unclosed "[" is plain text). Whitespace before a dropped citation goes with it ("done [9]." -> "done."),
    so spaces are held back until the next visible character. A dropped "[n]" directly followed by "(" was a
    Markdown link label and is kept.
    """

    def __init__(self, source_count: int, *, max_hold: int = MAX_HOLD) -> None:
        self.source_count = source_count
        self.max_hold = max_hold
        self.removed: list[str] = []  # every citation (or part of one) taken out, for the trace
        self._space = ""  # whitespace not emitted yet
        self._held = ""  # from a "[" that may be a citation
        self._dropped = ""  # a citation to drop, unless the next character is "(" (a Markdown link)

    def feed(self, piece: str) -> str:
        out: list[str] = []
        for char in piece:
            self._step(char, out)
        return "".join(out)

    def flush(self) -> str:
        out: list[str] = []
        if self._dropped:
            self._commit_drop(None)
        if self._held:
            out.append(self._space + self._held)
            self._space = self._held = ""
        out.append(self._space)
        self._space = ""
        return "".join(out)

    def _step(self, char: str, out: list[str]) -> None:
        if self._dropped:
            if char == "(":  # "[9](https://…)": a link whose label is a number, not a citation
                out.append(self._space + self._dropped)
                self._space = self._dropped = ""
            else:
                self._commit_drop(char)
        if self._held:
            candidate = self._held + char
            if CITATION.fullmatch(candidate):  # anything rendering would link, the filter checks
                self._held = ""
                self._decide(candidate, out)
                return
            if _VIABLE.fullmatch(candidate) and len(candidate) <= self.max_hold:
                self._held = candidate
                return
            out.append(self._space + self._held)  # not a citation after all: let it through as it was
            self._space = self._held = ""
        if char == "[":
            self._held = char
        elif char.isspace():
            self._space += char
        else:
            out.append(self._space + char)
            self._space = ""

    def _decide(self, citation: str, out: list[str]) -> None:
        numbers = [int(n) for n in re.findall(r"\d+", citation)]
        valid = [n for n in numbers if 1 <= n <= self.source_count]
        if len(valid) == len(numbers):
            out.append(self._space + citation)
            self._space = ""
        elif valid:
            self.removed.append(citation)
            out.append(self._space + "[" + ", ".join(str(n) for n in valid) + "]")
            self._space = ""
        else:
            self._dropped = citation

    def _commit_drop(self, following: str | None) -> None:
        """Forget the dropped citation; the space before it goes too if punctuation, a space or the end follows
        ("fast [9]." -> "fast.", "fast [9] and" -> "fast and", but "fast [9][2]" -> "fast [2]"). A paragraph
        break before it always stays."""
        self.removed.append(self._dropped)
        self._dropped = ""
        if following is None or following.isspace() or following in ".,;:!?)":
            self._space = self._space.rstrip(" \t")


@dataclass
class Outcome:
    """What the guard decided after the stream: the answer text, whether it was replaced, the trace entry."""

    text: str
    replaced: bool = False
    report: dict[str, Any] | None = None


@dataclass
class Guard:
    """The grounding guard of one answer: ``wrap()`` the generator's stream, then ``check()`` the result."""

    generator: Generator
    passages: Sequence[Any]
    filter: CitationFilter = field(init=False)

    def __post_init__(self) -> None:
        self.filter = CitationFilter(len(self.passages))

    @property
    def active(self) -> bool:
        """Whether this generator's answers are checked (``Generator.grounded``: not those cited by construction)."""
        return not self.generator.grounded

    def wrap(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """The stream with bad citations removed (the stream itself when the generator needs no guard)."""
        return self._filtered(stream) if self.active else stream

    async def _filtered(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        try:
            async for piece in stream:
                if not isinstance(piece, str):  # a ToolRequest: the pipeline's, not text to check
                    yield piece
                    continue
                text = self.filter.feed(piece)
                if text:
                    yield text
        except Exception:
            rest = self.filter.flush()  # the backend failed: the partial text keeps what was held back
            if rest:
                yield rest
            raise
        finally:
            if hasattr(stream, "aclose"):
                await stream.aclose()  # closes the HTTP response on cancel too
        rest = self.filter.flush()
        if rest:
            yield rest

    async def check(self, text: str, question: str) -> Outcome:
        """Mark an answer that cites nothing although sources exist; replace it if ``LLM_UNCITED_ANSWER=replace``."""
        if not self.active:
            return Outcome(text)
        citations = cited_sources(text, len(self.passages))
        report: dict[str, Any] = {
            "sources": len(self.passages),
            "cited": bool(citations) or not self.passages,
            "citations": citations,
            "removed": list(self.filter.removed),
            "action": "none",
            "replaced": False,
        }
        if report["cited"]:
            return Outcome(text, report=report)
        mode = uncited_action()
        report["action"] = "marked"
        if mode != "replace":
            return Outcome(text, report=report)
        try:
            replacement = await extractive_answer(question, self.passages)
        except Exception:  # the embedder failed: keep the marked LLM answer rather than fail the message
            logger.exception("could not build the extractive replacement of an uncited answer")
            report["replace_failed"] = True
            return Outcome(text, report=report)
        report.update(action="replaced", replaced=True, generated_text=text)
        logger.info("uncited %s answer replaced by the extractive one", self.generator.name)
        return Outcome(replacement, replaced=True, report=report)


def uncited_action() -> str:
    """``settings.LLM_UNCITED_ANSWER``: "mark" (default) or "replace"; anything else is a configuration error."""
    mode = (getattr(settings, "LLM_UNCITED_ANSWER", "mark") or "mark").strip().lower()
    if mode not in UNCITED_ACTIONS:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"LLM_UNCITED_ANSWER={mode!r}; use one of {', '.join(UNCITED_ACTIONS)}.")
    return mode


async def extractive_answer(question: str, passages: Sequence[Any]) -> str:
    """The extractive generator's answer over the same passages, at once (no streaming pace), in an answer thread:
    it reads the stored sentence vectors, a database call."""
    return await answer_work(ExtractiveGenerator().compose, question, passages)
