#!/usr/bin/env python
"""The insights at 100 000 conversations: how long each statement of /console/insights/ and the whole page take.

    .venv/bin/python bench/insights.py                      # 100 000 conversations over 90 days, 5 runs each
    .venv/bin/python bench/insights.py --tiny --drop        # 2 000 conversations, 1 run (the CI smoke run)

A database of its own on the project's server (``--db-name``, default ``bench_insights``; DATABASE_URL or the
embedded PostgreSQL), migrated, then seeded with COPY (reused when the same seed is already there): conversations
spread over ``--days`` days (fewer at weekends and at night), three knowledge bases, two widget sites and the chat
page, outcomes in realistic shares, 1–3 answers each with their first-token times and tool calls, CSAT on a third of
the settled ones, thumbs on some answers, knowledge gaps with 384-d embeddings around 150 topics (a fifth without).

Then, for the last 30 and the last 90 days, per day: the two statements of the period table (conversations,
answers), the knowledge-gap groups (read + grouping), the 👎 queue, and the whole page through Django's test
client (rendering included), unfiltered and filtered by a knowledge base and by a site, ``--runs`` times each after
one warm-up, p50 reported. The same table statements are timed again with the indexes of migration 0009 dropped
inside a transaction that is rolled back (the baseline), and EXPLAIN says which indexes the plans use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

from bench.retrieval import drop_bench_database, use_bench_database  # noqa: E402

INDEXES = ["conv_created", "conv_kb_created", "conv_site_created", "msg_answer_created"]
OUTCOMES = ["bot_resolved", "handed_off", "agent_resolved", "abandoned", "reopened", ""]
OUTCOME_SHARES = [0.55, 0.08, 0.17, 0.12, 0.03, 0.05]
LANGUAGES = ["en", "en", "en", "de", "fr", "es", "zh-hans"]
TOPICS = 150


def seed(conversations: int, days: int, rng: np.random.Generator) -> dict:
    """COPY the rows in; returns what was made (counts, the knowledge bases and sites, the range)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction

    from conversations.models import Site
    from knowledge.models import Document, KnowledgeBase

    kbs = [KnowledgeBase.objects.create(name=f"Bench KB {n}").pk for n in range(3)]
    docs = {kb: Document.objects.create(knowledge_base_id=kb, title=f"Article of {kb}", checksum=f"{kb:064d}").pk for kb in kbs}
    sites = [Site.objects.create(name=f"Bench site {n}", slug=f"bench-{n}").pk for n in range(2)]
    owner = get_user_model().objects.create_user("bench-customer").pk
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    # Days weighted by weekday (weekends half), hours by a daytime curve: the created_at of each conversation.
    day_weights = np.array([0.5 if (start + timedelta(days=d)).weekday() >= 5 else 1.0 for d in range(days)])
    day = rng.choice(days, conversations, p=day_weights / day_weights.sum())
    hour_weights = np.exp(-((np.arange(24) - 14) ** 2) / 30) + 0.05
    hour = rng.choice(24, conversations, p=hour_weights / hour_weights.sum())
    # In time order, as a live site appends them: a period's rows sit together in the tables (the physical order an
    # index range scan benefits from; random order would make every period touch every page).
    created = sorted(start + timedelta(days=int(d), hours=int(h), seconds=int(s)) for d, h, s in
                     zip(day, hour, rng.integers(0, 3600, conversations), strict=True))
    outcome = rng.choice(len(OUTCOMES), conversations, p=OUTCOME_SHARES)
    kb = rng.choice(kbs, conversations, p=[0.6, 0.3, 0.1])
    site = rng.choice([None, *sites], conversations, p=[0.5, 0.35, 0.15])
    counts = {"conversations": conversations, "answers": 0, "ratings": 0, "feedback": 0, "gaps": 0}
    topics = rng.standard_normal((TOPICS, settings.EMBEDDING_DIMENSIONS)).astype(np.float32)
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor
        conv_rows, message_rows, rating_rows, feedback_rows, gap_rows = [], [], [], [], []
        for n in range(conversations):
            cid, at, name = uuid.uuid4(), created[n], OUTCOMES[outcome[n]]
            handed = replied = None
            if name in ("handed_off", "agent_resolved") or (name == "reopened" and rng.random() < 0.5):
                handed = at + timedelta(seconds=float(rng.uniform(30, 600)))
                if name == "agent_resolved" or rng.random() < 0.4:
                    replied = handed + timedelta(seconds=float(rng.lognormal(5.5, 1.0)))
            settled_at = at + timedelta(hours=2) if name else None
            conv_rows.append((cid, owner, "", int(kb[n]), "Bench", "resolved" if name else "bot", site[n], handed,
                              replied, settled_at, name, settled_at, at, settled_at or at))
            if name and rng.random() < 0.33:
                rating_rows.append((cid, int(rng.choice(5, p=[0.08, 0.07, 0.15, 0.3, 0.4]) + 1), replied is not None, at, at))
            for turn in range(int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))):
                asked_at = at + timedelta(minutes=2 * turn)
                question, answer = uuid.uuid4(), uuid.uuid4()
                calls = int(rng.random() < 0.12)
                failed = int(calls and rng.random() < 0.06)
                gap = rng.random()
                topic = int(min(rng.zipf(1.6), TOPICS) - 1)
                cited = gap >= 0.10 and gap < 0.13  # answered, but rated 👎: cites its knowledge base's article
                sources = json.dumps([{"n": 1, "document": docs[int(kb[n])]}] if gap >= 0.10 else [])
                message_rows.append((question, cid, "user", f"Question {topic}", "[]", "[]", None, None, 0, 0, asked_at))
                message_rows.append((answer, cid, "assistant", "An answer.", "[1]" if cited else "[]", sources, question,
                                     float(rng.lognormal(4.3, 0.5)) if rng.random() < 0.97 else None, calls, failed,
                                     asked_at + timedelta(seconds=1)))
                counts["answers"] += 1
                if gap < 0.13:
                    reason = "nothing_found" if gap < 0.10 else "thumbs_down"
                    vector = topics[topic] + rng.standard_normal(topics.shape[1]).astype(np.float32) * 0.25
                    text = "[" + ",".join(f"{x:.4f}" for x in vector) + "]" if rng.random() < 0.8 else None
                    gap_rows.append((answer, int(kb[n]), site[n], reason, f"Question {topic} ({turn})",
                                     LANGUAGES[topic % len(LANGUAGES)], text, asked_at))
                if gap >= 0.10 and gap < 0.16:
                    feedback_rows.append((answer, owner, -1 if gap < 0.13 else 1, asked_at, asked_at))
        _copy(raw, "conversations_conversation",
              "id, owner_id, anonymous_session_key, knowledge_base_id, title, status, site_id, handed_off_at, "
              "first_agent_reply_at, ended_at, outcome, outcome_at, created_at, updated_at, page_url, contact_email",
              [(*row, "", "") for row in conv_rows])
        _copy(raw, "conversations_conversationrating",
              "conversation_id, score, by_person, created_at, updated_at, comment", [(*row, "") for row in rating_rows])
        _copy(raw, "conversations_message",
              "id, conversation_id, role, text, citations, sources, reply_to_id, first_token_ms, tool_calls, "
              "tool_failures, created_at, html, state, trace, frames, error, client_id, seq_last, cancel_requested, "
              "version, updated_at, lease_owner",
              [(*row, "", "complete", "{}", "[]", "", "", 0, False, 1, row[10], "") for row in message_rows])
        _copy(raw, "conversations_feedback",
              "message_id, user_id, rating, created_at, updated_at, anonymous_session_key, comment, review_reason",
              [(*row, "", "", "") for row in feedback_rows])
        _copy(raw, "conversations_knowledgegap",
              "answer_id, knowledge_base_id, site_id, reason, question, language, embedding, created_at", gap_rows)
        cursor.execute("ANALYZE")
    counts.update(ratings=len(rating_rows), feedback=len(feedback_rows), gaps=len(gap_rows))
    counts["load_s"] = time.perf_counter() - started
    return {"counts": counts, "kbs": kbs, "sites": sites, "end": end}


def _copy(raw, table: str, columns: str, rows: list[tuple]) -> None:
    """COPY ``rows`` into ``table``. Every NOT NULL column is named: Django sets defaults in Python, not the
    database."""
    with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def timed(function, runs: int) -> float:
    """p50 in ms of ``runs`` calls after one warm-up."""
    function()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def pages(sql: str, params: list) -> int:
    """Shared buffers (8 kB pages) the statement touched, hit or read (EXPLAIN ANALYZE BUFFERS, whole plan)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    top = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


def plan_indexes(sql: str, params: list) -> str:
    """The indexes an EXPLAIN of the statement names (or "seq scan")."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        plan = cursor.fetchone()[0]
    found, scans = [], []

    def walk(node: dict) -> None:
        if "Index Name" in node:
            found.append(f"{node['Node Type'].lower()} {node['Index Name']}")
        elif node.get("Node Type") == "Seq Scan":
            scans.append(f"seq scan {node['Relation Name']}")
        for child in node.get("Plans", []):
            walk(child)

    walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    return ", ".join(dict.fromkeys(found + scans))


def run(args: argparse.Namespace) -> int:
    use_bench_database(args.db_name)
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.test import Client

    from conversations.insights import gaps, metrics, reviews
    from conversations.insights.period import Period
    from conversations.models import Conversation

    call_command("migrate", verbosity=0)
    rng = np.random.default_rng(args.seed)
    if args.reseed or Conversation.objects.count() != args.conversations:
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE conversations_conversation, knowledge_knowledgebase, conversations_site, auth_user CASCADE")
        made = seed(args.conversations, args.days, rng)
        print(f"seeded: {made['counts']}", flush=True)
    from conversations.models import Site
    from knowledge.models import KnowledgeBase

    kb = KnowledgeBase.objects.order_by("pk").values_list("pk", flat=True).first()
    site = Site.objects.order_by("pk").values_list("pk", flat=True).first()
    last = Conversation.objects.order_by("-created_at").values_list("created_at", flat=True).first().date()
    staff = get_user_model().objects.filter(username="bench-lead").first() or get_user_model().objects.create_user(
        "bench-lead", is_staff=True
    )
    client = Client(HTTP_HOST="localhost")
    client.force_login(staff)
    load = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, load "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {Conversation.objects.count()} conversations, "
          f"p50 of {args.runs} runs after a warm-up", flush=True)
    print()
    print("| range | filter | conversations stmt ms | answers stmt ms | gaps (read + group) ms | 👎 queue ms | whole page ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    periods = {}
    for days in args.ranges:
        for label, filters in [("none", {}), ("knowledge base", {"knowledge_base_id": kb}), ("site", {"site_id": site})]:
            period = Period.of(last - timedelta(days=days - 1), last, **filters)
            periods[(days, label)] = period
            sql = metrics.statements(period)
            cells = [timed(lambda s=s: _execute(*s), args.runs) for s in sql.values()]
            cells.append(timed(lambda p=period: gaps.report(p), args.runs))
            cells.append(timed(lambda p=period: reviews.queue(p), args.runs))
            query = period.query_string()
            cells.append(timed(lambda q=query: _page(client, q), args.runs))
            print(f"| {days} days | {label} | " + " | ".join(f"{c:.1f}" for c in cells) + " |", flush=True)
    print()
    print("Without the indexes of migration 0009 (dropped in a transaction, rolled back). Pages: the shared buffers "
          "the statement touched (EXPLAIN ANALYZE BUFFERS), which the machine's load does not change:")
    print()
    print("| range | filter | conversations stmt ms with / without | answers stmt ms with / without | "
          "conversations pages with / without | answers pages with / without |")
    print("|---|---|---:|---:|---:|---:|")
    with_index = {key: [(timed(lambda s=s: _execute(*s), args.runs), pages(*s)) for s in metrics.statements(p).values()]
                  for key, p in periods.items()}
    with transaction.atomic(), connection.cursor() as cursor:
        for name in INDEXES:
            cursor.execute(f"DROP INDEX {name}")
        for key, period in periods.items():
            without = [(timed(lambda s=s: _execute(*s), args.runs), pages(*s)) for s in metrics.statements(period).values()]
            (cm, cp), (am, ap) = with_index[key]
            (cm2, cp2), (am2, ap2) = without
            print(f"| {key[0]} days | {key[1]} | {cm:.1f} / {cm2:.1f} | {am:.1f} / {am2:.1f} | {cp} / {cp2} | "
                  f"{ap} / {ap2} |", flush=True)
        transaction.set_rollback(True)
    print()
    print("EXPLAIN (with the indexes): the scans each statement's plan uses")
    print()
    for key, period in periods.items():
        for name, (sql, params) in metrics.statements(period).items():
            print(f"- {key[0]} days, filter {key[1]}, {name}: {plan_indexes(sql, params)}")
    if args.drop:
        drop_bench_database(args.db_name)
    return 0


def _execute(sql: str, params: list) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        cursor.fetchall()


def _page(client, query: str) -> None:
    response = client.get(f"/console/insights/?{query}")
    assert response.status_code == 200, response.status_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--ranges", type=lambda s: [int(x) for x in s.split(",")], default=[30, 90])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--reseed", action="store_true", help="seed again even if the database has the rows")
    parser.add_argument("--tiny", action="store_true", help="2 000 conversations, 1 run (CI smoke run)")
    parser.add_argument("--db-name", help="database on the project's server (default bench_insights[_tiny])")
    parser.add_argument("--drop", action="store_true", help="drop the bench database afterwards")
    args = parser.parse_args(argv)
    if args.tiny:
        args.conversations, args.runs = 2000, 1
    args.db_name = args.db_name or ("bench_insights_tiny" if args.tiny else "bench_insights")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
