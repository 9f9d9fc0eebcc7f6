"""django-csp's middleware, plus the one source a static policy cannot name: this site's own WebSocket origin.

The chat page and the console open ``ws(s)://<the page's host>/ws/…``. CSP Level 3 lets ``'self'`` match the
ws:/wss: form of the page's origin, and current Chromium and Firefox do; older engines (Safari before 15.4)
did not, and a bare ``ws:``/``wss:`` scheme source would allow sockets to any host. So connect-src gets the
exact origin of the request: ``ws://host:port`` on an http page, ``wss://host`` behind HTTPS.
"""

from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase


def websocket_origin(request: HttpRequest) -> str | None:
    """``ws://host[:port]`` (``wss://`` when the request is secure), or None for a host we do not serve.

    ``get_host`` validates the Host header against ALLOWED_HOSTS and a strict pattern, so nothing a client
    sends can add other sources or directives to the header.
    """
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return f"{'wss' if request.is_secure() else 'ws'}://{host}"


class SiteCSPMiddleware(CSPMiddleware):
    """settings.CONTENT_SECURITY_POLICY with this request's WebSocket origin added to connect-src."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        origin = websocket_origin(request)
        if origin:
            update = dict(parts.update or {})
            existing = update.get("connect-src") or []
            update["connect-src"] = [*([existing] if isinstance(existing, str) else existing), origin]
            parts.update = update
        return parts
