"""One declared retry policy: capped exponential backoff with full jitter.

`Backoff(base_s, cap_s)` says how long to wait before attempt n (counted from 0 after a
success): a uniformly random time in [0, min(cap, base * 2**n)], so replicas that lost
the same broker at the same moment do not come back in lockstep. `attempts` bounds the
tries (None = until stopped); callers count retries in their own Prometheus metrics.
The random source is injectable so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    base_s: float = 0.2
    cap_s: float = 10.0
    attempts: int | None = None
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError(f"backoff needs 0 < base ({self.base_s}) <= cap ({self.cap_s})")

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (0 = the first retry)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** min(attempt, 62))
        return float(ceiling * self.rand())

    def gives_up(self, attempt: int) -> bool:
        return self.attempts is not None and attempt >= self.attempts
