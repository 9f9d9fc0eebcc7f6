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
every chat and console action calls ``conversations.access.ensure_may_act`` inside its own transaction — one SELECT that re-reads what
the handshake proved (the user active, and staff for the console; the session still there with the password's
auth hash, or the token's ``ver`` still current) — and a failed check closes the socket exactly as the event would.
"""

from __future__ import annotations

import logging
from importlib import import_module

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone
from django.utils.crypto import salted_hmac

from conversations import groups, protocol, revocation_listener
from conversations.models import TokenGeneration

log = logging.getLogger(__name__)

# What the ``error`` frame before close 4001 says, by its ``reason`` (the names: conversations/protocol/errors.py).
DETAILS = {
    protocol.REVOKED_LOGOUT: "You signed out (in this or another window).",
    protocol.REVOKED_DEACTIVATED: "Your account was deactivated.",
    protocol.REVOKED_STAFF_REMOVED: "Your staff access was removed.",
    protocol.REVOKED_PASSWORD_CHANGED: "Your password was changed; sign in again with the new one.",
    protocol.REVOKED_SIGNED_OUT_EVERYWHERE: "You were signed out everywhere.",
    protocol.REVOKED_SITE_CLOSED: "The chat is closed on this website.",
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
