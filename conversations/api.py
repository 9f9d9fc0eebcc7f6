"""JSON API for non-browser clients: ``POST /api/token/`` exchanges a username and password for a bearer token."""

from __future__ import annotations

import json

from django.contrib.auth import authenticate
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from conversations.auth import issue_token


@csrf_exempt  # takes no cookies: the credentials are in the body, so there is nothing to forge
@require_POST
def token(request: HttpRequest) -> JsonResponse:
    """``{"username", "password"}`` → ``{"access", "token_type", "expires_in"}``; 400 malformed, 401 wrong."""
    try:
        data = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"error": "The body must be JSON: {\"username\": …, \"password\": …}."}, status=400)
    if not isinstance(data, dict):
        return JsonResponse({"error": "The body must be a JSON object."}, status=400)
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        return JsonResponse({"error": "Both \"username\" and \"password\" are required strings."}, status=400)
    user = authenticate(request, username=username, password=password)
    if user is None or not user.is_active:
        return JsonResponse({"error": "Invalid username or password."}, status=401)
    access, ttl = issue_token(user)
    return JsonResponse({"access": access, "token_type": "Bearer", "expires_in": ttl})
