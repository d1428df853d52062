"""How many refused, unauthenticated attempts the audit trail records one by one. Pure: no
I/O; the caller passes monotonic seconds.

Anyone can send a request with no key or a wrong one, or a wrong key to the console's
login form; recording each would let a flood grow the audit topic and push real records
out of the Redis view. These failures share one token bucket per scheduler: `burst`
records, then `per_min`. A failure beyond it is only counted; when a token is back, one
record says how many were not recorded before the next failure's own (the count spends a
token too), so the records written never exceed the bucket and no failure goes untold.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Recording:
    record: bool  # write this failure's own audit record
    unrecorded: int  # first write one record counting this many failures not recorded


class FailureBudget:
    def __init__(self, burst: int, per_min: float, now: float) -> None:
        self._burst, self._per_s = float(burst), per_min / 60.0
        self._tokens, self._at = float(burst), now
        self._unrecorded = 0

    def record_failure(self, now: float) -> Recording:
        """Which audit records this failure may write."""
        if not self._take(now):
            self._unrecorded += 1
            return Recording(record=False, unrecorded=0)
        if self._unrecorded == 0:
            return Recording(record=True, unrecorded=0)
        count, self._unrecorded = self._unrecorded, 0
        if self._take(now):  # room for the count and this failure
            return Recording(record=True, unrecorded=count)
        return Recording(record=False, unrecorded=count + 1)  # this one is in the count

    def _take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._at) * self._per_s)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
