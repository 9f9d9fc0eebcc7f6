"""The console's customer panel: who the customer of a conversation is, and their other conversations.

Three kinds of customer, told apart by what the conversation and its owner are:

* **verified** — a host site's signed-in customer (``SiteCustomer``): their site's server signed their id, name and
  e-mail with the site's identity secret (conversations/visitors.py ``verify_identity``), so the name and e-mail
  are the site's word, not the customer's;
* **signed in** — an account of this support site (its own chat page): the e-mail is the account's;
* **visitor** — anonymous (this site's chat page, or the widget without an identity): no name; an e-mail only
  when they left one for a reply ("leave a message"), which nobody verified.

Past conversations are the same customer's: the same owner, or for an anonymous visitor the same visitor key
(``anonymous_session_key``), newest first, at most ``PAST_LIMIT`` — each with its status and outcome (how it went,
docs/analytics.md) and a link to it. Two queries: the owner with their site identity, the past conversations
(``conv_owner_recent`` / ``conv_session_recent`` indexes).
"""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from conversations.inbox import display_name
from conversations.models import Conversation, ConversationRating, SiteCustomer

PAST_LIMIT = 10
VERIFIED, SIGNED_IN, VISITOR = "verified", "signed_in", "visitor"
KIND_LABELS = {
    VERIFIED: "Verified by the site",
    SIGNED_IN: "Signed in on this site",
    VISITOR: "Anonymous visitor (not verified)",
}


def panel(conversation: Conversation) -> dict[str, Any]:
    """What the panel shows for ``conversation`` (its ``owner`` and ``site`` loaded or not)."""
    owner = conversation.owner
    site_customer = None
    if owner is not None:
        site_customer = SiteCustomer.objects.select_related("site").filter(user_id=owner.pk).first()
    kind = VISITOR if owner is None else VERIFIED if site_customer is not None else SIGNED_IN
    name = "" if owner is None else display_name(owner)
    if site_customer is not None and not owner.get_full_name().strip():
        name = ""  # the username of a verified customer is one we made up ("site-3-…"), not their name
    return {
        "kind": kind,
        "kind_label": KIND_LABELS[kind],
        "verified": kind == VERIFIED,
        "name": name,
        "email": (owner.email if owner is not None else "") or conversation.contact_email,
        "email_verified": kind != VISITOR and bool(owner.email),
        "external_id": site_customer.external_id if site_customer is not None else "",
        "verified_by": site_customer.site.name if site_customer is not None else "",
        "site": conversation.site.name if conversation.site_id is not None else "",
        "page_url": conversation.page_url,
        # This conversation's own outcome and CSAT (docs/analytics.md), once it has them.
        "outcome": conversation.outcome,
        "outcome_label": conversation.get_outcome_display() if conversation.outcome else "Open",
        "rating": ConversationRating.objects.filter(conversation=conversation).values("score", "comment").first(),
        "past": past_conversations(conversation),
    }


def past_conversations(conversation: Conversation) -> list[dict[str, Any]]:
    """The customer's other conversations, newest first (module docstring)."""
    if conversation.owner_id is not None:
        same = Conversation.objects.filter(owner_id=conversation.owner_id)
    else:
        same = Conversation.objects.filter(anonymous_session_key=conversation.anonymous_session_key)
    rows = (
        same.exclude(pk=conversation.pk)
        .select_related("rating")
        .only("pk", "title", "status", "outcome", "updated_at", "rating__score")
    )
    return [
        {
            "conversation": str(row.pk),
            "title": row.title or "New conversation",
            "status": row.status,
            "status_label": row.get_status_display(),
            "outcome": row.outcome,
            "outcome_label": row.get_outcome_display() if row.outcome else "Open",
            "score": _score(row),
            "updated_at": row.updated_at.isoformat(),
            "url": reverse("console:detail", args=[row.pk]),
        }
        for row in rows.order_by("-updated_at")[:PAST_LIMIT]
    ]


def _score(conversation: Conversation) -> int | None:
    """The conversation's CSAT score, None when it was not rated (a reverse one-to-one raises rather than None)."""
    try:
        return conversation.rating.score
    except ConversationRating.DoesNotExist:
        return None
