"""What an answer costs PostgreSQL, counted by the server: at most five transactions on an open socket; and the
persistent connections' health check, sent only after a connection sat idle (chatsite/postgres/base.py)."""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, close_old_connections, connection

from bench.ws_client import DEMO_QUESTIONS
from tests.node_client import Client, get_token

pytestmark = pytest.mark.django_db(transaction=True)

ANSWERS = 50


def transactions_so_far() -> int:
    """Committed + rolled-back transactions of the test database so far, as the server counts them.

    Backends report their counts when idle, at the latest 10 s after their last transaction (PostgreSQL's
    PGSTAT_IDLE_INTERVAL): wait that long. The reading's own connection adds exactly one transaction, reported
    when it closes.
    """
    time.sleep(11)
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as reader:
        row = reader.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0])


async def ask_each(node, token: str, questions: list[str]) -> None:
    client = await Client.open(node, token)
    try:
        for question in questions:
            ack = await client.ask(question)
            frames = await client.until_final(ack["message"])
            assert frames[-1]["state"] == "complete", frames[-1]
    finally:
        await client.close()


@contextmanager
def autovacuum_paused():
    """No autovacuum or autoanalyze of the test database's tables meanwhile: their workers' transactions count in
    pg_stat_database too, and whether one falls inside the window depends on how many rows earlier tests changed
    (20 answers measured 104 transactions in the server's statement log against 112 to 132 counted)."""
    tables = connection.introspection.table_names()
    quote = connection.ops.quote_name

    def set_options(options: str) -> None:
        with connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"ALTER TABLE {quote(table)} {options}")

    set_options("SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)")
    try:
        yield
    finally:
        set_options("RESET (autovacuum_enabled, toast.autovacuum_enabled)")


def test_an_answer_on_an_open_socket_costs_at_most_five_transactions(demo_kb, daphne_server):
    # ask, claim (with the history), retrieval, composition, the finished row (with the console's row):
    # one transaction each. Reaper, lease renewals, the idle-reminder check and connection recycling
    # (DATABASE_CONN_MAX_AGE: each thread's reconnect runs its set-up queries) are pushed out of the measured
    # window; what stays in it once (health checks of connections idle through the wait, the socket's sign-in)
    # is ~0.1 per answer over 50.
    node = daphne_server(
        ANSWER_WORDS_PER_SECOND="0", CHAT_RATE_LIMIT="1000", CHAT_LEASE_SECONDS="120",
        CHAT_REAPER_INTERVAL_SECONDS="40", CONSOLE_REMINDER_CHECK_SECONDS="120", DATABASE_CONN_MAX_AGE="600",
    )
    get_user_model().objects.create_user("dora", password="pw-dora-123")
    token = get_token(node, "dora", "pw-dora-123")
    asyncio.run(ask_each(node, token, DEMO_QUESTIONS[:2]))  # warm-up: models loaded, connections opened
    with autovacuum_paused():
        before = transactions_so_far()
        questions = [DEMO_QUESTIONS[n % len(DEMO_QUESTIONS)] for n in range(ANSWERS)]
        asyncio.run(ask_each(node, token, questions))
        after = transactions_so_far()
    per_answer = (after - before - 1) / ANSWERS  # - 1: the first reading's own, reported when it closed
    assert per_answer <= 5.5, f"{per_answer:.2f} transactions per answer (goal: at most 5); {after - before - 1} in all"


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _terminate(pid: int) -> None:
    """End a backend from a connection of our own, as a PostgreSQL restart would."""
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)


def test_a_connection_that_died_while_idle_is_replaced_before_it_is_used(settings):
    settings.DATABASE_HEALTH_CHECK_IDLE_SECONDS = 0  # every connection counts as idle: checked before use
    pid = _backend_pid()
    _terminate(pid)
    close_old_connections()  # what Django and every database_sync_to_async call do between requests
    assert get_user_model().objects.count() >= 0  # no error: the check found it dead and opened a new one
    assert _backend_pid() != pid


def test_a_recently_used_connection_is_not_checked_and_is_replaced_after_one_error(settings):
    settings.DATABASE_HEALTH_CHECK_IDLE_SECONDS = 3600  # it answered a moment ago: no SELECT 1 before use
    pid = _backend_pid()
    _terminate(pid)
    close_old_connections()
    with pytest.raises(OperationalError):
        get_user_model().objects.count()  # the one failure (the answer path retries it: chatsite/outages.py)
    close_old_connections()
    assert get_user_model().objects.count() >= 0
    assert _backend_pid() != pid
