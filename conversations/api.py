"""JSON API for non-browser clients: ``POST /api/token/`` exchanges a username and password for a bearer token."""

from __future__ import annotations

import json

from django.contrib.auth import authenticate
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from chatsite import sign_in
from conversations import revocation
from conversations.auth import InvalidToken, bearer_token, issue_token, user_for_token

MAX_USERNAME_CHARS = 150  # django.contrib.auth's username field
MAX_PASSWORD_CHARS = 4096


def _clean_text(value: object, limit: int) -> bool:
    """A usable credential: a non-empty string the database can hold (no NUL, no lone surrogate), within ``limit``.
    Why: JSON can carry both, and PostgreSQL refuses them — a 500 instead of a 400."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@csrf_exempt  # takes no cookies: the credentials are in the body, so there is nothing to forge
@require_POST
def token(request: HttpRequest) -> JsonResponse:
    """``{"username", "password"}`` → ``{"access", "token_type", "expires_in"}``; 400 malformed, 401 wrong, 429 (with
    ``Retry-After``) after too many failures for that username or address."""
    try:
        data = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: JSON nested thousands deep
        return JsonResponse({"error": "The body must be JSON: {\"username\": …, \"password\": …}."}, status=400)
    if not isinstance(data, dict):
        return JsonResponse({"error": "The body must be a JSON object."}, status=400)
    username, password = data.get("username"), data.get("password")
    if not _clean_text(username, MAX_USERNAME_CHARS) or not _clean_text(password, MAX_PASSWORD_CHARS):
        return JsonResponse({"error": "Both \"username\" and \"password\" are required: non-empty strings without NUL "
                             "or lone surrogates, the username at most 150 characters."}, status=400)
    wait = sign_in.attempt(username, request)  # before the password is checked (chatsite/sign_in.py)
    if wait:
        response = JsonResponse(
            {"error": sign_in.too_many_attempts_message(wait), "code": "throttled", "retry_after": wait}, status=429
        )
        response["Retry-After"] = str(wait)
        return response
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        return JsonResponse({"error": "Invalid username or password."}, status=401)  # the attempt stays counted
    sign_in.succeeded(username, request)
    access, ttl = issue_token(user)
    return JsonResponse({"access": access, "token_type": "Bearer", "expires_in": ttl})


@csrf_exempt  # a bearer token is not a cookie; a session caller passes Django's CSRF check below instead
@require_POST
def revoke(request: HttpRequest) -> JsonResponse:
    """"Sign out everywhere": every bearer token of the caller stops working, every session of theirs ends and every
    socket of theirs closes (4001) on every node (conversations/revocation.py). Authenticated by
    ``Authorization: Bearer <access>`` or by the session (with its CSRF token). 200, or 401 without a valid one."""
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    token = bearer_token({"headers": [(b"authorization", authorization.encode("latin1", "replace"))]})
    if token is not None:
        try:
            user = user_for_token(token)
        except InvalidToken as exc:
            return JsonResponse({"error": str(exc)}, status=401)
    else:
        user = request.user
        if not user.is_authenticated:  # no credential at all: nothing a forged request could use, so 401, not 403
            return JsonResponse({"error": "Sign in, or send Authorization: Bearer <access>."}, status=401)
        refused = CsrfViewMiddleware(lambda _request: None).process_view(request, None, (), {})
        if refused is not None:
            return JsonResponse({"error": "CSRF verification failed: send the csrftoken as X-CSRFToken."}, status=403)
    generation = revocation.sign_out_everywhere(user)
    if token is None:
        request.session.flush()  # this session too (its row is already gone); a fresh, empty cookie
    return JsonResponse({"revoked": True, "generation": generation})
