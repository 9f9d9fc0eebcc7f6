"""The console list's search and filters: what ``/console/?q=…&status=…`` shows, snapshot and live.

Why on the server: the list is rendered by the server and its rows come live from the ``console`` group, so the
same rules must decide both. ``ListQuery`` is read from the page's query string (a reload keeps it) and from the
console socket's (static/console/console.js opens ``/ws/console/`` with the page's query string); the snapshot
applies ``narrow`` to ``inbox``'s rows query itself — the same fixed number of queries as the whole list — and a
live row is matched against the filters from its own fields (``matches_item``, no query) and, only when there is a
search text, by one primary-key lookup with the search condition (``amatches_text``).

What the search text matches (case-insensitive):

* the conversation's id, whole or a prefix of at least 4 hex digits (a range on the primary key: its index);
* or every word (at most ``MAX_WORDS``), each somewhere: in one of the customer's username, first or last name,
  e-mail, their id on the host site (``SiteCustomer.external_id``), the address they left, the conversation's
  title, its site's name, the page URL — or inside any message of the conversation ("parcel 1042" finds "Where is
  my parcel? Order 1042"). "visitor" also matches every anonymous visitor, "visitor-…" a widget visitor's key.

Cost: the customer fields are columns of the rows' query and its joins; a message word is an ``Exists`` on
messages by conversation (the ``msg_conv_created`` index narrows it to the conversation's messages, ``ILIKE``
reads them). A search that matches few conversations reads the messages of every conversation it passes over; a
trigram index on ``conversations_message.text`` (``pg_trgm``) would make that independent of their number — see
docs/architecture.md "Search and filters".
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.db.models import Exists, OuterRef, Q, QuerySet

from conversations.models import Conversation, Message

MAX_TEXT_CHARS = 200
MAX_WORDS = 6  # words past these are ignored: each costs an Exists on messages
MIN_ID_PREFIX = 4
STATUSES = {
    "waiting": Conversation.Status.WAITING_FOR_AGENT,
    "active": Conversation.Status.AGENT,
    "bot": Conversation.Status.BOT,
    "resolved": Conversation.Status.RESOLVED,
}
ASSIGNED = ("mine", "unassigned")
OPEN = "open"  # the outcome filter's name for "no outcome yet" (``Conversation.outcome`` "")
OUTCOMES = {OPEN: "", **{value: value for value in Conversation.Outcome.values}}
CUSTOMER_FIELDS = (
    "owner__username", "owner__first_name", "owner__last_name", "owner__email", "owner__site_customer__external_id",
    "contact_email", "title", "site__name", "page_url",
)  # fmt: skip
HEX_ID = re.compile(rf"^[0-9a-f]{{{MIN_ID_PREFIX},32}}$")


def _positive(value: str) -> int | None:
    return int(value) if value.isdigit() and 0 < int(value) < 2**31 else None


@dataclass(frozen=True)
class ListQuery:
    """One console's search text and filters; ``agent_id`` is whose console it is ("mine")."""

    agent_id: int | None = None
    text: str = ""
    status: str = ""  # a key of STATUSES, or "" for any
    assigned: str = ""  # "mine", "unassigned", or "" for anyone
    site: int | None = None
    knowledge_base: int | None = None
    outcome: str = ""  # a key of OUTCOMES, or "" for any

    @classmethod
    def from_params(cls, params: Mapping[str, str], agent_id: int | None) -> ListQuery:
        """Lenient, like a search box: an unknown value is no filter at all, never an error page."""

        def get(name: str) -> str:
            return (params.get(name) or "").strip()

        return cls(
            agent_id=agent_id,
            text=" ".join(get("q").split())[:MAX_TEXT_CHARS],
            status=get("status") if get("status") in STATUSES else "",
            assigned=get("assigned") if get("assigned") in ASSIGNED else "",
            site=_positive(get("site")),
            knowledge_base=_positive(get("kb")),
            outcome=get("outcome") if get("outcome") in OUTCOMES else "",
        )

    @classmethod
    def from_query_string(cls, query_string: bytes, agent_id: int | None) -> ListQuery:
        """A socket's (``scope["query_string"]``): the page's own query string."""
        parsed = parse_qs(query_string.decode("utf-8", "replace"))
        return cls.from_params({name: values[-1] for name, values in parsed.items()}, agent_id)

    @property
    def active(self) -> bool:
        return bool(self.text or self.status or self.assigned or self.site or self.knowledge_base or self.outcome)

    def params(self) -> dict[str, str]:
        """The query string's fields (what the page's form submits), without the empty ones."""
        values = {"q": self.text, "status": self.status, "assigned": self.assigned, "site": self.site or "",
                  "kb": self.knowledge_base or "", "outcome": self.outcome}
        return {name: str(value) for name, value in values.items() if value}

    def narrow(self, rows: QuerySet) -> QuerySet:
        """``rows`` (``inbox``'s query) filtered: passed to ``inbox.list_items``."""
        rows = rows.filter(self._filters())
        return rows.filter(text_condition(self.text)) if self.text else rows

    def _filters(self) -> Q:
        condition = Q()
        if self.status:
            condition &= Q(status=STATUSES[self.status])
        if self.assigned == "mine":
            condition &= Q(assigned_agent_id=self.agent_id)
        elif self.assigned == "unassigned":
            condition &= Q(assigned_agent__isnull=True)
        if self.site:
            condition &= Q(site_id=self.site)
        if self.knowledge_base:
            condition &= Q(knowledge_base_id=self.knowledge_base)
        if self.outcome:
            condition &= Q(outcome=OUTCOMES[self.outcome])
        return condition

    def matches_item(self, item: dict[str, Any]) -> bool:
        """Whether a live row (``inbox`` item) passes the filters, from its own fields (the search text aside)."""
        assignee = (item.get("assignee") or {}).get("id")
        return (
            (not self.status or item["status"] == STATUSES[self.status])
            and (self.assigned != "mine" or assignee == self.agent_id)
            and (self.assigned != "unassigned" or assignee is None)
            and (not self.site or item.get("site") == self.site)
            and (not self.knowledge_base or item.get("knowledge_base") == self.knowledge_base)
            and (not self.outcome or item.get("outcome") == OUTCOMES[self.outcome])
        )

    def matches_text(self, conversation_id: uuid.UUID | str) -> bool:
        """Whether the conversation matches the search text: one lookup by primary key."""
        if not self.text:
            return True
        return Conversation.objects.filter(pk=conversation_id).filter(text_condition(self.text)).exists()

    async def amatches(self, item: dict[str, Any]) -> bool:
        """A live row: filters first (free), then the text (one query) only when the filters pass."""
        if not self.matches_item(item):
            return False
        return await database_sync_to_async(self.matches_text)(item["conversation"])


def id_range(word: str) -> Q | None:
    """A whole id or a prefix of one (dashes ignored): a range on the primary key, which its index answers."""
    digits = word.lower().replace("-", "")
    if not HEX_ID.match(digits):
        return None
    return Q(pk__gte=uuid.UUID(digits.ljust(32, "0")), pk__lte=uuid.UUID(digits.ljust(32, "f")))


def _word(word: str) -> Q:
    condition = Q()
    for field in CUSTOMER_FIELDS:
        condition |= Q(**{f"{field}__icontains": word})
    if word.lower() == "visitor":
        condition |= Q(owner__isnull=True)
    elif word.lower().startswith("visitor-"):
        condition |= Q(anonymous_session_key__istartswith=word)
    return condition


def text_condition(text: str) -> Q:
    """The search text's condition on conversations (module docstring)."""
    every_word = Q()
    for word in text.split()[:MAX_WORDS]:
        in_messages = Exists(Message.objects.filter(conversation=OuterRef("pk"), text__icontains=word))
        every_word &= _word(word) | Q(in_messages)
    by_id = id_range(text)
    return every_word | by_id if by_id is not None else every_word
