"""Calling a tool: one HTTP request to the company's API for one customer, with every way it can fail named.

A call goes through five gates, each refusing before the next runs, so nothing the question says can make the
assistant reach another address, path or customer:

1. **Arguments.** Every declared parameter must be present and match its type and its pattern (whole value), else
   ``invalid_argument`` and no request is made. Undeclared arguments are dropped.
2. **URL.** Values are percent-encoded with nothing kept (``quote(safe="")``), so a value cannot add a path
   segment, a query or a host; a value that would be a ``.``/``..`` segment is refused. The URL must keep the base
   URL's scheme, host, port and path prefix (``refused_address`` otherwise).
3. **Address.** The host is resolved here (``loop.getaddrinfo``) and every address it has must be public: private,
   loopback, link-local, reserved, multicast and unspecified ones, and any other that is not globally reachable
   (carrier-grade NAT's 100.64.0.0/10), are refused unless ``TOOLS_ALLOW_PRIVATE_ADDRESSES`` (the demo API on
   127.0.0.1 needs it). The request then connects to the address that was checked: the URL names the IP, while
   the ``Host`` header and the TLS server name (SNI and the certificate check) name the host. A DNS answer that
   changes between the check and the connection (rebinding) therefore cannot send the request elsewhere. The
   addresses are tried in the resolver's order, the next when connecting to one fails (``localhost`` may give
   ``::1`` first to a server listening on 127.0.0.1 only).
4. **Request.** The signed identity headers (``signing.py``) and the tool's configured headers; no redirect is
   followed, no proxy or ``.netrc`` is taken from the environment, and one deadline (``timeout_seconds``) covers
   resolving, connecting, sending and reading. One client per call: connections are never pooled, because a
   pooled connection made for one host's TLS name could otherwise serve another host on the same address.
5. **Response.** A 3xx is ``redirect`` (never followed, wherever it points), 4xx/5xx ``http_error``; the body is
   read as it streams and more than ``TOOLS_MAX_RESPONSE_BYTES`` is ``too_large``; a body that is not a JSON
   object (or comes compressed: ``identity`` is asked for) is ``malformed``. Only the tool's visible fields leave.

``ToolResult.request`` is the request with every configured header value and the signature replaced by
``•••``: what traces, the admin's "Try it" and logs show. Secrets never appear in it, in ``repr(spec)`` or in logs.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, quote, urlencode, urlsplit

import httpx2
from django.conf import settings

from knowledge.tools import signing
from knowledge.tools.signing import Identity

logger = logging.getLogger(__name__)

OUTCOMES = (
    "ok", "invalid_argument", "refused_address", "timeout", "http_error", "redirect", "malformed", "too_large",
    "unreachable",
)  # fmt: skip
METHODS = ("GET", "POST")
REDACTED = "•••"
USER_AGENT = "support-assistant-tools/1"
#: What a value must be before its own pattern is tried: the type's shape, and a length cap that also bounds the
#: work a staff-written pattern can do on it.
TYPE_PATTERNS = {
    "string": re.compile(r"[^\x00-\x1f\x7f]{1,200}"),
    "integer": re.compile(r"-?[0-9]{1,18}"),
}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_HEADER_VALUE = re.compile(r"[\x20-\x7e]*")
#: Headers the call itself sets: a configured header may not replace them.
_RESERVED_HEADERS = {
    name.lower() for name in (
        "Host", "Content-Type", "Content-Length", "Accept-Encoding", "Transfer-Encoding", "Connection",
        signing.IDENTITY_HEADER, signing.TIMESTAMP_HEADER, signing.SIGNATURE_HEADER,
    )
}  # fmt: skip


@dataclass(frozen=True)
class ParameterSpec:
    """One value the tool needs from the question, e.g. an order number: ``string`` or ``integer``, and a regular
    expression the whole value must match (``pattern``; empty: the type's shape alone)."""

    name: str
    type: str = "string"
    pattern: str = ""
    description: str = ""

    def accepts(self, value: str) -> bool:
        shape = TYPE_PATTERNS[self.type]
        return shape.fullmatch(value) is not None and (not self.pattern or re.fullmatch(self.pattern, value) is not None)


@dataclass(frozen=True)
class ToolSpec:
    """Everything a call needs, plain data: the ``Tool`` model converts itself to one.

    Constructing it checks the configuration (``ValueError`` with the reason, for a form to show): a method this
    module sends, an http(s) base URL without credentials, query or fragment, a template starting with ``/`` whose
    placeholders are all declared parameters, known types, patterns that compile, a secret, a positive timeout,
    and configured headers in printable ASCII that do not replace one the call sets. ``headers`` and ``secret`` are left out of
    ``repr`` so a spec in a log line or a traceback shows no secret.
    """

    name: str
    method: str
    base_url: str
    path_template: str
    parameters: Sequence[ParameterSpec] = ()
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    secret: str = field(default="", repr=False)
    timeout_seconds: float = 5.0
    visible_fields: Sequence[str] = ()

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ValueError(f"Tool {self.name!r}: {problem}")

    def _problem(self) -> str:
        if self.method not in METHODS:
            return f"method must be one of {', '.join(METHODS)}"
        base = urlsplit(self.base_url)
        if base.scheme not in _DEFAULT_PORTS or not base.hostname or not self.base_url.isascii():
            return "the base URL must be http:// or https:// with a host, in ASCII (punycode for other scripts)"
        if base.username is not None or base.password is not None or base.query or base.fragment:
            return "the base URL may not carry credentials, a query or a fragment (credentials go in headers)"
        try:
            base.port  # noqa: B018 - urlsplit checks the port only when it is read
        except ValueError:
            return "the base URL's port is not a port number"
        if not self.path_template.startswith("/") or "#" in self.path_template:
            return "the URL template must start with / and have no fragment"
        if {".", ".."} & set(self.path_template.split("?")[0].split("/")):
            return "the URL template may not contain . or .. segments"
        names = [parameter.name for parameter in self.parameters]
        if len(set(names)) != len(names):
            return "parameter names must be unique"
        for parameter in self.parameters:
            if parameter.type not in TYPE_PATTERNS:
                return f"parameter {parameter.name!r}: type must be one of {', '.join(TYPE_PATTERNS)}"
            try:
                re.compile(parameter.pattern)
            except re.error as exc:
                return f"parameter {parameter.name!r}: the pattern does not compile ({exc})"
        undeclared = set(_PLACEHOLDER.findall(self.path_template)) - set(names)
        if undeclared:
            return f"the URL template names undeclared parameters: {', '.join(sorted(undeclared))}"
        if not self.secret:
            return "a secret is needed to sign the customer's identity"
        if not self.timeout_seconds > 0:
            return "the timeout must be positive"
        for name, value in self.headers.items():
            if name.lower() in _RESERVED_HEADERS:
                return f"header {name!r} is set by the call itself"
            if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
                return f"header {name!r}: a name of letters, digits and -, and a value of printable ASCII"
        return ""


@dataclass(frozen=True)
class ToolResult:
    """How a call ended (``outcome``, one of ``OUTCOMES``), the visible fields of the answer when it is ``ok``,
    the HTTP status when a response came, and the redacted request for traces."""

    ok: bool
    outcome: str
    fields: dict[str, Any]
    status: int | None
    latency_ms: float
    request: dict[str, Any]


class _Stop(Exception):
    """A gate refused, or the response is not usable: ends the call with ``outcome``."""

    def __init__(self, outcome: str, status: int | None = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.status = status


async def call(spec: ToolSpec, arguments: Mapping[str, Any], identity: Identity) -> ToolResult:
    """Call ``spec`` with the question's ``arguments`` on behalf of ``identity``; never raises for a failure of
    the API or of the arguments: the outcome says what happened."""
    started = time.perf_counter()
    request: dict[str, Any] = {"method": spec.method, "url": None, "headers": {}}
    status: int | None = None
    fields: dict[str, Any] = {}
    try:
        values = _validated(spec, arguments)
        url = _url(spec, values)
        request["url"] = url.geturl()
        sent = _json_arguments(spec, values)
        body = json.dumps(sent, separators=(",", ":"), ensure_ascii=False).encode() if sent is not None else b""
        if sent is not None:
            request["body"] = sent
        path_with_query = httpx2.URL(url.geturl()).raw_path.decode("ascii")
        headers = {
            **spec.headers,
            **signing.signed_headers(spec.secret, spec.method, path_with_query, body, identity),
        }
        request["headers"] = _redacted(spec, headers)
        async with asyncio.timeout(spec.timeout_seconds):
            addresses = await _checked_addresses(url)
            request["addresses"] = addresses
            status, payload = await _send_to_first(spec, url, addresses, headers, body)
        fields = _visible(payload, spec.visible_fields)
        outcome = "ok"
    except _Stop as stop:
        outcome, status = stop.outcome, stop.status
    except (TimeoutError, httpx2.TimeoutException):
        outcome = "timeout"
    except httpx2.ProtocolError:
        outcome = "malformed"  # it answered, but not in HTTP
    except httpx2.TransportError:
        outcome = "unreachable"  # refused, reset, or a TLS certificate that does not name the host
    latency_ms = (time.perf_counter() - started) * 1000
    log = logger.info if outcome == "ok" else logger.warning
    log("tool %r: %s (HTTP status %s) in %.0f ms", spec.name, outcome, status, latency_ms)
    return ToolResult(outcome == "ok", outcome, fields, status, latency_ms, request)


def _validated(spec: ToolSpec, arguments: Mapping[str, Any]) -> dict[str, str]:
    """The declared parameters' values, each checked; an integer may come as a JSON number (function calling)."""
    values = {}
    for parameter in spec.parameters:
        value = arguments.get(parameter.name)
        if parameter.type == "integer" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not parameter.accepts(value):
            raise _Stop("invalid_argument")
        values[parameter.name] = value
    return values


def _url(spec: ToolSpec, values: dict[str, str]) -> SplitResult:
    """The template filled with encoded values under the base URL; a GET's parameters that the template does not
    name go in the query string (a POST sends them all in its body)."""
    in_path = set(_PLACEHOLDER.findall(spec.path_template))
    path = _PLACEHOLDER.sub(lambda match: quote(values[match[1]], safe=""), spec.path_template)
    if {".", ".."} & set(path.split("?")[0].split("/")):
        raise _Stop("invalid_argument")  # the template has none (ToolSpec checks): a value made it
    rest = {name: value for name, value in values.items() if name not in in_path}
    if spec.method == "GET" and rest:
        path += ("&" if "?" in path else "?") + urlencode(rest, quote_via=quote, safe="")
    url = urlsplit(spec.base_url.rstrip("/") + path)
    base = urlsplit(spec.base_url)
    prefix = base.path.rstrip("/") + "/"
    if (
        (url.scheme, url.hostname, _port(url)) != (base.scheme, base.hostname, _port(base))
        or url.username is not None
        or not url.path.startswith(prefix)
    ):
        raise _Stop("refused_address")
    return url


def _port(url: SplitResult) -> int:
    return url.port or _DEFAULT_PORTS[url.scheme]


def _json_arguments(spec: ToolSpec, values: dict[str, str]) -> dict[str, str | int] | None:
    """What a POST sends as its JSON body: every argument, integers as numbers. A GET sends no body (None)."""
    if spec.method != "POST":
        return None
    types = {parameter.name: parameter.type for parameter in spec.parameters}
    return {name: int(value) if types[name] == "integer" else value for name, value in values.items()}


def _redacted(spec: ToolSpec, headers: Mapping[str, str]) -> dict[str, str]:
    secret_names = {name.lower() for name in spec.headers} | {signing.SIGNATURE_HEADER.lower()}
    return {name: REDACTED if name.lower() in secret_names else value for name, value in headers.items()}


async def _checked_addresses(url: SplitResult) -> list[str]:
    """The addresses to connect to, once every address the host resolves to has passed."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(url.hostname, _port(url), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _Stop("unreachable") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    if not addresses:
        raise _Stop("unreachable")
    if not settings.TOOLS_ALLOW_PRIVATE_ADDRESSES and not all(map(is_public_address, addresses)):
        raise _Stop("refused_address")
    return [str(address) for address in addresses]


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a tool may reach ``address`` when private addresses are not allowed. An IPv4 address written as
    IPv6 (``::ffff:127.0.0.1``) is judged as the IPv4 address it is: Python 3.11 judges the IPv6 form alone."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_private or address.is_loopback or address.is_link_local or address.is_reserved
        or address.is_multicast or address.is_unspecified
    )  # fmt: skip


async def _send_to_first(
    spec: ToolSpec, url: SplitResult, addresses: list[str], headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, Any]]:
    """The first address that takes the connection answers; a refusal after it connected is final."""
    for address in addresses[:-1]:
        try:
            return await _send(spec, url, address, headers, body)
        except httpx2.ConnectError:
            continue
    return await _send(spec, url, addresses[-1], headers, body)


async def _send(
    spec: ToolSpec, url: SplitResult, address: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, Any]]:
    """The request to ``address``, naming ``url``'s host; the status and the JSON object it answered."""
    literal = f"[{address}]" if ":" in address else address
    pinned = url._replace(netloc=f"{literal}:{_port(url)}").geturl()
    wire_headers = {
        **headers,
        "Host": url.netloc,
        "Accept": "application/json",
        "Accept-Encoding": "identity",
        "User-Agent": USER_AGENT,
    }
    if body:
        wire_headers["Content-Type"] = "application/json"
    extensions = {"sni_hostname": url.hostname} if url.scheme == "https" else {}
    async with (
        httpx2.AsyncClient(
            follow_redirects=False, trust_env=False, verify=_tls_context(), timeout=spec.timeout_seconds
        ) as client,
        client.stream(spec.method, pinned, headers=wire_headers, content=body, extensions=extensions) as response,
    ):
        status = response.status_code
        if 300 <= status < 400:
            raise _Stop("redirect", status)
        if status >= 400 or status < 200:
            raise _Stop("http_error", status)
        return status, await _json_object(response)


async def _json_object(response: httpx2.Response) -> dict[str, Any]:
    """The body as a JSON object, read no further than the cap."""
    cap = settings.TOOLS_MAX_RESPONSE_BYTES
    status = response.status_code
    declared = response.headers.get("Content-Length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > cap:
        raise _Stop("too_large", status)
    if response.headers.get("Content-Encoding", "identity").lower() != "identity":
        raise _Stop("malformed", status)
    received = bytearray()
    async for chunk in response.aiter_raw():
        received += chunk
        if len(received) > cap:
            raise _Stop("too_large", status)
    try:
        payload = json.loads(received)
    except (ValueError, RecursionError):
        raise _Stop("malformed", status) from None
    if not isinstance(payload, dict):
        raise _Stop("malformed", status)
    return payload


def _visible(payload: dict[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """The values at the dotted ``paths`` that the response has (``"delivery.eta"``); the others are left out."""
    fields = {}
    for path in paths:
        value: Any = payload
        for key in path.split("."):
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            fields[path] = value
    return fields


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context for every call: building one reads the CA store (tens of ms)."""
    return httpx2.create_ssl_context()
