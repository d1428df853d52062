"""Jinja filters: times, sizes and counts as an operator reads them. Pure."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any


def when(ms: Any) -> str:
    """Epoch milliseconds as UTC, to the millisecond (timelines need the order visible)."""
    if not isinstance(ms, int | float) or ms <= 0:
        return "-"
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{int(ms) % 1000:03d} UTC"


def size(n: Any) -> str:
    if not isinstance(n, int | float):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def duration(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    if ms < 1000:
        return f"{int(ms)} ms"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "-"


FILTERS: dict[str, Callable[[Any], str]] = {
    "when": when,
    "size": size,
    "duration": duration,
    "count": count,
}
