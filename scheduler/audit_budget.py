"""How many refused, unauthenticated attempts the audit trail records one by one. Pure: no
I/O; the caller passes monotonic seconds.

Anyone can send a request with no key or a wrong one, or a wrong key to the console's
login form; recording each would let a flood grow the audit topic and push real records
out of the Redis view. These failures share one token bucket (scheduler/debt_bucket.py):
`burst` records, then `per_min`. A failure beyond it is only counted (it is "untold");
when a token is back, one record says how many were not recorded before the next
failure's own (the count spends a token too), so the records written never exceed the
bucket and no failure goes untold.

`tries_wanted` and `recording` are that decision, for any bucket: `FailureBudget` here
(one process), and the bucket every replica shares in Redis (scheduler/shared_budget.py),
which falls back on a `FailureBudget` while Redis does not answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.debt_bucket import Rate


@dataclass(frozen=True, slots=True)
class Recording:
    record: bool  # write this failure's own audit record
    unrecorded: int  # first write one record counting this many failures not recorded


def tries_wanted(untold: int) -> int:
    """Tokens a failure asks for: one for its own record, and one before it for the count
    of the failures still untold, if any."""
    return 2 if untold else 1


def recording(taken: int, untold: int) -> Recording:
    """What a failure writes, given the tokens it got (of `tries_wanted(untold)`) and the
    failures untold before it. Afterwards none is untold if it got a token, else
    `untold + 1`."""
    if taken == 0:
        return Recording(record=False, unrecorded=0)
    if untold == 0:
        return Recording(record=True, unrecorded=0)
    if taken >= 2:  # room for the count and this failure
        return Recording(record=True, unrecorded=untold)
    return Recording(record=False, unrecorded=untold + 1)  # this one is in the count


class FailureBudget:
    def __init__(self, burst: int, per_min: float, now: float) -> None:
        self._rate = Rate(burst, per_min)
        self._paid_at = now * 1000.0  # monotonic ms at which the bucket owes nothing
        self.untold = 0  # failures counted, not yet recorded

    def record_failure(self, now: float) -> Recording:
        """Which audit records this failure may write."""
        now_ms = now * 1000.0
        debt = max(0.0, self._paid_at - now_ms)
        taken = self._rate.tries(debt, tries_wanted(self.untold))
        result = recording(taken, self.untold)
        self._paid_at = now_ms + debt + taken * self._rate.step_ms
        self.untold = 0 if taken else self.untold + 1
        return result

    def hand_over(self) -> int:
        """The untold failures, to be counted elsewhere (by the shared budget) from now."""
        count, self.untold = self.untold, 0
        return count

    def take_back(self, count: int) -> None:
        """Failures handed over that could not be counted there after all."""
        self.untold += count
