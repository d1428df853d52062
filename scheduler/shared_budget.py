"""The audit budget for refused unauthenticated attempts (scheduler/audit_budget.py), one
for every scheduler replica: kept in the scheduler's Redis and spent by one Lua script per
failure, so N replicas behind a load balancer record no more than one would.

Keys (scheduler/keys.py):
- `ota:{sched}:audit-budget:debt`: the bucket, as a key whose time to live is its debt
  (scheduler/debt_bucket.py); it expires when the bucket is full again;
- `ota:{sched}:audit-budget:untold`: failures counted and not yet recorded, one integer.
  No time to live: it holds failures still to be told, and is deleted when they are.

When Redis does not answer, the replica falls back on its own `FailureBudget`: records
stay bounded (by the budget per replica, only while Redis is away), where recording none
would hide the failures and recording all would let a flood grow the audit topic.
Failures that budget counted are added to the shared count at the first answer after, so
none goes untold. `Fallback` logs that start and end, for
this budget and the console's login throttle (scheduler/console/login_throttle.py).
"""

from __future__ import annotations

import logging
import time

import redis.asyncio
from redis.exceptions import RedisError

from ota import metrics
from scheduler import keys
from scheduler.audit_budget import FailureBudget, Recording, recording
from scheduler.debt_bucket import TAKE_LUA, Rate

log = logging.getLogger(__name__)
DEBT_KEY = keys.AUDIT_DEBT
UNTOLD_KEY = keys.AUDIT_UNTOLD
FALLBACKS = metrics.counter(
    "scheduler",
    "shared_budget_fallbacks_total",
    "Decisions of a budget shared by the replicas taken by this replica alone: Redis "
    "did not answer",
    ("budget",),
)

# KEYS[1]: the debt (TAKE_LUA); KEYS[2]: failures untold.
# ARGV[1]: step_ms; ARGV[2]: spare_ms; ARGV[3]: failures a replica counted while it could
# not reach Redis, now added to the untold.
# Returns {tokens taken, failures untold before this one} for audit_budget.recording; the
# tokens wanted are audit_budget.tries_wanted.
_RECORD_FAILURE = (
    TAKE_LUA
    + """
local untold = tonumber(redis.call('GET', KEYS[2]) or '0') + tonumber(ARGV[3])
local want = 1
if untold > 0 then
  want = 2
end
local taken = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), want)
if taken == 0 then
  redis.call('SET', KEYS[2], untold + 1)
else
  redis.call('DEL', KEYS[2])
end
return {taken, untold}
"""
)


class Fallback:
    """Whether a shared budget answers from this replica's own for now: counted every
    time, logged when it starts and when it ends."""

    def __init__(self, budget: str) -> None:
        self.budget = budget
        self.active = False

    def started(self, exc: RedisError) -> None:
        FALLBACKS.labels(self.budget).inc()
        if not self.active:
            self.active = True
            log.warning(
                "Redis does not answer: this replica's own budget applies until it does",
                extra={"budget": self.budget, "error": str(exc)},
            )

    def ended(self) -> None:
        if self.active:
            self.active = False
            log.warning("Redis answers again: the budget is shared", extra={"budget": self.budget})


class SharedFailureBudget:
    def __init__(self, r: redis.asyncio.Redis[bytes], burst: int, per_min: float) -> None:
        self._rate = Rate(burst, per_min)
        self._script = r.register_script(_RECORD_FAILURE)
        self._local = FailureBudget(burst, per_min, time.monotonic())
        self.fallback = Fallback("audit_failures")

    async def record_failure(self) -> Recording:
        """Which audit records this failure may write (scheduler/audit_budget.py)."""
        carried = self._local.hand_over()  # before the await: no other call sends them
        try:
            taken, untold = await self._script(
                keys=[DEBT_KEY, UNTOLD_KEY],
                args=[self._rate.step_ms, self._rate.spare_ms, carried],
            )
        except RedisError as exc:
            self.fallback.started(exc)
            self._local.take_back(carried)
            return self._local.record_failure(time.monotonic())
        self.fallback.ended()
        return recording(int(taken), int(untold))
