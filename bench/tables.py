"""Formatting helpers for the report: numbers and Markdown tables (pure)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def fmt_ms(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "–"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def fmt_rate(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "–"
    text = f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"
    return f"{text}{unit}"


def fmt_pct(fraction: float | None) -> str:
    if fraction is None or math.isnan(fraction):
        return "–"
    return f"{fraction * 100:.1f} %"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


def reduction(before: float | None, after: float | None) -> float | None:
    """1 - after/before: 0.9 means 90 % less."""
    share = ratio(after, before)
    return None if share is None else 1 - share


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
                   right_align_from: int = 1) -> str:
    """A Markdown table whose columns are padded so that it also reads well as plain text."""
    cells = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = [c.rjust(w) if i >= right_align_from else c.ljust(w)
                  for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 1) + ":") if i >= right_align_from else ("-" * (w + 2))
        for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def verdict(met: bool | None) -> str:
    return "–" if met is None else ("met" if met else "missed")
