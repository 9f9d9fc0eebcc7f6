"""Who is asking, signed: the customer's identity as the company's API receives it with every tool call.

The identity comes from the server (the signed-in user or the session's visitor), never from the question, so a
customer cannot read another customer's order by typing its number: the API answers for the identity it verified,
not for whatever identifier the request names. Three headers carry it:

- ``X-Support-Identity``: ``{"user_id", "email", "name", "kind"}`` as compact JSON, base64url (with padding);
- ``X-Support-Timestamp``: unix seconds when the call was signed;
- ``X-Support-Signature``: hex HMAC-SHA256, keyed with the tool's secret, over
  ``"\\n".join([timestamp, METHOD, path_with_query, identity_header_value]) + "\\n"`` followed by the body bytes.

The path is the one on the wire (percent-encoded, with its query string), so the API signs what it received. The
timestamp bounds a replay to ``tolerance`` seconds; an API that must refuse even that keeps the signatures it saw
for that long. ``verify`` is what the receiving side runs (our demo API, the tests, the docs): it is kept short and
standard-library only so the documentation can show the same lines.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

IDENTITY_HEADER = "X-Support-Identity"
TIMESTAMP_HEADER = "X-Support-Timestamp"
SIGNATURE_HEADER = "X-Support-Signature"
KINDS = ("user", "visitor")


@dataclass(frozen=True)
class Identity:
    """The customer a tool call is made for: a signed-in ``user`` or an anonymous ``visitor`` of one session."""

    user_id: str
    email: str
    name: str
    kind: str


def encode_identity(identity: Identity) -> str:
    """The ``X-Support-Identity`` value: compact JSON (stable key order, so equal identities encode alike), base64url."""
    compact = json.dumps(asdict(identity), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return base64.urlsafe_b64encode(compact.encode()).decode("ascii")


def decode_identity(value: str) -> Identity | None:
    """The identity in a header value, or None when it is not one (wrong encoding, fields or types)."""
    try:
        data = json.loads(base64.urlsafe_b64decode(value.encode("ascii")))
        identity = Identity(**data)
    except (ValueError, TypeError, UnicodeError):
        return None
    fields = (identity.user_id, identity.email, identity.name, identity.kind)
    if not all(isinstance(field, str) for field in fields) or identity.kind not in KINDS:
        return None
    return identity


def sign(secret: str, timestamp: str, method: str, path_with_query: str, identity_header: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of one request; both sides compute it from the same six values."""
    message = "\n".join([timestamp, method.upper(), path_with_query, identity_header]).encode() + b"\n" + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str, method: str, path_with_query: str, body: bytes, identity: Identity, now: float | None = None
) -> dict[str, str]:
    """The three headers that tell the API who is asking, signed with the tool's secret."""
    timestamp = str(int(time.time() if now is None else now))
    identity_header = encode_identity(identity)
    return {
        IDENTITY_HEADER: identity_header,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, method, path_with_query, identity_header, body),
    }


def verify(
    secret: str,
    method: str,
    path_with_query: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    tolerance: int = 300,
) -> Identity | None:
    """The identity a request was signed for, or None: missing headers, a signature that does not match (compared
    in constant time), or a timestamp more than ``tolerance`` seconds from ``now``. ``headers`` may be any mapping
    with ``items()`` (a dict, ``http.server``'s message, Django's ``request.headers``): names are matched in any case.
    """
    received = {name.lower(): value for name, value in headers.items()}
    timestamp = received.get(TIMESTAMP_HEADER.lower(), "")
    identity_header = received.get(IDENTITY_HEADER.lower(), "")
    signature = received.get(SIGNATURE_HEADER.lower(), "")
    if not (timestamp.isascii() and timestamp.isdigit() and identity_header and signature):
        return None
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return None
    expected = sign(secret, timestamp, method, path_with_query, identity_header, body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return None
    return decode_identity(identity_header)
