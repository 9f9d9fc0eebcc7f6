"""The customer chat pages: the list of conversations and one conversation with its history.

Thin on purpose: who owns what is decided by ``conversations.access`` (the same rules as the WebSocket);
the chat itself happens over the socket (docs/protocol.md). These pages only render what is saved and offer
new / rename / delete. Someone else's conversation is a 404, never a 403: it must look like it does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.views import redirect_to_login
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from conversations.access import Requester, requester_from_request
from conversations.answer_versions import arrange
from conversations.models import Conversation, Feedback, Message
from knowledge.ingest.chunking import HEADING_SEPARATOR
from knowledge.visibility import may_read

TITLE_MAX_CHARS = Conversation._meta.get_field("title").max_length
_ID_PLACEHOLDER = "__id__"


def _with_requester(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Sign-in required unless anonymous chat is on; the view gets the requester as its second argument."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        requester = requester_from_request(request)
        if requester is None:
            return redirect_to_login(request.get_full_path())
        return view(request, requester, *args, **kwargs)

    return wrapper


@require_GET
@_with_requester
def conversation_list(request: HttpRequest, requester: Requester) -> HttpResponse:
    first_question = Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.USER).order_by("created_at")
    conversations = requester.conversations().annotate(first_question=Subquery(first_question.values("text")[:1]))
    conversations = conversations.order_by("-updated_at")
    return render(request, "conversations/list.html", {"conversations": conversations})


@require_POST
@_with_requester
def conversation_new(request: HttpRequest, requester: Requester) -> HttpResponse:
    """An empty conversation on the default knowledge base; its title comes from the first question."""
    conversation = Conversation.objects.create(**requester.owner_fields())
    return redirect("conversations:detail", conversation_id=conversation.pk)


@require_GET
@_with_requester
def conversation_detail(request: HttpRequest, requester: Requester, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = get_object_or_404(requester.conversations().select_related("knowledge_base"), pk=conversation_id)
    history = saved_history(requester, conversation)
    sample_url = reverse("conversations:detail", args=[uuid.UUID(int=0)])
    config = {
        "conversation": str(conversation.pk),
        "status": conversation.status,
        "ended": conversation.ended_at is not None,  # "End chat" is hidden, the CSAT panel shows (csat.js)
        # Only a knowledge base the requester may see is named on the page (knowledge/visibility.py).
        "kb": conversation.knowledge_base.slug if may_read(requester.user_id, conversation.knowledge_base_id) else "",
        "conversationUrl": sample_url.replace(str(uuid.UUID(int=0)), _ID_PLACEHOLDER),
        # Images: uploaded with the session and this CSRF token (static/chat/attach.js, conversations/attachments.py).
        "uploadUrl": reverse("attachments:upload"),
        "csrfToken": get_token(request),
        "maxImages": settings.ATTACHMENT_MAX_PER_MESSAGE,
    }
    first_question = next((m.text for m in history if m.role == Message.Role.USER), "")
    context = {
        "conversation": conversation,
        # Conversations opened with "New conversation" have no title until someone renames them.
        "display_title": conversation.title or first_question,
        "history": history,
        # "Talk to a person" (the page's button and a nothing-found answer's): not while one is asked or there.
        "handoff_available": handoff_available(conversation.status),
        "chat_config": config,
        "max_question_chars": settings.CHAT_MAX_QUESTION_CHARS,
    }
    return render(request, "conversations/detail.html", context)


def saved_history(requester: Requester, conversation: Conversation) -> list[Message]:
    """A conversation's messages as ``conversations/_message.html`` renders them for its customer (the chat page and
    the widget): with the requester's own thumbs and the sources' chip labels, each answer's versions together."""
    messages = conversation.messages.select_related("reply_to", "author").prefetch_related("attachments")
    history = arrange(list(messages.order_by("created_at")))
    ratings = _ratings(requester, [m.pk for m in history if m.role == Message.Role.ASSISTANT])
    for message in history:
        message.my_rating = ratings.get(message.pk, 0)
        message.sources = labelled_sources(message.sources)
    return history


def handoff_available(status: str) -> bool:
    """Whether the customer may ask for a person. Mirrors handoffAvailable() in static/chat/chat.js."""
    return status not in (Conversation.Status.WAITING_FOR_AGENT, Conversation.Status.AGENT)


def labelled_sources(items: list[dict] | None) -> list[dict]:
    """A stored answer's sources with each chip's words (``label``), as ``conversations/_sources.html`` reads them:
    the chat page and the console show the same chips."""
    return [{**item, "label": chip_label(item)} for item in items or []]


def chip_label(item: dict) -> str:
    """A source chip's words: the passage's section (last heading) tells passages of one document apart.

    Mirrors chipLabel() in static/chat/render.js, which labels chips of live answers.
    """
    section = (item.get("heading") or "").split(HEADING_SEPARATOR)[-1].strip()
    return section or item.get("title") or "Source"


def _ratings(requester: Requester, message_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """This requester's thumbs on these answers, so the page shows them pressed after a reload."""
    feedback = Feedback.objects.filter(message_id__in=message_ids)
    if requester.is_anonymous:
        feedback = feedback.filter(user__isnull=True, anonymous_session_key=requester.session_key)
    else:
        feedback = feedback.filter(user_id=requester.user_id)
    return dict(feedback.values_list("message_id", "rating"))


@require_POST
@_with_requester
def conversation_rename(request: HttpRequest, requester: Requester, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = get_object_or_404(requester.conversations(), pk=conversation_id)
    title = " ".join(request.POST.get("title", "").split())
    if not title:
        flash.error(request, "A conversation needs a title; it was not renamed.")
    elif len(title) > TITLE_MAX_CHARS:
        flash.error(request, f"Titles are at most {TITLE_MAX_CHARS} characters; it was not renamed.")
    else:
        conversation.title = title
        conversation.save(update_fields=["title", "updated_at"])
        flash.success(request, "Conversation renamed.")
    return redirect(_back(request))


@require_POST
@_with_requester
def conversation_delete(request: HttpRequest, requester: Requester, conversation_id: uuid.UUID) -> HttpResponse:
    conversation = get_object_or_404(requester.conversations(), pk=conversation_id)
    title = str(conversation)
    conversation.delete()
    flash.success(request, f"Deleted “{title}”.")
    return redirect("conversations:list")


def _back(request: HttpRequest) -> str:
    """Back to the page the form was on (the list or the conversation), if it is one of ours."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return reverse("conversations:list")
