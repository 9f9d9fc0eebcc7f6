"""The tool step of an answer: looking something up in the company's own systems for the customer who asks.

Two ways in, one way out:

- The offline answerer (a generator that ``composes``) has a tool chosen for it by ``knowledge.tools.choosing``
  (``plan``): the tool's examples and the values found in the message. A message that also asks something the
  articles answer ("where is my order 10432, and can I still return it?") is cut in two: the tool's part and the
  rest, which the knowledge base answers after the tool's result (``answer``), its citations numbered after it.
- An LLM asks for a tool by function calling: the pipeline hands each ``ToolRequest`` to ``serve``.

Either way the tool runs through ``knowledge.tools.running`` (who may ask, limits, the signed call), the customer
sees "Checking …" then "Found it" (``StatusEvent``, stage ``tool``) and a card of the visible fields
(``ToolResultEvent``), and the result is a numbered source the answer cites like a passage. A call that could not be
made or failed gives a plain "could not check" and offers a person; nothing the API said beyond the visible fields
reaches the customer, the model or the trace.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext, gettext_noop

from knowledge.answering.events import Event, FinalEvent, SourcesEvent, StatusEvent, TokenEvent, ToolResultEvent
from knowledge.answering.generators import ToolOffer, ToolRequest
from knowledge.answering.generators.extractive import pace_words
from knowledge.answering.rendering import CITATION, cited_sources, render_answer_html
from knowledge.answering.subquestions import split as split_question
from knowledge.inference import aquery_vector
from knowledge.language import for_language, in_language
from knowledge.models import Tool
from knowledge.tools import running
from knowledge.tools.choosing import Choice, choose, find_arguments
from knowledge.tools.running import Asker, ToolRun

#: Status lines and answers of the tool step (marked here, translated in the customer's language).
CHECKING = gettext_noop("Checking %(tool)s: %(values)s…")
CHECKING_NOTHING_GIVEN = gettext_noop("Checking %(tool)s…")
FOUND = gettext_noop("Found it")
NOT_CHECKED = gettext_noop("Could not check right now")
COULD_NOT_CHECK = gettext_noop("I could not check this right now. Would you like to talk to a person?")
SIGN_IN_FIRST = gettext_noop("Please sign in so that I can look this up for you, or talk to a person.")
TOO_MANY = gettext_noop("I have looked up too much in a short time. Please try again in a minute, or talk to a person.")
ASK_FOR = gettext_noop("What is the %(name)s?")
#: Where a message may be cut in two besides ``subquestions.split``'s joints: a comma or "and" between a tool's
#: part and a question the articles answer.
_JOINT = re.compile(r"\s*[,;，；、]\s*(?:and\s+|und\s+|et\s+|y\s+)?|\s+(?:and|und|et|y|e)\s+|还有|另外|并且|而且")
_PLACEHOLDER = re.compile(r"\{([\w.]+)\}")
MAX_JOINTS = 3


@dataclass
class Plan:
    """The offline answerer's tool step: the tool with its arguments (``choice``), and the part of the message the
    knowledge base answers after it (``rest``; None: the message is the tool's alone)."""

    choice: Choice
    rest: str | None = None
    trace: dict[str, Any] = field(default_factory=dict)


def _translated(language: str, text: str, **values: Any) -> str:
    """``text`` translated into ``language``, its ``%(name)s`` filled from ``values``."""
    return in_language(language, _filled, text, values)


def _filled(text: str, values: dict[str, Any]) -> str:
    return gettext(text) % values if values else gettext(text)


def _last_question(turns: Sequence[dict]) -> str | None:
    for turn in reversed(turns):
        if turn.get("role") == "user":
            return turn.get("text") or None
    return None


async def plan(question: str, turns: Sequence[dict], tools: Sequence[Tool], requester: str | None) -> Plan | None:
    """The tool the message needs and its arguments (``knowledge.tools.choosing``), or None: the articles answer.
    A message that only supplies a value ("10432") goes to the tool its previous question needed."""
    vector = await aquery_vector(question, requester)
    previous = _last_question(turns)
    previous_vector = None
    if previous and any(find_arguments(tool, question)[0] for tool in tools):
        previous_vector = await aquery_vector(previous, requester)
    choice = choose(question, vector, tools, previous=previous, previous_vector=previous_vector)
    if choice is None:
        return None
    trace = {"tool": choice.tool.name, "similarity": round(choice.similarity, 3), "arguments": choice.arguments,
             "missing": [p["name"] for p in choice.missing]}  # fmt: skip
    rest = await _rest(question, choice, tools, requester)
    if rest is not None:
        trace["rest"] = rest
    return Plan(choice, rest, trace)


def _cuts(question: str) -> list[tuple[str, str]]:
    """Ways to cut the message into the tool's part and another question: ``subquestions.split``'s joints, then
    a comma or an "and" (the first few)."""
    cuts: list[tuple[str, str]] = []
    parts = split_question(question)
    if len(parts) == 2:
        first, second = parts
        cuts.append((first, second[len(first):] if second.startswith(first) else second))
    for match in list(_JOINT.finditer(question))[:MAX_JOINTS]:
        cuts.append((question[: match.start()], question[match.end():]))
    return [(left.strip(), right.strip(" ?？")) for left, right in cuts if _words(left) >= 2 and _words(right) >= 3]


def _words(text: str) -> int:
    """Words, counting each Chinese character as one."""
    return len(re.findall(r"[^\W\d_]+|\d+", text)) + len(re.findall(r"[\u4e00-\u9fff]", text))


async def _rest(question: str, choice: Choice, tools: Sequence[Tool], requester: str | None) -> str | None:
    """The part of the message that is not for the tool, when one cut leaves the tool's part choosing the same tool
    and the other part choosing none."""
    for left, right in _cuts(question):
        left_choice = choose(left, await aquery_vector(left, requester), tools)
        if left_choice is None or left_choice.tool.pk != choice.tool.pk:
            continue
        if choose(right, await aquery_vector(right, requester), tools) is None:
            return right
    return None


def _value(value: Any) -> str:
    """A field value as answer text: shown as the card shows it, and unable to pose as a citation ("[2]")."""
    return CITATION.sub(lambda m: f"({m.group(1)})", running.shown(value))


def ask_text(choice: Choice, language: str) -> str:
    """The question for the first missing parameter, in the customer's language (the tool's own ``ask`` texts;
    else a plain "What is the order number?")."""
    parameter = choice.missing[0]
    asks = parameter.get("ask") or {}
    asked = for_language(asks, language) if isinstance(asks, dict) else None
    if asked:
        return str(asked)
    name = (parameter.get("description") or parameter["name"].replace("_", " ")).strip().rstrip(".")
    return _translated(language, ASK_FOR, name=name)


def result_text(run: ToolRun, language: str, n: int) -> str:
    """The answer from an ``ok`` result: the tool's template in the customer's language (else English, else any),
    its ``{field}`` placeholders filled from the visible fields, citing the result as source ``n``; without a
    template, the fields listed."""
    templates = run.tool.answer_templates if isinstance(run.tool.answer_templates, dict) else {}
    template = for_language(templates, language)
    values = {**{k: _value(v) for k, v in run.arguments.items()}, **{k: _value(v) for k, v in run.fields.items()}}
    if template:
        text = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), "—"), str(template)).strip()
    else:
        text = "; ".join(f"{name}: {_value(value)}" for name, value in run.fields.items())
    return f"{text} [{n}]"


def failure_text(run: ToolRun, language: str) -> str:
    """What the customer is told when the tool was not called or failed: never why in the API's words."""
    if run.outcome == running.SIGN_IN_REQUIRED:
        return _translated(language, SIGN_IN_FIRST)
    if run.outcome == running.RATE_LIMITED:
        return _translated(language, TOO_MANY)
    return _translated(language, COULD_NOT_CHECK)


def checking_status(tool: Tool, arguments: dict[str, Any], language: str) -> StatusEvent:
    values = ", ".join(str(v) for v in arguments.values())
    if values:
        return StatusEvent("tool", _translated(language, CHECKING, tool=tool.name, values=values))
    return StatusEvent("tool", _translated(language, CHECKING_NOTHING_GIVEN, tool=tool.name))


async def call(tool: Tool, arguments: dict[str, Any], asker: Asker, language: str, n: int) -> AsyncIterator[Event | ToolRun]:
    """Run the tool with the progress the customer sees: "Checking …", the run, "Found it" (or "Could not check
    right now") and the card; the last item is the ``ToolRun``."""
    yield checking_status(tool, arguments, language)
    run = await running.run(tool, arguments, asker)
    done = _translated(language, FOUND if run.ok else NOT_CHECKED)
    yield StatusEvent("tool", done)
    yield ToolResultEvent(run.card(n if run.ok else None, done))
    yield run


def _shifted(text: str, by: int) -> str:
    """Citations [n] of the knowledge base's answer, renumbered after the tool's source(s)."""
    return CITATION.sub(lambda m: "[" + ", ".join(str(int(x) + by) for x in m.group(1).split(",")) + "]", text)


async def answer(
    plan: Plan, asker: Asker, language: str, *, question: str, pace: float, generator_name: str,
    knowledge: Callable[[str], AsyncIterator[Event]],
) -> AsyncIterator[Event]:  # fmt: skip
    """The offline answer with a tool: ask for a missing value, or run the tool and answer from its result; then,
    for a message that asks more, the knowledge base's answer to the rest (``knowledge(rest)``, the pipeline's own
    answer), with its sources numbered after the tool's. A rest the articles do not answer is left out."""
    started = time.perf_counter()
    choice = plan.choice
    trace: dict[str, Any] = {"query": question, "mode": "tool", "tool_choice": plan.trace, "tools": [],
                             "searches": [], "passages": [], "generator": generator_name, "language": language}  # fmt: skip
    if choice.missing:
        text, offer_handoff, sources = ask_text(choice, language), False, []
    else:
        run: ToolRun | None = None
        async for item in call(choice.tool, choice.arguments, asker, language, 1):
            if isinstance(item, ToolRun):
                run = item
            else:
                yield item
        assert run is not None
        trace["tools"].append(run.traced())
        if run.ok:
            text, offer_handoff, sources = result_text(run, language, 1), False, [run.source(1)]
        else:
            text, offer_handoff, sources = failure_text(run, language), True, []
    kb_final: FinalEvent | None = None
    count = len(sources)
    if plan.rest and not offer_handoff:
        async for event in _rest_answer(plan.rest, knowledge, sources, text, pace):
            if isinstance(event, FinalEvent):
                kb_final = event
                continue
            if isinstance(event, SourcesEvent):
                count = len(event.items)
            yield event
    first_token_ms = 0.0
    if kb_final is None:
        yield SourcesEvent(sources)
        async for word in pace_words(text, pace):
            first_token_ms = first_token_ms or round((time.perf_counter() - started) * 1000, 1)
            yield TokenEvent(word)
    else:
        text = f"{text}\n\n{_shifted(kb_final.text, len(sources))}"
        trace = {**kb_final.trace, "mode": f"tool+{kb_final.trace.get('mode', '')}", "tool_choice": plan.trace,
                 "tools": trace["tools"]}  # fmt: skip
    total_ms = round((time.perf_counter() - started) * 1000, 1)
    timings = dict(kb_final.timings) if kb_final else {"total_ms": total_ms, "first_token_ms": first_token_ms}
    timings["tool_ms"] = round(sum(t["latency_ms"] for t in trace["tools"]), 1)
    trace["timings"] = timings
    trace["offer_handoff"] = offer_handoff
    yield FinalEvent(text=text, html=render_answer_html(text, count), citations=cited_sources(text, count),
                     state="complete", timings=timings, trace=trace, offer_handoff=offer_handoff)  # fmt: skip


async def _rest_answer(
    rest: str, knowledge: Callable[[str], AsyncIterator[Event]], sources: list[dict], text: str, pace: float
) -> AsyncIterator[Event]:
    """The knowledge base's answer to the rest of the message, merged after the tool's: its status lines as they
    come, its sources after the tool's (renumbered), the tool's answer, then its own words (citations renumbered);
    its final last. When the articles do not answer the rest (no sources), the tool's answer alone."""
    stream = knowledge(rest)
    by = len(sources)
    try:
        async for event in stream:
            if isinstance(event, StatusEvent):
                yield event
            elif isinstance(event, SourcesEvent):
                if not event.items:
                    return  # nothing answers the rest: the caller sends the tool's answer alone
                yield SourcesEvent(sources + [{**item, "n": item["n"] + by} for item in event.items])
                async for word in pace_words(f"{text}\n\n", pace):
                    yield TokenEvent(word)
            elif isinstance(event, TokenEvent):
                yield TokenEvent(_shifted(event.text, by))
            elif isinstance(event, FinalEvent):
                yield event
    finally:
        await stream.aclose()


def offers(tools: Sequence[Tool]) -> dict[str, Tool]:
    """The tools as an LLM is offered them, by the name it calls them with (``ToolOffer.name``)."""
    named: dict[str, Tool] = {}
    for tool in tools:
        name = re.sub(r"[^A-Za-z0-9_-]+", "_", tool.name).strip("_")[:60] or f"tool_{tool.pk}"
        while name in named:
            name = f"{name}_{tool.pk}"
        named[name] = tool
    return named


def offer(name: str, tool: Tool) -> ToolOffer:
    """One tool for function calling: its description and examples, and its parameters as a JSON Schema (the
    patterns included, so the model sees what a value looks like; they are checked again before any call)."""
    examples = [line.strip() for line in tool.examples.splitlines() if line.strip()][:6]
    description = tool.description.strip()
    if examples:
        description += "\nExample questions: " + " | ".join(examples)
    properties = {
        p["name"]: {"type": "integer" if p.get("type") == "integer" else "string",
                    "description": p.get("description") or p["name"].replace("_", " "),
                    **({"pattern": f"^(?:{p['pattern']})$"} if p.get("type") != "integer" else {})}
        for p in tool.parameters
    }  # fmt: skip
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return ToolOffer(name=name, description=description[:1000], parameters=schema)


async def serve(
    request: ToolRequest, named: dict[str, Tool], asker: Asker, language: str, n: int
) -> AsyncIterator[Event | ToolRun]:
    """Run the tool an LLM asked for (``request``), with the customer's progress and card, and set
    ``request.result`` for the model: the visible fields and the source number to cite (``cite_as``), or that it
    could not be checked. A value that is not the parameter's is refused before any request (a run with outcome
    ``invalid_argument``, the last item); a tool that was not offered is not run at all (no item: the model is told
    there is no such tool)."""
    tool = named.get(request.name)
    if tool is None:
        request.result = {"ok": False, "error": "There is no such tool."}
        return
    arguments = {k: v for k, v in request.arguments.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}
    run: ToolRun | None = None
    async for item in call(tool, arguments, asker, language, n):
        if isinstance(item, ToolRun):
            run = item
        yield item
    assert run is not None
    if run.ok:
        request.result = {"ok": True, "cite_as": n, "fields": run.fields}
    elif run.outcome == "invalid_argument":
        request.result = {"ok": False, "error": "A value is missing or is not valid: ask the customer for it."}
    elif run.outcome == running.SIGN_IN_REQUIRED:
        request.result = {"ok": False, "error": "The customer is not signed in: ask them to sign in, or offer a "
                          "person."}  # fmt: skip
    else:
        request.result = {"ok": False, "error": "It could not be checked right now: say so plainly and offer a "
                          "person."}  # fmt: skip
    json.dumps(request.result)  # the model gets JSON: fail here, not in the generator, if a field were not
