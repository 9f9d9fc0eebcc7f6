#!/usr/bin/env python
"""What one answer costs PostgreSQL: sessions opened and transactions committed, counted by the server.

    .venv/bin/python bench/db_per_answer.py                     # 30 answers, one at a time, settings as they are
    DATABASE_CONN_MAX_AGE=0 .venv/bin/python bench/db_per_answer.py   # the old behaviour, for the baseline

Starts one Daphne node (tests/daphne_process.py) on the configured database (DATABASE_URL or the embedded
PostgreSQL) with the demo knowledge base and accounts (``bootstrap_demo``), lets it settle, reads
``pg_stat_database`` (``sessions``, ``xact_commit + xact_rollback``), asks N demo questions over the chat
socket one after the other (``bench/ws_client.py``, answers unpaced), reads the counters again and prints the
differences per answer. Everything the node does meanwhile counts (lease renewals, the reaper): that is the cost
of an answer. The bench's own connection is opened before the first reading (no session in between); the
readings' own few statements (autocommit) count too, < 0.1 per answer over 30 answers.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")



def counters() -> tuple[int, int]:
    """(sessions, transactions) of this database so far, as the statistics collector has them now."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT sessions, xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        )
        sessions, transactions = cursor.fetchone()
    return int(sessions), int(transactions)


def settle(seconds: float = 2.0) -> None:
    """Backends flush their statistics when idle (at most once a second): wait for that."""
    time.sleep(seconds)


async def ask_all(url: str, token: str, count: int) -> int:
    from bench.ws_client import DEMO_QUESTIONS, ask

    failures = 0
    for n in range(count):
        status = await ask(url, token, DEMO_QUESTIONS[n % len(DEMO_QUESTIONS)], out=io.StringIO())
        failures += status != 0
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=30)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from bench.ws_client import get_token
    from tests.daphne_process import start_daphne

    call_command("migrate", verbosity=0)
    call_command("bootstrap_demo", stdout=io.StringIO())
    conn_max_age = settings.DATABASES["default"].get("CONN_MAX_AGE")
    # unpaced answers, and no per-user rate limit (one customer asks them all)
    node = start_daphne(ROOT / ".data" / "bench", {"ANSWER_WORDS_PER_SECOND": "0", "CHAT_RATE_LIMIT": "100000"})
    try:
        token = get_token(node.url, "customer", "customer-demo-pass")
        asyncio.run(ask_all(node.url, token, 2))  # warm up: first model use, first connections
        settle()
        sessions_before, transactions_before = counters()
        started = time.perf_counter()
        failures = asyncio.run(ask_all(node.url, token, args.answers))
        elapsed = time.perf_counter() - started
        settle()
        sessions_after, transactions_after = counters()
    finally:
        node.stop()
    sessions = sessions_after - sessions_before
    transactions = transactions_after - transactions_before
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"CONN_MAX_AGE={conn_max_age}, {args.answers} answers one at a time in {elapsed:.1f} s, "
          f"{failures} failed, load {load}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    print("| CONN_MAX_AGE | answers | sessions per answer | transactions per answer |")
    print("|---|---|---|---|")
    print(f"| {conn_max_age} | {args.answers} | {sessions / args.answers:.2f} | {transactions / args.answers:.2f} |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
