"""A token bucket kept as the time it owes: the arithmetic of the failure throttles (the
console's per address, scheduler/console/login_guard.py; the audit trail's,
scheduler/audit_budget.py). Pure: no I/O, no clock; `TAKE_LUA` is the same arithmetic as
text for Redis, run by the shells (scheduler/shared_budget.py,
scheduler/console/login_throttle.py).

A bucket holds `burst` tries and gets one back every `step_ms`. Rather than the tries
left, it keeps its debt: each try taken adds `step_ms`, time pays it back, and a full
bucket owes nothing. A try is there while the debt is at most `spare_ms`
((burst - 1) * step_ms); otherwise the next one is back in `debt - spare_ms`. So
`burst` tries at once, then one every `step_ms`, as a token bucket.

Kept as debt, a bucket in Redis is one key whose time to live *is* the debt: it needs no
clock but Redis's own (never one replica's against another's), and it expires exactly
when the bucket is full again, so idle buckets take no room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MS_PER_MIN = 60_000


@dataclass(frozen=True, slots=True)
class Rate:
    burst: int  # tries a full bucket holds
    per_min: float  # tries given back a minute

    def __post_init__(self) -> None:
        if self.burst < 1 or not self.per_min > 0:
            raise ValueError(f"a bucket needs burst >= 1 and per_min > 0, not {self!r}")

    @property
    def step_ms(self) -> int:
        """The debt of one try: whole milliseconds, rounded up (never faster than per_min)."""
        return max(1, math.ceil(MS_PER_MIN / self.per_min))

    @property
    def spare_ms(self) -> int:
        """The most a bucket may owe and still have a try."""
        return (self.burst - 1) * self.step_ms

    def wait_ms(self, debt_ms: float) -> float:
        """0 when a try is there at this debt, else the milliseconds until one is."""
        return max(0.0, debt_ms - self.spare_ms)

    def tries(self, debt_ms: float, want: int) -> int:
        """How many of `want` tries a bucket owing `debt_ms` has (all taken at once)."""
        if debt_ms > self.spare_ms:
            return 0
        return min(want, int((self.spare_ms - max(0.0, debt_ms)) // self.step_ms) + 1)


# `take(key, step_ms, spare_ms, want)`: takes up to `want` tries from the bucket whose
# debt is the time to live of `key` (no key: it owes nothing) and returns how many it
# took, as `Rate.tries` counts them; a bucket that gives none is left as it is. Scripts
# that use it are this text followed by their own body.
TAKE_LUA = """
local function take(key, step_ms, spare_ms, want)
  local debt = math.max(redis.call('PTTL', key), 0)
  if debt > spare_ms then
    return 0
  end
  local taken = math.min(want, math.floor((spare_ms - debt) / step_ms) + 1)
  redis.call('SET', key, '1', 'PX', debt + taken * step_ms)
  return taken
end
"""
