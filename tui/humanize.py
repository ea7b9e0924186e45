"""Numbers and times the way an operator reads them at a glance: `3m`, `$0.0042`, `1.2k`.

Ages are measured against a clock the app is given rather than the wall clock, so the
same data always renders the same (snapshot tests freeze it).
"""

from __future__ import annotations

from datetime import datetime


def age(then: datetime, now: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def duration(start: datetime, end: datetime | None) -> str:
    if end is None:
        return "…"
    millis = (end - start).total_seconds() * 1000
    return f"{millis:.0f} ms" if millis < 10_000 else f"{millis / 1000:.1f} s"


def money(cost: float | None) -> str:
    if cost is None:
        return "unknown"
    return f"${cost:.4f}" if cost < 100 else f"${cost:,.0f}"


def count(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1_000:.0f}k"
    if value >= 1_000:
        return f"{value / 1_000:.1f}k"
    return str(value)
