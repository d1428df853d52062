"""The platform's clock.

Deadlines shared between processes are epoch milliseconds from the wall clock of
the machine that writes them (one clock: the platform's, never a device's), because
monotonic clocks mean nothing across processes and restarts. In-process waits and
durations use `time.monotonic()` directly.
"""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def now_s() -> int:
    return time.time_ns() // 1_000_000_000
