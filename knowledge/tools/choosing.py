"""Which tool a question needs, and with which arguments, without a language model (the offline answerer).

A tool is chosen when the question is close in meaning to one of its example questions (staff write them, in
every language customers ask in) and no other tool's examples are closer. Its arguments are found in the question
by their own patterns ("10432" for ``\\d{5}``); a missing one is asked for, and taken from the customer's next
message: "where is my order?" → "What is your order number?" → "10432" is the same tool, with the number.

The examples' vectors are computed once per tool version and embedding model, in this process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings

from knowledge.embeddings import BACKENDS, get_embedder
from knowledge.models import Tool

#: How close, above the embedding model's answer threshold, a question must come to one of a tool's examples. With a
#: value for the tool's parameters in it ("10432"), a question is about one order or refund, so being as close to an
#: example as a good passage is to a question is enough. Without one, it must be nearly a paraphrase of an example:
#: measured with multilingual-e5-small on 268 questions of four companies' help centres, questions about policy
#: ("how long do refunds to a credit card take?") came up to 0.072 over the threshold to "has my refund been paid?",
#: while paraphrases of the examples ("when will I get my money back?") came 0.12 over it.
WITH_VALUE_MARGIN = 0.0
WITHOUT_VALUE_MARGIN = 0.085

_vectors: dict[tuple[int, str, str], np.ndarray] = {}
#: A value stands apart from letters, digits and hyphens around it ("10432", not "104321" or "A-10432"); Chinese and
#: Japanese characters do not join it ("订单10432什么时候到").
_JOINS = r"(?![\u3000-\u9fff\uff00-\uffef])[\w-]"
_APART, _APART_AFTER = rf"(?<!{_JOINS})", rf"(?!{_JOINS})"


@dataclass
class Choice:
    """A tool for the question: the arguments found, the parameters still missing (to ask for), how close."""

    tool: Tool
    similarity: float
    arguments: dict[str, str] = field(default_factory=dict)
    missing: list[dict[str, Any]] = field(default_factory=list)


def min_similarity(with_value: bool) -> float:
    """``TOOLS_MIN_SIMILARITY`` (for a question naming a value; ``WITHOUT_VALUE_MARGIN`` more without one), else
    the embedding model's answer threshold plus the margin."""
    base = settings.TOOLS_MIN_SIMILARITY
    if base is None:
        backend = BACKENDS.get(settings.EMBEDDING_BACKEND)
        base = (backend.min_similarity if backend else 0.5) + WITH_VALUE_MARGIN
    return base + (0.0 if with_value else WITHOUT_VALUE_MARGIN - WITH_VALUE_MARGIN)


def examples(tool: Tool) -> list[str]:
    return [line.strip() for line in tool.examples.splitlines() if line.strip()]


def example_vectors(tool: Tool) -> np.ndarray:
    """The tool's example questions as unit vectors (rows), cached per tool version and model."""
    embedder = get_embedder()
    key = (tool.pk, tool.updated_at.isoformat() if tool.updated_at else "", embedder.name)
    if key not in _vectors:
        texts = examples(tool)
        matrix = np.asarray(embedder.embed_queries(texts), dtype=np.float32) if texts else np.zeros((0, 1))
        norms = np.linalg.norm(matrix, axis=1, keepdims=True) if len(matrix) else 1.0
        _vectors[key] = matrix / np.maximum(norms, 1e-9)
    return _vectors[key]


def find_arguments(tool: Tool, text: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Each parameter's value as written in ``text`` (its pattern, standing alone: "10432", not "104321"), and the
    parameters not found."""
    found: dict[str, str] = {}
    missing: list[dict[str, Any]] = []
    for parameter in tool.parameters:
        match = re.search(rf"{_APART}(?:{parameter['pattern']}){_APART_AFTER}", text)
        if match:
            found[parameter["name"]] = match.group(0)
        else:
            missing.append(parameter)
    return found, missing


def choose(question: str, vector: Sequence[float], tools: Sequence[Tool], *, previous: str | None = None,
           previous_vector: Sequence[float] | None = None) -> Choice | None:  # fmt: skip
    """The tool ``question`` needs, or None. When the question alone needs none but supplies a value ("10432")
    for a tool the ``previous`` question needed, that tool with the value: the answer to "What is your order
    number?", or "and 10433?" after a question about order 10432."""
    chosen = _closest(question, vector, tools)
    if chosen is not None or previous is None or previous_vector is None:
        return chosen
    supplied = {tool.pk: find_arguments(tool, question)[0] for tool in tools}
    if not any(supplied.values()):
        return None
    before = _closest(previous, previous_vector, [tool for tool in tools if supplied[tool.pk]])
    if before is None:
        return None
    before.arguments = {**before.arguments, **supplied[before.tool.pk]}
    before.missing = [p for p in before.tool.parameters if p["name"] not in before.arguments]
    return before


def _closest(question: str, vector: Sequence[float], tools: Sequence[Tool]) -> Choice | None:
    """The closest tool whose closest example is close enough (``min_similarity``: less close when the question
    holds a value for one of the tool's parameters), with the arguments found."""
    query = np.asarray(vector, dtype=np.float32)
    query = query / max(float(np.linalg.norm(query)), 1e-9)
    best: Choice | None = None
    for tool in tools:
        matrix = example_vectors(tool)
        if not len(matrix):
            continue
        similarity = float((matrix @ query).max())
        arguments, missing = find_arguments(tool, question)
        if similarity < min_similarity(bool(arguments)):
            continue
        if best is None or similarity > best.similarity:
            best = Choice(tool, similarity, arguments, missing)
    return best
