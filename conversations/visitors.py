"""Who chats in the widget (docs/widget.md): anonymous visitors and the host site's verified customers, each bound to
one ``Site`` by a server-issued token.

How a widget socket gets its identity, step by step:

1. The frame page (``/widget/<slug>/``) is served only for an enabled site, to a page whose origin the browser
   names (``Referer``) and the site lists; its CSP ``frame-ancestors`` names the same origins, so no browser shows it
   anywhere else. It carries an **embed ticket**: the site and that host origin, signed, short-lived.
2. The frame's script exchanges the ticket (with the visitor token it kept, the host page's URL, and the host
   site's signed identity if the customer is signed in there) for a **visitor token** (``POST
   /widget/<slug>/visitor/``): the same visitor again while their token is valid, else a new one (new visitors are
   counted per address, cluster-wide). A signed identity that does not verify is refused; the visitor stays
   anonymous.
3. The socket offers the token as a WebSocket subprotocol (``visitor.<token>``; never in a URL, so never in a log),
   and every handshake re-reads the site: off, or the host origin no longer listed, and the socket is refused.

Tokens are HS256 JWTs signed with ``SECRET_KEY``; their ``typ`` keeps a visitor token, an embed ticket and an API
access token (conversations/auth.py) from standing in for one another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from chatsite.sign_in import normalised_address
from conversations import identity_signing, protocol
from conversations.models import Site, SiteCustomer
from conversations.window_counts import count_within, window_key

ALGORITHM = "HS256"
TICKET = "widget-embed"
VISITOR = "widget-visitor"
#: The visitor's id in ``Conversation.anonymous_session_key``: never a Django session key (those have no "-").
VISITOR_KEY_PREFIX = "visitor-"


class Refused(Exception):
    """A ticket, token or identity that does not hold, with a reason fit to show the client."""


@dataclass(frozen=True)
class Visitor:
    """Where a widget requester chats from: what ``access.Requester`` carries for them."""

    site_id: int
    origin: str  # the host page's origin, as the frame page's request named it and the site allowed
    page_url: str = ""  # the host page they were last on (shown in the console)
    address: str = ""  # their network address, as per-address limits count it (an IPv6 client by its /64)


@dataclass(frozen=True)
class VisitorToken:
    """What a verified visitor token says: the site, the host origin, the visitor's key or customer's user id."""

    visitor: Visitor
    session_key: str = ""  # an anonymous visitor's key ("visitor-<hex>")
    user_id: int | None = None  # a verified customer's account


# --- tokens ---------------------------------------------------------------------------------------------------------
def _encode(claims: dict, ttl: int) -> str:
    now = int(time.time())
    return jwt.encode({**claims, "iat": now, "exp": now + ttl}, settings.SECRET_KEY, algorithm=ALGORITHM)


def _decode(token: str, typ: str) -> dict:
    try:
        claims = jwt.decode(token, settings.SECRET_KEY, algorithms=[ALGORITHM], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError:
        raise Refused("expired") from None
    except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError, RecursionError):
        raise Refused("invalid") from None
    if not isinstance(claims, dict) or claims.get("typ") != typ or not isinstance(claims.get("site"), int):
        raise Refused("invalid")
    return claims


def embed_ticket(site: Site, origin: str) -> str:
    """The frame page's proof that it was served to ``origin``, a page the site allows."""
    return _encode({"typ": TICKET, "site": site.pk, "org": origin}, settings.WIDGET_EMBED_TICKET_SECONDS)


def read_ticket(ticket: str, site: Site) -> str:
    """The host origin an embed ticket of ``site`` names, if the site still allows it; ``Refused`` otherwise."""
    claims = _decode(ticket, TICKET)
    origin = claims.get("org")
    if claims["site"] != site.pk or not isinstance(origin, str) or not site.allows_origin(origin):
        raise Refused("invalid")
    return origin


def visitor_token(token: VisitorToken) -> str:
    """A signed visitor token (``WIDGET_VISITOR_TOKEN_DAYS``) for a visitor or a verified customer."""
    visitor = token.visitor
    claims = {"typ": VISITOR, "site": visitor.site_id, "org": visitor.origin, "page": visitor.page_url}
    if token.user_id is not None:
        claims["uid"] = token.user_id
    else:
        claims["sub"] = token.session_key
    return _encode(claims, settings.WIDGET_VISITOR_TOKEN_DAYS * 86400)


def read_visitor_token(token: str, address: str = "") -> VisitorToken:
    """What a visitor token says, checked against its signature and expiry only (``Refused`` otherwise); the site
    and the account are checked by ``resolve``."""
    claims = _decode(token, VISITOR)
    origin, page = claims.get("org"), claims.get("page", "")
    uid, sub = claims.get("uid"), claims.get("sub")
    if not isinstance(origin, str) or not isinstance(page, str):
        raise Refused("invalid")
    visitor = Visitor(site_id=claims["site"], origin=origin, page_url=page, address=address)
    if isinstance(uid, int) and not isinstance(uid, bool):
        return VisitorToken(visitor, user_id=uid)
    if isinstance(sub, str) and sub.startswith(VISITOR_KEY_PREFIX) and len(sub) <= 64:
        return VisitorToken(visitor, session_key=sub)
    raise Refused("invalid")


def resolve(token: str, address: str = "") -> VisitorToken:
    """A visitor token checked as a handshake must: signed and unexpired, its site on and still allowing its host
    origin, and a verified customer's account active and that site's. One query (two for a customer)."""
    found = read_visitor_token(token, address)
    site = Site.objects.filter(pk=found.visitor.site_id).first()
    if site is None or not site.allows_origin(found.visitor.origin):
        raise Refused("site")
    if found.user_id is not None and not SiteCustomer.objects.filter(
        site=site, user_id=found.user_id, user__is_active=True
    ).exists():
        raise Refused("customer")
    return found


def subprotocol_token(scope: dict) -> str | None:
    """The visitor token a widget socket offers as its ``visitor.<token>`` subprotocol, if any."""
    for offered in scope.get("subprotocols") or ():
        if isinstance(offered, str) and offered.startswith(protocol.VISITOR_TOKEN_SUBPROTOCOL_PREFIX):
            return offered.removeprefix(protocol.VISITOR_TOKEN_SUBPROTOCOL_PREFIX)
    return None


def scope_address(scope: dict) -> str:
    """A socket's network address as per-address limits count it (Daphne's ``--proxy-headers`` behind a proxy)."""
    client = scope.get("client") or ("",)
    return normalised_address(str(client[0] or ""))


# --- the host site's signed-in customer ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """The host site's signed-in customer as its page passes them, ``signature`` made by
    ``identity_signing.sign`` with the site's identity secret (docs/widget.md "Verified customers")."""

    id: str
    name: str
    email: str
    timestamp: int
    signature: str

    @classmethod
    def parse(cls, data: object) -> Identity:
        """The identity in a request's JSON; ``Refused`` for anything else than the documented fields."""
        if not isinstance(data, dict):
            raise Refused("identity")
        fields = {name: data.get(name, "") for name in ("id", "name", "email", "signature")}
        stamp = data.get("timestamp")
        if isinstance(stamp, str) and stamp.isdigit() and len(stamp) <= 12:
            stamp = int(stamp)
        if not all(isinstance(v, str) for v in fields.values()) or not isinstance(stamp, int) or isinstance(stamp, bool):
            raise Refused("identity")
        if not fields["id"] or len(fields["id"]) > 200 or len(fields["name"]) > 150 or len(fields["email"]) > 254:
            raise Refused("identity")
        if any("\n" in value for value in fields.values()):
            raise Refused("identity")
        return cls(timestamp=stamp, **fields)


def verify_identity(site: Site, identity: Identity, now: float | None = None) -> int:
    """The account of the customer ``identity`` names, made on their first visit and kept up to date, once its
    signature holds and it is at most ``WIDGET_IDENTITY_MAX_AGE_SECONDS`` old; ``Refused`` otherwise (a forged,
    stale or foreign identity, or a customer staff deactivated)."""
    now = time.time() if now is None else now
    expected = identity_signing.sign(site.identity_secret, identity.timestamp, identity.id, identity.email, identity.name)
    if not hmac.compare_digest(expected.encode(), identity.signature.lower().encode()):  # str: ASCII only
        raise Refused("identity")
    if not (now - settings.WIDGET_IDENTITY_MAX_AGE_SECONDS <= identity.timestamp <= now + 300):
        raise Refused("identity_expired")
    try:
        return _customer_account(site, identity)
    except IntegrityError:  # the same customer's first visit raced in from another tab: theirs won
        return _customer_account(site, identity)


def _customer_account(site: Site, identity: Identity) -> int:
    users = get_user_model()
    with transaction.atomic():
        customer = SiteCustomer.objects.select_related("user").filter(site=site, external_id=identity.id).first()
        if customer is None:
            digest = hashlib.sha256(identity.id.encode()).hexdigest()[:24]
            user = users(username=f"site-{site.pk}-{digest}", email=identity.email, first_name=identity.name[:150])
            user.set_unusable_password()
            user.save()
            SiteCustomer.objects.create(site=site, external_id=identity.id, user=user)
            return user.pk
        user = customer.user
        if not user.is_active:
            raise Refused("customer")
        if (user.email, user.first_name) != (identity.email, identity.name[:150]):
            user.email, user.first_name = identity.email, identity.name[:150]
            user.save(update_fields=["email", "first_name"])
        customer.save(update_fields=["last_seen_at"])
        return user.pk


# --- issuing ---------------------------------------------------------------------------------------------------------
def new_visitor_key() -> str:
    return VISITOR_KEY_PREFIX + secrets.token_hex(16)


async def admit_new_visitor(address: str) -> bool:
    """Count a new anonymous visitor against their address (``WIDGET_NEW_VISITORS_PER_IP_PER_HOUR``, every node)."""
    limit = settings.WIDGET_NEW_VISITORS_PER_IP_PER_HOUR
    if limit <= 0:
        return True
    return await count_within([window_key("widget-new", 3600, address)], [limit], 3600)


async def admit_question(visitor: Visitor, frame_id: str) -> None:
    """Count a widget question against its address (``WIDGET_QUESTIONS_PER_IP_PER_MINUTE``, every node): one address
    cannot get round the per-visitor limit by being many visitors. ``RATE_LIMITED`` past it (nothing saved)."""
    limit = settings.WIDGET_QUESTIONS_PER_IP_PER_MINUTE
    if limit <= 0 or await count_within([window_key("widget-ask", 60, visitor.address)], [limit], 60):
        return
    raise protocol.ProtocolError(
        protocol.RATE_LIMITED,
        f"More than {limit} questions in a minute from your network. The question was NOT saved; send it again "
        "(same id) in a minute.",
        id=frame_id,
        retry_after=60,
    )
