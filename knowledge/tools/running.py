"""Running a tool for the customer who is asking: the checks about *who* (``calling`` checks the request itself).

A tool runs only for an ``Asker`` the server vouches for, never for anyone the question names:

1. the tool is on, and usable where the conversation is (``usable_tools``);
2. a tool that ``needs_signed_in`` is never called for an anonymous visitor (``sign_in_required``);
3. the asker may still act, re-checked now in a transaction of its own (``Asker.identity``; ``revoked``): a user
   deactivated or signed out everywhere after asking gets no call made on their behalf;
4. the call is within the tool's and the customer's rate limits (``Asker.within_limits``; ``rate_limited``);
5. then ``calling.call``, with the identity signed.

Each run is counted in ``/metrics`` by tool and outcome, with its latency.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver

from chatsite import metrics
from knowledge.inference import answer_work
from knowledge.models import KnowledgeBase, Tool
from knowledge.tools import calling
from knowledge.tools.signing import Identity

#: Outcomes of a run that ended before any request: ``calling.OUTCOMES`` are the rest.
SIGN_IN_REQUIRED = "sign_in_required"
REVOKED = "revoked"
RATE_LIMITED = "rate_limited"
OUTCOMES = (*calling.OUTCOMES, SIGN_IN_REQUIRED, REVOKED, RATE_LIMITED)


class Asker(Protocol):
    """The customer an answer is for, as the server knows them (the conversation's owner): everything a tool run
    relies on. ``conversations.tool_askers`` implements it."""

    @property
    def signed_in(self) -> bool:
        """A signed-in user (False: an anonymous visitor)."""
        ...

    async def identity(self) -> Identity | None:
        """Who is asking, re-checked now in a transaction of its own: None when they may act no more."""
        ...

    async def within_limits(self, tool: Tool) -> bool:
        """Count one call of ``tool`` for this customer; False when it is past the tool's or the customer's limit
        (``TOOLS_CALLS_PER_MINUTE``, ``TOOLS_CALLS_PER_CUSTOMER_PER_MINUTE``, across every node)."""
        ...

    async def allowed(self, tools: list[Tool]) -> list[Tool]:
        """Those of ``tools`` this customer may use where they chat: all of them, or on a widget site only those the
        site names (``conversations.models.Site.tools``)."""
        ...


@dataclass(frozen=True)
class ToolRun:
    """One run of a tool: what was asked (``arguments``, as the question gave them), how it ended and, when it is
    ``ok``, the visible fields of the answer; the redacted request and the HTTP status for the trace."""

    tool: Tool
    arguments: Mapping[str, Any]
    outcome: str
    fields: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    latency_ms: float = 0.0
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def field_items(self) -> list[dict[str, Any]]:
        """The visible fields in the tool's order, as the card lists them."""
        return [{"name": name, "value": shown(value)} for name, value in self.fields.items()]

    def card(self, n: int | None, text: str) -> dict[str, Any]:
        """The ``tool_result`` frame's ``tool``: ``n`` is the source number the answer cites it by (None when the
        call failed), ``text`` a short line in the customer's language ("Found it")."""
        return {"n": n, "name": self.tool.name, "outcome": self.outcome, "ok": self.ok, "text": text,
                "fields": self.field_items()}  # fmt: skip

    def source(self, n: int) -> dict[str, Any]:
        """The result as a numbered source beside the articles' passages (``pipeline.source_items``)."""
        snippet = " · ".join(f"{item['name']}: {item['value']}" for item in self.field_items())
        return {"n": n, "kind": "tool", "document": None, "title": self.tool.name, "heading": "", "page": None,
                "snippet": snippet, "score": None, "url": None}  # fmt: skip

    def traced(self) -> dict[str, Any]:
        """The run as the console's trace shows it (the request's secrets are already redacted)."""
        return {"name": self.tool.name, "arguments": dict(self.arguments), "outcome": self.outcome, "ok": self.ok,
                "status": self.status, "latency_ms": round(self.latency_ms, 1), "fields": self.fields,
                "request": self.request}  # fmt: skip


def shown(value: Any) -> str:
    """A field's value as text: a list or an object from the API is shown compactly, never as Python's repr."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(shown(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {shown(item)}" for key, item in value.items())
    return "" if value is None else str(value)


#: A knowledge base's tools as this process last read them (``TOOLS_CACHE_SECONDS``), and when that ends.
_usable: dict[int | None, tuple[float, list[Tool]]] = {}


def _usable_tools(kb_id: int | None) -> list[Tool]:
    tools = Tool.objects.filter(enabled=True)
    if kb_id is not None:
        tools = tools.filter(knowledge_bases=kb_id)
    return list(tools.distinct())


async def usable_tools(kb: KnowledgeBase | None) -> list[Tool]:
    """The tools switched on for ``kb`` (``kb=None``, every knowledge base: every tool that is on), as this process
    last read them (``TOOLS_CACHE_SECONDS``)."""
    key = kb.pk if kb is not None else None
    cached = _usable.get(key)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    tools = await answer_work(_usable_tools, key)
    _usable[key] = (time.monotonic() + settings.TOOLS_CACHE_SECONDS, tools)
    return tools


@receiver(post_save, sender=Tool)
@receiver(post_delete, sender=Tool)
@receiver(m2m_changed, sender=Tool.knowledge_bases.through)
def forget_usable_tools(**kwargs: Any) -> None:
    """A tool changed in this process: the next answer reads the tools again."""
    _usable.clear()


async def run(tool: Tool, arguments: Mapping[str, Any], asker: Asker) -> ToolRun:
    """Run ``tool`` with ``arguments`` for ``asker``, through every check (module docstring); never raises for a
    refusal or a failure of the company's API: the outcome names it."""
    result = await _run(tool, arguments, asker)
    metrics.TOOL_CALLS.labels(tool=tool.name, outcome=result.outcome).inc()
    if result.status is not None or result.outcome in ("ok", "timeout", "unreachable", "malformed", "too_large"):
        metrics.TOOL_LATENCY.labels(tool=tool.name).observe(result.latency_ms / 1000)
    return result


async def _run(tool: Tool, arguments: Mapping[str, Any], asker: Asker) -> ToolRun:
    if tool.needs_signed_in and not asker.signed_in:
        return ToolRun(tool, arguments, SIGN_IN_REQUIRED)
    identity = await asker.identity()
    if identity is None:
        return ToolRun(tool, arguments, REVOKED)
    if not await asker.within_limits(tool):
        return ToolRun(tool, arguments, RATE_LIMITED)
    result = await calling.call(tool.spec(), arguments, identity)
    return ToolRun(tool, arguments, result.outcome, result.fields, result.status, result.latency_ms, result.request)
