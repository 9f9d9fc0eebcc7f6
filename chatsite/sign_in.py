"""Throttled sign-in: failed sign-ins are counted per username and per client address, and past a limit further
attempts are answered 429 with ``Retry-After`` before any password is checked.

Why our own module and not django-axes or django-ratelimit: axes locks out (no ``Retry-After``, a separate lockout
page instead of the sign-in form, its own authentication backend, middleware and tables); ratelimit counts every
request rather than failures and answers 403 from a shared Django cache this project does not configure. Here it is
two Redis counters per attempt (``REDIS_URL``, shared by every node; in-process without it, one node only).

The two counts are separate so that one does not slow the other: a password sprayed at ``alice`` from a thousand
addresses blocks ``alice`` only; one address trying many names is blocked by its own count; everybody else signs in
as usual. A count starts at the first failure and lasts ``SIGN_IN_FAILURE_WINDOW_SECONDS``; ``Retry-After`` is what
is left of it. An attempt is counted before its password is checked, in the same atomic step as the check (so
guesses sent at once cannot all pass it), and un-counted when the password was right; a successful sign-in also
clears its username's count (not its address's: an attacker's own account must not reset the address it guesses
from).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from typing import Any

import redis.exceptions
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.utils.translation import ngettext

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 1.0  # a Redis outage must not hang sign-in (it then goes unthrottled: see _unreachable)


def client_address(request: HttpRequest) -> str:
    """The address a count is kept for: ``REMOTE_ADDR`` (behind a proxy, Daphne's ``--proxy-headers`` sets it from
    ``X-Forwarded-For``), as ``normalised_address`` counts it."""
    return normalised_address(request.META.get("REMOTE_ADDR") or "")


def normalised_address(raw: str) -> str:
    """A client address as counts keep it: an IPv6 client by its /64, since one host usually holds a whole /64."""
    raw = raw or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{settings.CHANNEL_PREFIX}:signin:{kind}:{digest}"


def _limit_keys(username: str | None, address: str) -> list[tuple[str, str]]:
    """(kind, key) of every count an attempt is subject to; a limit of 0 switches that count off."""
    keys = []
    if username and settings.SIGN_IN_MAX_FAILURES_PER_USERNAME > 0:
        keys.append(("user", _key("user", username.strip().casefold())))
    if settings.SIGN_IN_MAX_FAILURES_PER_IP > 0:
        keys.append(("ip", _key("ip", address)))
    return keys


def _limits(username: str | None, address: str) -> list[tuple[str, int]]:
    """(key, limit) of every count this attempt is subject to."""
    limit = {"user": settings.SIGN_IN_MAX_FAILURES_PER_USERNAME, "ip": settings.SIGN_IN_MAX_FAILURES_PER_IP}
    return [(key, limit[kind]) for kind, key in _limit_keys(username, address)]


class _LocalCounters:
    """The counts of one process, for a single node without Redis (``make run``)."""

    MAX_KEYS = 100_000  # past this, expired counts are dropped, then the oldest: memory stays bounded

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        entry = self._counts.get(key)
        if entry is not None and entry[1] <= now:
            del self._counts[key]
            return None
        return entry

    def attempt(self, limits: list[tuple[str, int]], window: float) -> float:
        now = time.monotonic()
        with self._lock:
            waits = [entry[1] - now for key, limit in limits if (entry := self._live(key, now)) and entry[0] >= limit]
            if waits:
                return max(waits)
            if len(self._counts) >= self.MAX_KEYS:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
                while len(self._counts) >= self.MAX_KEYS:
                    del self._counts[next(iter(self._counts))]
            for key, _limit in limits:
                entry = self._live(key, now)
                self._counts[key] = (entry[0] + 1, entry[1]) if entry else (1, now + window)
        return 0.0

    def succeeded(self, clear: list[str], uncount: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in clear:
                self._counts.pop(key, None)
            for key in uncount:
                if (entry := self._live(key, now)) is not None:
                    self._counts[key] = (max(0, entry[0] - 1), entry[1])


# KEYS: the counts of an attempt; ARGV: the window (ms), then each count's limit. Atomically: if any count is at its
# limit, the milliseconds until the last of those ends (nothing counted); else 0, every count one higher (a new one
# starting the window). Atomic so that guesses sent at once, to one node or several, cannot all pass the check.
_ATTEMPT = """
local wait = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i + 1]) then
    local left = redis.call('PTTL', key)
    if left < 0 then left = tonumber(ARGV[1]) end
    if left > wait then wait = left end
  end
end
if wait > 0 then return wait end
for _, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 0
"""

# KEYS[1..ARGV[1]]: deleted; the rest: one lower, if they still exist (never a count without its expiry).
_SUCCEEDED = """
for i, key in ipairs(KEYS) do
  if i <= tonumber(ARGV[1]) then
    redis.call('DEL', key)
  elseif redis.call('EXISTS', key) == 1 then
    redis.call('DECR', key)
  end
end
return 0
"""


class _RedisCounters:
    """The counts in Redis, shared by every node: one round trip per attempt, one more after a right password."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self._attempt = self.client.register_script(_ATTEMPT)
        self._succeeded = self.client.register_script(_SUCCEEDED)

    def attempt(self, limits: list[tuple[str, int]], window: float) -> float:
        if not limits:
            return 0.0
        keys = [key for key, _limit in limits]
        return int(self._attempt(keys=keys, args=[max(1, int(window * 1000)), *(limit for _key, limit in limits)])) / 1000

    def succeeded(self, clear: list[str], uncount: list[str]) -> None:
        if clear or uncount:
            self._succeeded(keys=[*clear, *uncount], args=[len(clear)])


_LOCAL = _LocalCounters()
_REDIS: dict[str, _RedisCounters] = {}


def _counters() -> _LocalCounters | _RedisCounters:
    if not settings.REDIS_URL:
        return _LOCAL
    counters = _REDIS.get(settings.REDIS_URL)
    if counters is None:
        counters = _REDIS[settings.REDIS_URL] = _RedisCounters(settings.REDIS_URL)
    return counters


def _unreachable(exc: Exception) -> None:
    # Fail open: a Redis outage must not lock every customer out; it is one warning line, never a traceback.
    logger.warning("sign-in throttle: Redis unreachable, attempt not throttled (%s)", exc)


def attempt(username: str | None, request: HttpRequest) -> int:
    """Ask before checking a password. 0: go ahead (the attempt is counted against its username and its address as
    a failure until ``succeeded``); otherwise the seconds until it may be made (nothing counted)."""
    try:
        wait = _counters().attempt(_limits(username, client_address(request)), settings.SIGN_IN_FAILURE_WINDOW_SECONDS)
    except redis.exceptions.RedisError as exc:
        _unreachable(exc)
        return 0
    return math.ceil(wait) if wait > 0 else 0


def succeeded(username: str, request: HttpRequest) -> None:
    """The right password: that username's failures are forgotten, and this attempt no longer counts against its
    address (the address's earlier failures still do)."""
    keys = _limit_keys(username, client_address(request))
    try:
        _counters().succeeded([key for kind, key in keys if kind == "user"], [key for kind, key in keys if kind == "ip"])
    except redis.exceptions.RedisError as exc:
        _unreachable(exc)


def too_many_attempts_message(seconds: int) -> str:
    return ngettext(
        "Too many failed sign-in attempts. Try again in %(seconds)d second.",
        "Too many failed sign-in attempts. Try again in %(seconds)d seconds.",
        seconds,
    ) % {"seconds": seconds}


class ThrottledAuthenticationMixin:
    """For Django's authentication forms: the throttle is asked before the password is checked, a wrong password
    stays counted, and a blocked attempt is a form error (``code="throttled"``) with ``retry_after`` set."""

    retry_after: int = 0

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        if username is None or not self.cleaned_data.get("password"):
            return super().clean()  # a field is missing: no password is checked, nothing to count
        self.retry_after = attempt(username, self.request)
        if self.retry_after:
            raise forms.ValidationError(too_many_attempts_message(self.retry_after), code="throttled")
        cleaned = super().clean()  # raises for a wrong password: the attempt stays counted
        succeeded(username, self.request)
        return cleaned


class ThrottledAuthenticationForm(ThrottledAuthenticationMixin, AuthenticationForm):
    """The sign-in page's form."""


class ThrottledAdminAuthenticationForm(ThrottledAuthenticationMixin, AdminAuthenticationForm):
    """The admin's sign-in form: the same counts, so the admin page is no way around them."""


def as_throttled_response(response: HttpResponse) -> HttpResponse:
    """A sign-in page re-rendered for a blocked attempt becomes 429 with ``Retry-After``."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    wait = getattr(form, "retry_after", 0)
    if wait:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response


class SignInView(LoginView):
    """``/accounts/login/``: Django's sign-in page, throttled (429 + ``Retry-After``, the form shows why)."""

    form_class = ThrottledAuthenticationForm

    def form_invalid(self, form: forms.Form) -> HttpResponse:
        return as_throttled_response(super().form_invalid(form))


def admin_sign_in(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    """``/admin/login/``: the admin's own page (its ``login_form`` set to ``ThrottledAdminAuthenticationForm`` in
    chatsite/urls.py), 429 when blocked."""
    from django.contrib import admin

    return as_throttled_response(admin.site.login(request, **kwargs))
