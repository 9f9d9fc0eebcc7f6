"""Charts drawn on the server as inline SVG: no JavaScript library, readable without scripts, printable.

The SVG scales to its container (``viewBox``, width 100 %) and takes its colours from the page's CSS variables
through classes (static/console/insights.css), so dark mode is the stylesheet's, not the chart's. Every bar and
point has a ``<title>`` (the value on hover, and for screen readers); the table under the charts has every figure.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.utils.formats import date_format
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 480, 200
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 28


def _label(day: dt.date) -> str:
    return date_format(day, "M j")


def _frame(title: str, body: list[str], y_ticks: list[tuple[float, str]]) -> SafeString:
    lines = []
    for y, text in y_ticks:
        lines.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        lines.append(f'<text class="tick" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>')
    svg = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(lines) + "".join(body) + "</svg>"
    )
    return mark_safe(svg)  # noqa: S308 - every text above went through escape()


def _x_labels(buckets: Sequence[dt.date], x_of) -> list[str]:
    every = -(-len(buckets) // 6)  # at most 6 labels, so they never overlap at 390 px
    return [
        f'<text class="tick" x="{x_of(n):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(_label(b))}</text>'
        for n, b in enumerate(buckets) if n % every == 0
    ]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def bars(title: str, buckets: Sequence[dt.date], values: Sequence[int]) -> SafeString:
    """A bar per bucket (conversations per day or week)."""
    top = _nice_max(max(values, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(values), 1)
    body = []
    for n, (bucket, value) in enumerate(zip(buckets, values, strict=True)):
        h = plot_h * value / top
        body.append(
            f'<rect class="bar" x="{LEFT + n * slot + slot * 0.1:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{max(slot * 0.8, 1):.1f}" height="{h:.1f}"><title>{escape(_label(bucket))}: {value}</title></rect>'
        )
    body += _x_labels(buckets, lambda n: LEFT + (n + 0.5) * slot)
    ticks = [(TOP + plot_h * (1 - f), f"{top * f:g}") for f in (0, 0.5, 1)]
    return _frame(title, body, ticks)


def lines(title: str, buckets: Sequence[dt.date], series: Sequence[tuple[str, str, Sequence[float | None]]]) -> SafeString:
    """Rates (0..1) as lines, one per ``(css class, name, values)``; a bucket without a value breaks the line."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(buckets), 1)

    def x_of(n: int) -> float:
        return LEFT + (n + 0.5) * slot

    body = []
    for css, name, values in series:
        segments, current = [], []
        for n, value in enumerate(values):
            if value is None:
                segments, current = segments + [current] if current else segments, []
                continue
            current.append(f"{x_of(n):.1f},{TOP + plot_h * (1 - value):.1f}")
            body.append(
                f'<circle class="dot {css}" cx="{x_of(n):.1f}" cy="{TOP + plot_h * (1 - value):.1f}" r="2.5">'
                f"<title>{escape(name)}, {escape(_label(buckets[n]))}: {value:.0%}</title></circle>"
            )
        segments += [current] if current else []
        body += [f'<polyline class="line {css}" points="{" ".join(points)}"/>' for points in segments]
    body += _x_labels(buckets, x_of)
    ticks = [(TOP + plot_h * (1 - f), f"{f:.0%}") for f in (0, 0.5, 1)]
    return _frame(title, body, ticks)
