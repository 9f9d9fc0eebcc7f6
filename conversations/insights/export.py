"""The period table as CSV, for a spreadsheet: one line per day or week, then the whole period's ("total").

Machine-readable on purpose: rates as fractions (0.6667, not "66.7 %"), times in milliseconds or seconds as the
column names say, an empty cell where a figure is undefined (no rating, no timed answer), never a 0 that lies.
"""

from __future__ import annotations

import csv
import io

from conversations.insights.metrics import OUTCOMES, Row
from conversations.insights.period import Period

HEADER = [
    "bucket", "conversations", "with_outcome", *[f"outcome_{o}" for o in OUTCOMES], "open",
    "bot_resolution_rate", "handed_off", "handoff_rate",
    "csat_bot_avg", "csat_bot_count", "csat_person_avg", "csat_person_count",
    "answers", "first_token_p50_ms", "first_token_p95_ms", "tool_calls", "tool_failures", "tool_failure_rate",
    "first_human_reply_median_s", "first_human_reply_count",
]


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def line(row: Row) -> list[str]:
    """One row of the CSV (``row.bucket`` None is the total)."""
    return [
        row.bucket.isoformat() if row.bucket else "total",
        str(row.conversations), str(row.settled), *[str(row.outcomes.get(o, 0)) for o in OUTCOMES],
        str(row.conversations - row.settled),
        _number(row.bot_resolution_rate, 4), str(row.handed_off), _number(row.handoff_rate, 4),
        _number(row.csat_bot, 2), str(row.csat_bot_count), _number(row.csat_person, 2), str(row.csat_person_count),
        str(row.answers), _number(row.first_token_p50_ms, 1), _number(row.first_token_p95_ms, 1),
        str(row.tool_calls), str(row.tool_failures), _number(row.tool_failure_rate, 4),
        _number(row.first_reply_median_s, 1), str(row.first_reply_count),
    ]


def csv_text(rows: list[Row], total: Row) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(line(row) for row in [*rows, total])
    return out.getvalue()


def filename(period: Period) -> str:
    return f"insights-{period.first.isoformat()}-{period.last.isoformat()}-{period.unit}.csv"
