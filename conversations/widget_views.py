"""The chat widget's HTTP side (docs/widget.md): the embed script, the frame page it opens, and the visitor token
the frame exchanges its embed ticket for. The chat itself is the chat page's, over the same socket.

Where the server enforces "only on the site's own pages": the frame page is served only to a request whose
``Referer`` (the host page; the embed script asks for it with ``referrerpolicy="strict-origin"``) is one of the
site's origins, and its CSP ``frame-ancestors`` lists exactly those, so no browser renders it in another page; the
ticket it carries names that origin, and every visitor token and socket is checked against the site again
(conversations/visitors.py).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.staticfiles import finders
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from chatsite.sign_in import client_address
from conversations import sites, visitors
from conversations.access import Requester
from conversations.models import Conversation, Site
from conversations.views import handoff_available, saved_history

log = logging.getLogger(__name__)

#: The largest visitor request body read (a ticket, a token, a page URL and an identity fit in well under it).
MAX_BODY_BYTES = 16 * 1024
PAGE_URL_MAX_CHARS = Conversation._meta.get_field("page_url").max_length


@functools.lru_cache(maxsize=1)
def _script_text(path: str, mtime_ns: int) -> bytes:
    with open(path, "rb") as file:
        return file.read()


@require_GET
def widget_script(request: HttpRequest) -> HttpResponse:
    """``/widget.js``, the one tag a company puts on its pages. Short-cached: a fix reaches every page within 5
    minutes, and the tag never changes."""
    path = finders.find("widget/widget.js")
    if not path:
        raise Http404("widget.js is missing from static/")
    body = _script_text(path, os.stat(path).st_mtime_ns)
    response = HttpResponse(body, content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=300"
    response["Cross-Origin-Resource-Policy"] = "cross-origin"  # loaded by other sites' pages
    return response


def _enabled_site(slug: str) -> Site:
    site = Site.objects.filter(slug=slug, enabled=True).first()
    if site is None:
        raise Http404("No such site.")
    return site


def url_origin(url: str) -> str | None:
    """The origin of an http(s) URL, in the form allowed origins are kept; None for any other text (one with a
    ``[`` and no ``]`` made ``urlsplit`` raise, and the request end in HTTP 500)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return sites.header_origin(f"{parts.scheme}://{parts.netloc}")


def referring_origin(request: HttpRequest) -> str | None:
    """The origin of the page that asked for the frame, as the browser named it in ``Referer``."""
    return url_origin(request.headers.get("Referer", ""))


def _frame_options(request: HttpRequest, site: Site) -> dict:
    """The page's ``data-`` options the script passed on (``lang``, ``color``, ``greeting``), checked."""
    language = request.GET.get("lang", "")
    if language not in dict(settings.LANGUAGES):
        language = translation.get_language_from_request(request)
    color = request.GET.get("color", "")
    color = color if sites.is_colour(color) else ""
    greeting = " ".join(request.GET.get("greeting", "").split())[:300] or site.greeting_for(language)
    return {"language": language, "color": color, "greeting": greeting}


@require_GET
@xframe_options_exempt  # CSP frame-ancestors says who may frame it, per site (X-Frame-Options cannot list origins)
def frame(request: HttpRequest, slug: str) -> HttpResponse:
    """The chat panel inside the host page's iframe: the chat page's markup and modules, for a visitor."""
    site = _enabled_site(slug)
    origin = referring_origin(request)
    options = _frame_options(request, site)
    with translation.override(options["language"]):
        if origin is None or not site.allows_origin(origin):
            response = render(request, "widget/refused.html", {"site": site}, status=403)
        else:
            config = {
                "site": site.slug,
                "ticket": visitors.embed_ticket(site, origin),
                "hostOrigin": origin,
                "visitorUrl": reverse("widget-visitor", args=[site.slug]),
                "uploadUrl": reverse("attachments:upload"),
                "maxImages": settings.ATTACHMENT_MAX_PER_MESSAGE,
                "language": options["language"],
            }
            context = {"site": site, "greeting": options["greeting"], "color": options["color"], "config": config,
                       "max_question_chars": settings.CHAT_MAX_QUESTION_CHARS, "handoff_available": True, "widget": True}  # fmt: skip
            response = render(request, "widget/frame.html", context)
    response._csp_replace = {"frame-ancestors": site.origins or ["'none'"]}
    response["Cache-Control"] = "no-store"  # the ticket is this page view's
    return response


class BadRequest(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _page_url(value: object, origin: str) -> str:
    """The host page's URL, kept only when it is on the origin the ticket names (the console shows it)."""
    if not isinstance(value, str) or len(value) > PAGE_URL_MAX_CHARS:
        return ""
    return value if url_origin(value) == origin else ""


@csrf_exempt  # no cookie is read or set: the embed ticket in the body is the proof, and it cannot ride a cookie
@require_POST
async def visitor(request: HttpRequest, slug: str) -> HttpResponse:
    """Exchange the frame's embed ticket (with the token the visitor kept, the host page's URL and the host site's
    signed identity, if any) for a visitor token, and the visitor's latest conversation rendered.

    A stored token of this site keeps the visitor (and their conversations); a verified identity makes them the
    site's customer (their anonymous conversations on this browser become theirs); an identity that does not verify
    leaves them anonymous, and the answer says so (``identity: "refused"``)."""
    try:
        body = _json_body(request)
        answer = await _visitor_token(request, slug, body)
    except BadRequest as exc:
        return JsonResponse({"error": exc.code, "detail": exc.detail}, status=exc.status)
    return JsonResponse(answer)


def _json_body(request: HttpRequest) -> dict:
    if len(request.body) > MAX_BODY_BYTES:
        raise BadRequest(413, "too_large", f"At most {MAX_BODY_BYTES} bytes.")
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: JSON nested past Python's recursion limit
        raise BadRequest(400, "malformed", "The body is not JSON.") from None
    if not isinstance(body, dict) or not isinstance(body.get("ticket"), str):
        raise BadRequest(400, "malformed", 'A JSON object with "ticket" (the frame page\'s) is needed.')
    return body


async def _visitor_token(request: HttpRequest, slug: str, body: dict) -> dict:
    site = await database_sync_to_async(Site.objects.filter(slug=slug, enabled=True).first)()
    if site is None:
        raise BadRequest(404, "not_found", "No such site.")
    try:
        origin = visitors.read_ticket(body["ticket"], site)
    except visitors.Refused:
        raise BadRequest(403, "ticket", "The page's ticket is not valid here; reload the page.") from None
    address = client_address(request)
    page = _page_url(body.get("page"), origin)
    place = visitors.Visitor(site_id=site.pk, origin=origin, page_url=page, address=address)
    identity_state, user_id = "none", None
    if body.get("identity"):
        try:
            user_id = await database_sync_to_async(visitors.verify_identity)(site, visitors.Identity.parse(body["identity"]))
            identity_state = "verified"
        except visitors.Refused as exc:
            identity_state = "refused"
            log.warning("widget identity refused on site %s from %s: %s", site.slug, origin, exc)
    session_key = _kept_visitor(body.get("token"), site)
    if user_id is None and session_key is None:
        if not await visitors.admit_new_visitor(address):
            raise BadRequest(429, "rate_limited", "Too many new chats from your network; try again in a while.")
        session_key = visitors.new_visitor_key()
    found = visitors.VisitorToken(place, session_key="" if user_id else session_key or "", user_id=user_id)
    requester = Requester(user_id=user_id, session_key=found.session_key, visitor=place)
    language = body.get("language")
    if not isinstance(language, str) or language not in dict(settings.LANGUAGES):  # a list is unhashable
        language = translation.get_language()
    with translation.override(language):
        chat_html, latest = await database_sync_to_async(_latest_chat)(requester, site, session_key)
    return {
        "token": visitors.visitor_token(found),
        "identity": identity_state,
        "conversation": str(latest.pk) if latest else None,
        "status": latest.status if latest else Conversation.Status.BOT,
        "ended": bool(latest and latest.ended_at),  # the frame shows the CSAT panel, not "End chat"
        "chat_html": chat_html,
    }


def _kept_visitor(token: object, site: Site) -> str | None:
    """The anonymous visitor a stored token of this site names (expired or foreign tokens name none)."""
    if not isinstance(token, str) or len(token) > 4096:
        return None
    try:
        kept = visitors.read_visitor_token(token)
    except visitors.Refused:
        return None
    return kept.session_key if kept.visitor.site_id == site.pk and kept.session_key else None


def _latest_chat(requester: Requester, site: Site, anonymous_key: str | None) -> tuple[str, Conversation | None]:
    """The requester's latest conversation on this site, rendered as the chat page renders it. A customer just
    verified takes over what they asked anonymously on this browser first."""
    if requester.user_id is not None and anonymous_key:
        Conversation.objects.filter(site=site, owner__isnull=True, anonymous_session_key=anonymous_key).update(
            owner_id=requester.user_id, anonymous_session_key=""
        )
    latest = requester.conversations().filter(site=site).order_by("-updated_at").first()
    history = saved_history(requester, latest) if latest else []
    context = {
        "conversation": latest,
        "history": history,
        "handoff_available": handoff_available(latest.status) if latest else True,
        "max_question_chars": settings.CHAT_MAX_QUESTION_CHARS,
        "greeting": site.greeting_for(translation.get_language() or ""),
        "widget": True,  # no autofocus: a browser refuses it in a cross-origin frame (the script focuses on open)
        "images_by_script": True,  # fetched with the visitor token (no cookie in a third-party frame): attach.js
    }
    return render_to_string("conversations/_chat.html", context), latest
