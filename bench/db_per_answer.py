#!/usr/bin/env python
"""What one answer costs PostgreSQL: sessions opened and transactions committed, counted by the server.

    .venv/bin/python bench/db_per_answer.py                     # 30 answers, one at a time, settings as they are
    DATABASE_CONN_MAX_AGE=0 .venv/bin/python bench/db_per_answer.py   # the old behaviour, for the baseline

Starts one Daphne node (tests/daphne_process.py) on the configured database (DATABASE_URL or the embedded
PostgreSQL) with the demo knowledge base and accounts (``bootstrap_demo``), lets it settle, reads
``pg_stat_database`` (``sessions``, ``xact_commit + xact_rollback``), asks N demo questions over the chat
socket one after the other (``bench/ws_client.py``, answers unpaced), reads the counters again and prints the
differences per answer. What the idle node does (reaper passes, health checks after the settling wait) is
measured in a window of its own first and subtracted; lease renewals of the answers count. The bench's own connection is opened before the first reading (no session in between); the
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


def settle(seconds: float = 11.0) -> None:
    """Backends report their statistics when idle, at the latest 10 s after their last transaction
    (PostgreSQL's PGSTAT_IDLE_INTERVAL): wait for that."""
    time.sleep(seconds)


async def ask_all(url: str, token: str, count: int, one_socket: bool = False) -> int:
    """``count`` demo questions one after the other, each in a new conversation: on a new socket each, or all on
    one socket (``one_socket``: the handshake's own lookups are then not part of the answers' cost)."""
    from bench.ws_client import DEMO_QUESTIONS, ask, ask_on, open_socket

    questions = [DEMO_QUESTIONS[n % len(DEMO_QUESTIONS)] for n in range(count)]
    if one_socket:
        async with await open_socket(url, token) as ws:
            return sum([await ask_on(ws, question, out=io.StringIO()) != 0 for question in questions])
    return sum([await ask(url, token, question, out=io.StringIO()) != 0 for question in questions])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=30)
    parser.add_argument(
        "--one-socket", action="store_true",
        help="ask every question on one socket (default: a new socket per question, its handshake counted too)",
    )
    parser.add_argument(
        "--statements", type=Path, metavar="FILE",
        help="also write every statement the node runs to FILE (bench/statement_log_settings.py) and print the "
        "most frequent per answer",
    )
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
    env = {"ANSWER_WORDS_PER_SECOND": "0", "CHAT_RATE_LIMIT": "100000"}
    if args.statements:
        env.update(DJANGO_SETTINGS_MODULE="bench.statement_log_settings", STATEMENT_LOG=str(args.statements.resolve()))
    node = start_daphne(ROOT / ".data" / "bench", env)
    try:
        token = get_token(node.url, "customer", "customer-demo-pass")
        asyncio.run(ask_all(node.url, token, 2))  # warm up: first model use, first connections
        settle()
        # The node's own background work (reaper passes, heartbeats, health checks after idle) while nothing is
        # asked, per second: subtracted from the measured window, which is mostly the settling wait.
        _, idle_start = counters()
        idle_started = time.perf_counter()
        settle()
        logged_before = len(args.statements.read_text().splitlines()) if args.statements else 0
        sessions_before, transactions_before = counters()
        window_started = time.perf_counter()
        idle_per_second = (transactions_before - idle_start) / (window_started - idle_started)
        failures = asyncio.run(ask_all(node.url, token, args.answers, args.one_socket))
        elapsed = time.perf_counter() - window_started
        settle()
        sessions_after, transactions_after = counters()
        window = time.perf_counter() - window_started
    finally:
        node.stop()
    sessions = sessions_after - sessions_before
    idle = idle_per_second * window
    transactions = transactions_after - transactions_before - idle
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    sockets = "all on one socket" if args.one_socket else "a new socket each"
    print(f"CONN_MAX_AGE={conn_max_age}, {args.answers} answers one at a time ({sockets}) in {elapsed:.1f} s, "
          f"{failures} failed, load {load}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{idle:.0f} transactions of the node's idle work over the {window:.0f} s window subtracted")  # fmt: skip
    print("| CONN_MAX_AGE | answers | sessions per answer | transactions per answer |")
    print("|---|---|---|---|")
    print(f"| {conn_max_age} | {args.answers} | {sessions / args.answers:.2f} | {transactions / args.answers:.2f} |")
    if args.statements:
        print_statements(args.statements, logged_before, args.answers)
    return 1 if failures else 0


def print_statements(path: Path, skip: int, answers: int) -> None:
    """The statements logged during the measured answers, grouped (numbers stripped), most frequent first."""
    import collections
    import re

    lines = path.read_text().splitlines()[skip:]
    shapes = collections.Counter(re.sub(r"\b\d+\b|'[^']*'", "?", line) for line in lines)
    autocommit = sum(1 for line in lines if line.split("\t")[1] == "0")
    print(f"\n{len(lines) / answers:.2f} statements per answer, {autocommit / answers:.2f} outside atomic blocks")
    for shape, count in shapes.most_common(40):
        print(f"{count / answers:6.2f}  {shape}")


if __name__ == "__main__":
    sys.exit(main())
