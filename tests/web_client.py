"""A small HTTP client for a real Daphne node (tests/daphne_process.py): keeps cookies, never follows redirects.

The security tests read what a node sends (status, headers, redirects, Set-Cookie) exactly as a browser would
receive it, so nothing is followed or rewritten on the way; urllib from the standard library, no extra package.
"""

from __future__ import annotations

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message


@dataclass
class Response:
    status: int
    headers: Message
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def header(self, name: str) -> str:
        return self.headers.get(name, "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        return None


class WebClient:
    """Requests to ``base_url`` with a cookie jar (a signed-in session), redirects returned as they are."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect())

    def request(self, method: str, path: str, data: dict[str, str] | None = None, headers: dict | None = None) -> Response:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers or {})
        try:
            with self._opener.open(request, timeout=60) as response:
                return Response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:  # 3xx (not followed), 4xx and 5xx
            return Response(error.code, error.headers, error.read())

    def get(self, path: str, headers: dict | None = None) -> Response:
        return self.request("GET", path, headers=headers)

    def cookie(self, name: str) -> str:
        return next((c.value for c in self.cookies if c.name == name), "")

    def force_login(self, user) -> None:
        """A signed-in session made the way Django's test client makes one (for tests about pages, not sign-in)."""
        from django.test import Client

        client = Client()
        client.force_login(user)
        host = urllib.parse.urlsplit(self.base_url).hostname
        session = client.cookies["sessionid"].value
        self.cookies.set_cookie(
            http.cookiejar.Cookie(
                0, "sessionid", session, None, False, host, False, False, "/", True, False, None, False, None, None, {}
            )
        )

    def sign_in(self, username: str, password: str) -> None:
        """Through the login form, as a browser does (CSRF token from the form's hidden field)."""
        page = self.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = self.request(
            "POST",
            "/accounts/login/",
            {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/"},
            headers={"Referer": self.base_url + "/accounts/login/"},
        )
        assert response.status == 302 and self.cookie("sessionid"), f"sign-in failed: {response.status}"
