"""Revocation: when a user's access ends, the sockets it concerns close within a second, on every node, whichever
process made the change; and a socket whose close never came cannot act.

Every chat and console socket of a signed-in user joins the group ``user.<id>`` (``conversations.groups.user``).
The one action that publishes is ``revoke_user_sockets``, which the receivers below call: ``user.revoked`` to that
group through the channel layer (Redis across nodes) once the change commits, and the same event through
PostgreSQL's NOTIFY inside the change's transaction (``conversations/revocation_listener.py``: each Daphne process
listens and hands it to the user's sockets on that node), so a change made by another process — ``manage.py
shell``, a sync job — reaches the sockets with the in-memory layer too. Each socket then sends an ``error`` frame
whose ``reason`` says why and closes with ``CLOSE_REVOKED`` (4001, docs/protocol.md); getting the event twice (both
ways) closes it once.

Which sockets close — exactly the ones whose credential a new handshake would refuse:

============================  ==========================================  =========================================
trigger                       noticed by                                  sockets closed
============================  ==========================================  =========================================
logout                        ``user_logged_out``                         those signed in with that session (one
                                                                          logout ends one session, as in Django;
                                                                          token sockets and other browsers stay)
deactivation                  the user row saved with ``is_active`` off   all (chat and console)
loss of ``is_staff``          the user row saved with ``is_staff`` off    console sockets only: chat sockets stay,
                                                                          the user is still an active customer
password change               the user row saved with a new hash          all, and every token issued before (its
                                                                          ``ver`` claim, ``token_version``)
sign out everywhere           ``POST /api/token/revoke/``                 all; every token and every session
============================  ==========================================  =========================================

A password change closes the sockets of the session that made it too (a save does not say which session that
was); its page says why, and a reload finds the session still signed in (Django keeps it:
``update_session_auth_hash``).

An event lost on both ways (the listener reconnecting after a PostgreSQL outage while Redis dropped the pub/sub
message; a user row changed by a bulk ``UPDATE``, which sends no signal at all) cannot leave a revoked user acting:
every chat and console action calls ``ensure_may_act`` inside its own transaction — one SELECT that re-reads what
the handshake proved (the user active, and staff for the console; the session still there with the password's
auth hash, or the token's ``ver`` still current) — and a failed check closes the socket exactly as the event would.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models import F, Subquery
from django.db.models.functions import Coalesce, Now
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from conversations import groups, protocol, revocation_listener
from conversations.models import TokenGeneration

if TYPE_CHECKING:
    from conversations.access import Requester

log = logging.getLogger(__name__)

# What the ``error`` frame before close 4001 says, by its ``reason`` (the names: conversations/protocol/errors.py).
DETAILS = {
    protocol.REVOKED_LOGOUT: "You signed out (in this or another window).",
    protocol.REVOKED_DEACTIVATED: "Your account was deactivated.",
    protocol.REVOKED_STAFF_REMOVED: "Your staff access was removed.",
    protocol.REVOKED_PASSWORD_CHANGED: "Your password was changed; sign in again with the new one.",
    protocol.REVOKED_SIGNED_OUT_EVERYWHERE: "You were signed out everywhere.",
}


# --- the action --------------------------------------------------------------------------------------------
def revocation_event(reason: str, *, session_key: str = "", console_only: bool = False) -> dict:
    assert reason in protocol.REVOKED_REASONS, reason
    return {"type": groups.USER_REVOKED, "reason": reason, "session": session_key, "console_only": console_only}


async def arevoke_user_sockets(user_id: int, reason: str, *, session_key: str = "", console_only: bool = False) -> None:
    """Close the user's sockets the revocation concerns, on every node: all of them, only the console ones
    (``console_only``), or only those signed in with one session (``session_key``)."""
    event = revocation_event(reason, session_key=session_key, console_only=console_only)
    try:
        await get_channel_layer().group_send(groups.user(user_id), event)
    except Exception as exc:  # noqa: BLE001 - never fail the logout or the save; the checks below still hold
        log.warning("revocation of user %s (%s) not published: %s: %s", user_id, reason, type(exc).__name__, exc)


def revoke_user_sockets(user, reason: str, *, session_key: str = "", console_only: bool = False) -> None:
    """Close the sockets the revocation concerns, on every node, from synchronous code: through PostgreSQL's NOTIFY
    in the current transaction (every node's listener gets it when it commits, whichever process this is), and
    through the channel layer once it commits (at once outside a transaction), so a socket closed by either
    reconnects into a database that already refuses it."""
    user_id = user.pk
    revocation_listener.notify(user_id, revocation_event(reason, session_key=session_key, console_only=console_only))

    def publish() -> None:
        async_to_sync(arevoke_user_sockets)(user_id, reason, session_key=session_key, console_only=console_only)

    transaction.on_commit(publish)


def concerns(event: dict, socket_kind: str, signed_in_with: str) -> bool:
    """Whether a revocation event closes a socket of that kind (``chat``/``console``) signed in with
    ``signed_in_with`` (a session key, or ``"token"``)."""
    if event.get("console_only") and socket_kind != "console":
        return False
    session = event.get("session")
    return not session or session == signed_in_with


# --- every action: may this socket's user still act? -------------------------------------------------------
class AccessRevoked(Exception):
    """The socket's user may no longer act (``ensure_may_act``): the consumer closes the socket as ``user.revoked``
    does, with the ``reason`` a new handshake's refusal would have."""

    def __init__(self, reason: str) -> None:
        assert reason in protocol.REVOKED_REASONS, reason
        super().__init__(reason)
        self.reason = reason


def ensure_may_act(requester: Requester, *, staff: bool = False) -> None:
    """Raise ``AccessRevoked`` unless the requester may still act as their socket's handshake allowed: the user is
    active (and staff, with ``staff``); a socket signed in with a session still has that session, signed in as the
    user with their current password (Django's session auth hash); one signed in with a token still has its ``ver``
    (no password change, no "sign out everywhere" since).

    Why every action calls it, in its own transaction: the close of a revoked socket can be lost (module docstring)
    and the socket must not act meanwhile. One SELECT (the user row, its token generation and the session row);
    nothing for an anonymous visitor (nothing to revoke)."""
    if requester.user_id is None:
        return
    sign_in = requester.sign_in
    users = get_user_model().objects.filter(pk=requester.user_id).annotate(
        generation_now=Coalesce("token_generation__generation", 0), everywhere_at=F("token_generation__revoked_at")
    )
    fields = ["is_active", "is_staff", "password", "generation_now", "everywhere_at"]
    sessions = _session_model()
    if sign_in is not None and sign_in.session_key and sessions is not None:
        alive = sessions.objects.filter(session_key=sign_in.session_key, expire_date__gt=Now())
        users = users.annotate(session_data=Subquery(alive.values("session_data")[:1]))
        fields.append("session_data")
    row = users.values(*fields).first()
    reason = _revoked_because(requester, row, staff)
    if reason is not None:
        raise AccessRevoked(reason)


def _revoked_because(requester: Requester, row: dict | None, staff: bool) -> str | None:
    """Why the requester may act no more (a ``REVOKED_*`` reason), or None."""
    if row is None or not row["is_active"]:
        return protocol.REVOKED_DEACTIVATED
    sign_in = requester.sign_in
    if sign_in is not None:
        if row["everywhere_at"] is not None and sign_in.at is not None and row["everywhere_at"] > sign_in.at:
            return protocol.REVOKED_SIGNED_OUT_EVERYWHERE
        user = get_user_model()(pk=requester.user_id, password=row["password"])
        if sign_in.token_version and not constant_time_compare(
            sign_in.token_version, token_version(user, row["generation_now"])
        ):
            return protocol.REVOKED_PASSWORD_CHANGED
        if sign_in.session_key:
            session = _session_data(sign_in.session_key, row.get("session_data"))
            if str(session.get(SESSION_KEY)) != str(requester.user_id):
                return protocol.REVOKED_LOGOUT  # the session ended (sign-out, expiry) or is someone else's now
            if not _session_hash_holds(session.get(HASH_SESSION_KEY), user):
                return protocol.REVOKED_PASSWORD_CHANGED
    if staff and not row["is_staff"]:
        return protocol.REVOKED_STAFF_REMOVED
    return None


def _session_store():
    return import_module(settings.SESSION_ENGINE).SessionStore


def _session_model():
    """The session table's model when sessions live in the database (``db``, ``cached_db``), else None."""
    store = _session_store()
    return store.get_model_class() if hasattr(store, "get_model_class") else None


def _session_data(session_key: str, stored: str | None) -> dict:
    """The session's contents: decoded from the row read with the user (database sessions), else loaded from the
    session store (``{}`` once it is gone)."""
    store = _session_store()
    if _session_model() is not None:
        return store().decode(stored) if stored else {}
    return store(session_key).load()


def _session_hash_holds(session_hash: object, user) -> bool:
    """Django's session verification (``django.contrib.auth.get_user``): the session's auth hash is the HMAC of the
    user's current password hash, with ``SECRET_KEY`` or one of ``SECRET_KEY_FALLBACKS``."""
    if not isinstance(session_hash, str) or not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    return any(constant_time_compare(session_hash, fallback) for fallback in user.get_session_auth_fallback_hash())


# --- tokens ------------------------------------------------------------------------------------------------
def token_version(user, generation: int) -> str:
    """The ``ver`` claim of the user's tokens: derived from the password hash (like Django's session auth hash)
    and the user's token generation, so a password change or a "sign out everywhere" invalidates every token
    issued before it."""
    value = f"{generation}:{user.password}"
    return salted_hmac("conversations.revocation.token_version", value, algorithm="sha256").hexdigest()[:32]


def token_generation(user) -> int:
    row = TokenGeneration.objects.filter(user_id=user.pk).values_list("generation", flat=True).first()
    return row or 0


def sign_out_everywhere(user) -> int:
    """Revoke every token of the user (generation + 1), end every session of theirs, close every socket of
    theirs on every node. Returns the new generation."""
    with transaction.atomic():
        row, _ = TokenGeneration.objects.select_for_update().get_or_create(user_id=user.pk)
        row.generation += 1
        row.revoked_at = timezone.now()
        row.save(update_fields=["generation", "revoked_at"])
        end_sessions(user.pk)
        revoke_user_sockets(user, protocol.REVOKED_SIGNED_OUT_EVERYWHERE)
    return row.generation


def end_sessions(user_id: int) -> int:
    """Delete every live session signed in as the user, when sessions are kept in the database (the ``db`` and
    ``cached_db`` engines; with others sessions cannot be listed and this does nothing). Returns how many."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if not hasattr(store, "get_model_class"):
        return 0
    model = store.get_model_class()
    doomed = [
        session.session_key
        for session in model.objects.filter(expire_date__gt=timezone.now()).iterator()
        if str(session.get_decoded().get(SESSION_KEY)) == str(user_id)
    ]
    for key in doomed:
        store(key).delete()
    return len(doomed)


# --- receivers ---------------------------------------------------------------------------------------------
WATCHED_FIELDS = ("is_active", "is_staff", "password")


@receiver(user_logged_out, dispatch_uid="conversations.revocation.logged_out")
def on_logged_out(sender, request, user, **kwargs) -> None:
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    if user is not None and session_key:
        revoke_user_sockets(user, protocol.REVOKED_LOGOUT, session_key=session_key)


@receiver(pre_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="conversations.revocation.before_user_save")
def before_user_save(sender, instance, update_fields=None, raw=False, **kwargs) -> None:
    """Remember what the row said before this save (one read, only when a watched field may change)."""
    if raw or instance.pk is None:
        return
    if update_fields is not None and not set(update_fields) & set(WATCHED_FIELDS):
        return  # e.g. last_login at every sign-in
    instance._revocation_before = sender.objects.filter(pk=instance.pk).values(*WATCHED_FIELDS).first()


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="conversations.revocation.after_user_save")
def after_user_save(sender, instance, created=False, raw=False, **kwargs) -> None:
    before = instance.__dict__.pop("_revocation_before", None)
    if raw or created or not before:
        return
    if before["is_active"] and not instance.is_active:
        revoke_user_sockets(instance, protocol.REVOKED_DEACTIVATED)
    elif before["password"] != instance.password:
        revoke_user_sockets(instance, protocol.REVOKED_PASSWORD_CHANGED)
    elif before["is_staff"] and not instance.is_staff:
        revoke_user_sockets(instance, protocol.REVOKED_STAFF_REMOVED, console_only=True)
