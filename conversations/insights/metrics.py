"""The period table: per day or week, what the conversations and the answers of a period add up to.

Two statements, whatever the number of conversations: one over the conversations (with their CSAT rating joined)
and one over the answers, each ``GROUP BY ROLLUP(date_trunc(...))`` so the same statement also returns the whole
period's row (a median of a period is not the median of its days). Both filter on the columns the indexes of
migration 0009 lead with (``conv_created``, ``conv_kb_created``, ``conv_site_created``, ``msg_answer_created``), and
PostgreSQL computes the percentiles itself (``percentile_cont``): no conversation is ever a Python object here.
docs/analytics.md, "The insights page", defines each figure; docs/benchmarks.md has them at 100 000 conversations.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import connection
from django.utils import timezone

from conversations.insights.period import Period
from conversations.models import Conversation, ConversationRating, Message

OUTCOMES = [choice for choice, _ in Conversation.Outcome.choices]


@dataclass
class Row:
    """One bucket's figures (``bucket`` None: the whole period). Counts are exact; rates and averages are None
    when nothing was there to divide by."""

    bucket: dt.date | None
    conversations: int = 0
    settled: int = 0  # conversations with an outcome
    outcomes: dict[str, int] = field(default_factory=dict)
    handed_off: int = 0
    csat_bot: float | None = None
    csat_bot_count: int = 0
    csat_person: float | None = None
    csat_person_count: int = 0
    first_reply_median_s: float | None = None
    first_reply_count: int = 0
    answers: int = 0
    timed_answers: int = 0
    first_token_p50_ms: float | None = None
    first_token_p95_ms: float | None = None
    tool_calls: int = 0
    tool_failures: int = 0

    @property
    def bot_resolved(self) -> int:
        return self.outcomes.get(Conversation.Outcome.BOT_RESOLVED, 0)

    @property
    def bot_resolution_rate(self) -> float | None:
        """Resolved by the assistant, of the conversations with an outcome (open ones can still go any way)."""
        return self.bot_resolved / self.settled if self.settled else None

    @property
    def handoff_rate(self) -> float | None:
        """Conversations in which the customer asked for a person, of all conversations started."""
        return self.handed_off / self.conversations if self.conversations else None

    @property
    def tool_failure_rate(self) -> float | None:
        return self.tool_failures / self.tool_calls if self.tool_calls else None


def _conversation_sql(period: Period) -> tuple[str, list]:
    conversations, ratings = Conversation._meta.db_table, ConversationRating._meta.db_table
    replied = "c.handed_off_at IS NOT NULL AND c.first_agent_reply_at >= c.handed_off_at"
    outcome_counts = "".join(f"count(*) FILTER (WHERE c.outcome = '{o}'), " for o in OUTCOMES)
    where, params = _filters(period, "c")
    sql = f"""
        SELECT date_trunc(%s, c.created_at AT TIME ZONE %s)::date AS bucket,
               count(*), count(*) FILTER (WHERE c.outcome <> ''), {outcome_counts}
               count(*) FILTER (WHERE c.handed_off_at IS NOT NULL),
               avg(r.score) FILTER (WHERE NOT r.by_person), count(r.id) FILTER (WHERE NOT r.by_person),
               avg(r.score) FILTER (WHERE r.by_person), count(r.id) FILTER (WHERE r.by_person),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.first_agent_reply_at - c.handed_off_at))
                   FILTER (WHERE {replied}),
               count(*) FILTER (WHERE {replied})
          FROM {conversations} c LEFT JOIN {ratings} r ON r.conversation_id = c.id
         WHERE c.created_at >= %s AND c.created_at < %s {where}
         GROUP BY ROLLUP (1)"""
    return sql, [period.unit, timezone.get_current_timezone_name(), *period.bounds, *params]


def _answer_sql(period: Period) -> tuple[str, list]:
    conversations, messages = Conversation._meta.db_table, Message._meta.db_table
    where, params = _filters(period, "c")
    join = f"JOIN {conversations} c ON c.id = m.conversation_id" if params else ""
    sql = f"""
        SELECT date_trunc(%s, m.created_at AT TIME ZONE %s)::date AS bucket,
               count(*), count(m.first_token_ms),
               percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY m.first_token_ms),
               coalesce(sum(m.tool_calls), 0), coalesce(sum(m.tool_failures), 0)
          FROM {messages} m {join}
         WHERE m.role = 'assistant' AND m.created_at >= %s AND m.created_at < %s {where}
         GROUP BY ROLLUP (1)"""
    return sql, [period.unit, timezone.get_current_timezone_name(), *period.bounds, *params]


def _filters(period: Period, alias: str) -> tuple[str, list]:
    where, params = "", []
    if period.knowledge_base_id is not None:
        where += f" AND {alias}.knowledge_base_id = %s"
        params.append(period.knowledge_base_id)
    if period.site_id is not None:
        where += f" AND {alias}.site_id = %s"
        params.append(period.site_id)
    return where, params


def statements(period: Period) -> dict[str, tuple[str, list]]:
    """The two statements with their parameters (the benchmark EXPLAINs them)."""
    return {"conversations": _conversation_sql(period), "answers": _answer_sql(period)}


def table(period: Period) -> tuple[list[Row], Row]:
    """Every bucket of the period in order (empty ones as zeros) and the whole period's row."""
    rows = {bucket: Row(bucket) for bucket in period.buckets}
    total = Row(None)
    with connection.cursor() as cursor:
        cursor.execute(*_conversation_sql(period))
        for record in cursor.fetchall():
            row = total if record[0] is None else rows.setdefault(record[0], Row(record[0]))
            _fill_conversations(row, record[1:])
        cursor.execute(*_answer_sql(period))
        for record in cursor.fetchall():
            row = total if record[0] is None else rows.setdefault(record[0], Row(record[0]))
            _fill_answers(row, record[1:])
    return [rows[bucket] for bucket in sorted(rows)], total


def _fill_conversations(row: Row, values: tuple) -> None:
    row.conversations, row.settled = values[0], values[1]
    counts = values[2 : 2 + len(OUTCOMES)]
    row.outcomes = dict(zip(OUTCOMES, counts, strict=True))
    rest = values[2 + len(OUTCOMES) :]
    row.handed_off = rest[0]
    row.csat_bot, row.csat_bot_count = _float(rest[1]), rest[2]
    row.csat_person, row.csat_person_count = _float(rest[3]), rest[4]
    row.first_reply_median_s, row.first_reply_count = _float(rest[5]), rest[6]


def _fill_answers(row: Row, values: tuple) -> None:
    row.answers, row.timed_answers = values[0], values[1]
    p50, p95 = values[2] or (None, None)  # one sort for both percentiles
    row.first_token_p50_ms, row.first_token_p95_ms = _float(p50), _float(p95)
    row.tool_calls, row.tool_failures = int(values[3]), int(values[4])


def _float(value) -> float | None:
    return None if value is None else float(value)

