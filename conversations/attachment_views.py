"""The HTTP side of customers' images: ``POST /attachments/`` keeps one, ``GET /attachments/<id>/`` shows it.

The rules of an image are conversations/images.py, who may keep and see one conversations/attachments.py; here is
only what HTTP adds. The upload is authenticated like the chat page (the session, with Django's CSRF check) or like
the widget (``Authorization: Visitor <token>``, conversations/access.py ``requester_from_request``: a header no other
site can make a browser send without our consent, so no CSRF token is needed then). Decoding runs on a pool of
``ATTACHMENT_THREADS`` threads of its own: never on the event loop, never on the thread Django runs sync views on,
and never more images at once than the pool (each may take ~4 bytes a pixel while decoded).

A served image is only ever the re-encoded file: its own type (PNG, JPEG or WebP), ``nosniff``, ``inline``,
``private`` caching and a policy that lets nothing in it run (``default-src 'none'; sandbox``). To anyone but its
conversation's customer and staff it is a 404, the same as an image that does not exist.
"""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from conversations import attachments, images
from conversations.access import AccessRevoked, Requester, ensure_may_act, requester_from_request

_DECODERS = ThreadPoolExecutor(max_workers=max(1, settings.ATTACHMENT_THREADS), thread_name_prefix="images")
#: How a served image may be cached: by the customer's own browser only, and for as long as it likes (an image's
#: bytes never change under its id; access is checked again whenever the browser asks).
CACHE_CONTROL = "private, max-age=86400"
#: Nothing in a served image may run or load anything, even if a browser were to render it as a document.
IMAGE_POLICY = "default-src 'none'; sandbox"


def _refused(code: str, detail: str, status: int) -> JsonResponse:
    return JsonResponse({"error": detail, "code": code}, status=status)


@dataclass(frozen=True)
class _Upload:
    requester: Requester
    conversation: uuid.UUID | None
    data: bytes


def _read(request: HttpRequest) -> _Upload | JsonResponse:
    """The upload's form, or the refusal: who uploads (the widget's visitor, or the chat page's user whose form
    carries the CSRF token), for which conversation, what bytes. Sync: the session, the user and the body."""
    requester = requester_from_request(request)
    if requester is None:
        return _refused("unauthenticated", "Sign in (or open the chat again) to attach an image.", 401)
    if "Authorization" not in request.headers:  # a cookie-borne identity: the form must prove it is ours
        if CsrfViewMiddleware(lambda _request: None).process_view(request, None, (), {}) is not None:
            return _refused("csrf", "CSRF verification failed: send the page's csrfmiddlewaretoken.", 403)
    file = request.FILES.get("image")
    if file is None:
        return _refused("invalid", "Send the image as the multipart field 'image'.", 400)
    try:
        conversation = uuid.UUID(request.POST["conversation"]) if request.POST.get("conversation") else None
    except ValueError:
        return _refused("invalid", "'conversation' must be a conversation id (a UUID).", 400)
    if file.size > settings.ATTACHMENT_MAX_BYTES:  # said before a byte of it is read into memory
        return _refused(images.TOO_LARGE, images.too_large(file.size), 413)
    return _Upload(requester, conversation, file.read())


@csrf_exempt  # CSRF is checked in _read for a session, and is moot for the widget's Authorization header
@require_POST
async def upload(request: HttpRequest) -> JsonResponse:
    """A multipart form with ``image`` (the file) and ``conversation`` (optional: none yet for a first question).
    201 with the image as ``attachments.described`` ({id, url, content_type, width, height}); otherwise
    ``{"error", "code"}`` with 400, 401, 403, 404, 413, 415, 422 or 429, and nothing is stored."""
    form = await sync_to_async(_read)(request)
    if isinstance(form, JsonResponse):
        return form
    try:
        image = await asyncio.get_running_loop().run_in_executor(_DECODERS, images.reencode, form.data)
        stored = await sync_to_async(attachments.store)(form.requester, form.conversation, image)
    except images.ImageRefused as exc:
        return _refused(exc.code, exc.detail, images.HTTP_STATUS[exc.code])
    except attachments.UploadRefused as exc:
        return _refused(exc.code, exc.detail, exc.status)
    except AccessRevoked:
        return _refused("unauthenticated", "Sign in (or open the chat again) to attach an image.", 401)
    return JsonResponse(attachments.described(stored), status=201)


@require_safe
def serve(request: HttpRequest, attachment_id: uuid.UUID) -> HttpResponse:
    """The re-encoded image, to its conversation's customer and to staff; 404 to everyone else."""
    requester = requester_from_request(request)
    try:
        if requester is not None:
            ensure_may_act(requester)  # a widget visitor's site still on and listing their page
    except AccessRevoked:
        requester = None
    attachment = attachments.viewable(request.user, requester, attachment_id)
    if attachment is None:
        return _refused("not_found", "No such image.", 404)
    etag = f'"{attachment.pk}"'
    if request.headers.get("If-None-Match") == etag:
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(bytes(attachment.data), content_type=attachment.content_type)
    response["ETag"] = etag
    response["Content-Disposition"] = f'inline; filename="image-{attachment.pk}.{attachment.content_type[6:]}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = IMAGE_POLICY
    response["Cache-Control"] = CACHE_CONTROL
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    response["Vary"] = "Cookie, Authorization"
    return response
