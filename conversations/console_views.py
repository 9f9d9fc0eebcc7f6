"""The staff support console pages: the live list of conversations and one conversation's view.

Thin: the rows come from ``conversations.inbox`` (the same builder as the live ``conversation_update`` frames),
everything live — streaming answers, traces, notes, take-over — happens over ``/ws/console/`` and is drawn by
static/console/console.js. Staff only: anonymous visitors are sent to sign in, other users get 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from conversations import assignment, console_search, customer_panel, inbox, protocol
from conversations.answer_versions import arrange
from conversations.models import Conversation, SavedReply, Site
from conversations.views import labelled_sources
from knowledge.models import KnowledgeBase

SECTION_TITLES = {
    "waiting": "Waiting for a person",
    "active": "With a person",
    "recent": "Answered by the assistant",
    "resolved": "Resolved",
}


def staff_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous: the sign-in page (then back here). Signed in without staff status: 403."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied("The support console is for staff only.")
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@staff_only
def conversation_list(request: HttpRequest) -> HttpResponse:
    """The list, searched and filtered by the query string (conversations/console_search.py), which the page's
    socket sends too so its live rows follow the same search and filters."""
    query = console_search.ListQuery.from_params(request.GET, request.user.pk)
    items = inbox.list_items(narrow=query.narrow if query.active else None)
    sections = [
        {"key": key, "title": SECTION_TITLES[key], "items": [i for i in items if i["section"] == key]}
        for key in inbox.SECTION_ORDER
    ]
    context = {
        "sections": sections,
        "console_config": _config(request),
        "query": query,
        "filtered": query.active,
        "shown": len(items),
        "filters": _filters(query),
    }
    return render(request, "console/list.html", context)


def _filters(query: console_search.ListQuery) -> list[dict]:
    """The list page's filter menus: name (the query string's), label, options as (value, label, selected)."""
    chosen = query.params()
    menus = [
        ("status", "Status", [("", "Any status"), ("waiting", "Waiting for a person"), ("active", "With a person"),
                              ("bot", "Answered by the assistant"), ("resolved", "Resolved")]),
        ("assigned", "Assigned to", [("", "Anyone's"), ("mine", "Mine"), ("unassigned", "Unassigned")]),
        ("site", "Site", [("", "Any site"), *((str(pk), name) for pk, name in Site.objects.values_list("pk", "name"))]),
        ("kb", "Knowledge base", [("", "Any KB"), *(
            (str(pk), name) for pk, name in KnowledgeBase.objects.order_by("name").values_list("pk", "name"))]),
        ("outcome", "Outcome", [("", "Any outcome"), (console_search.OPEN, "Open (no outcome yet)"),
                                *Conversation.Outcome.choices]),
    ]
    return [
        {"name": name, "label": label,
         "options": [(value, text, value == chosen.get(name, "")) for value, text in options]}
        for name, label, options in menus
    ]


@require_GET
@staff_only
def conversation_detail(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = get_object_or_404(Conversation.objects.select_related("owner", "assigned_agent", "site"), pk=conversation_id)
    messages = conversation.messages.select_related("reply_to", "author").prefetch_related("attachments")
    history = arrange(list(messages.order_by("created_at")))  # each answer's versions together (regenerate)
    # The chips' words as the customer's page shows them (conversations/_sources.html reads `label`).
    for message in history:
        message.sources = labelled_sources(message.sources)
    left_message = protocol.left_message(conversation.contact_email, conversation.left_message_at)
    config = {
        **_config(request),
        "conversation": str(conversation.pk),
        "status": conversation.status,
        "holder": inbox.person(conversation.assigned_agent)
        if conversation.status == Conversation.Status.AGENT
        else None,
        "left_message": left_message,
        "saved_replies": [reply.as_option() for reply in SavedReply.objects.filter(enabled=True)],
        # Assigning (conversations/assignment.py): to whom it is assigned now, and whom it can be assigned to.
        "assignee": inbox.person(conversation.assigned_agent),
        "staff": assignment.staff_members(),
        "placeholders": placeholder_values(conversation, request.user),
    }
    context = {
        "conversation": conversation,
        "customer": inbox.customer_label(conversation),
        "customer_panel": customer_panel.panel(conversation),
        "history": history,
        "left_message": left_message,  # "customer offline": replies are e-mailed too (conversations/leave_message.py)
        "viewer": "staff",
        "console_config": config,
        "max_chars": settings.CHAT_MAX_QUESTION_CHARS,
    }
    return render(request, "console/detail.html", context)


def placeholder_values(conversation: Conversation, agent) -> dict[str, str]:
    """What each saved-reply placeholder (``saved_replies.PLACEHOLDERS``) becomes in this conversation, rendered
    into the page for static/console/saved_replies.js to fill in: plain text, never markup, "" when unknown.

    In the page rather than behind a JSON endpoint: the same staff-only request, no second round trip before the
    first "/" works, and the few hundred short texts a team keeps weigh little; a reply edited in the admin is
    offered from the next page load."""
    owner = conversation.owner
    # A verified customer the host site sent no name for has a username we made up ("site-3-…"): no name.
    nameless = (
        owner is not None
        and conversation.site_id is not None
        and not owner.get_full_name().strip()
        and hasattr(owner, "site_customer")
    )
    return {
        "customer_name": "" if owner is None or nameless else inbox.display_name(owner),
        "agent_name": inbox.display_name(agent),
        "site": conversation.site.name if conversation.site_id is not None else "",
    }


def _config(request: HttpRequest) -> dict:
    return {"me": inbox.person(request.user)}
