"""Failed console logins per client address, counted in this process: which address may
try again now. Pure: no I/O; the caller passes monotonic seconds.

An address gets `burst` failed logins, then one more every 60/`per_min` s (a token bucket
kept as debt, scheduler/debt_bucket.py). An address with none left is answered 429 before
its key is looked at, so guessing slows to the refill rate. Every replica keeps one of
these beside the budget it shares with the others in Redis
(scheduler/console/login_throttle.py), and falls back on it alone while Redis does not
answer. The table holds at most `max_clients` addresses, the least recently seen dropped
first (it regains its burst; what its failures write to the audit trail is still bounded
by scheduler/audit_budget.py), so a flood from any number of addresses keeps this state
under about 1 MB.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from scheduler.debt_bucket import Rate

MAX_CLIENTS = 10_000  # ~100 B each


@dataclass(frozen=True, slots=True)
class LoginLimits:
    burst: int = 10
    per_min: float = 6.0
    max_clients: int = MAX_CLIENTS

    @property
    def rate(self) -> Rate:
        return Rate(self.burst, self.per_min)


class LoginGuard:
    def __init__(self, limits: LoginLimits) -> None:
        self.limits = limits
        self._rate = limits.rate
        # Per address, the monotonic ms at which its bucket owes nothing again.
        self._paid_at: OrderedDict[str, float] = OrderedDict()

    def retry_after_s(self, client: str, now: float) -> float:
        """0 when `client` may try to log in now, else the seconds until it may."""
        return self._rate.wait_ms(self._debt_ms(client, now)) / 1000.0

    def failed(self, client: str, now: float) -> None:
        """A failed attempt by `client` spends one of its tries (if it has one left)."""
        debt = self._debt_ms(client, now)
        if client not in self._paid_at:
            while len(self._paid_at) >= self.limits.max_clients:
                self._paid_at.popitem(last=False)  # the least recently seen
        taken = self._rate.tries(debt, 1)
        self._paid_at[client] = now * 1000.0 + debt + taken * self._rate.step_ms
        self._paid_at.move_to_end(client)

    def _debt_ms(self, client: str, now: float) -> float:
        paid_at = self._paid_at.get(client)
        return 0.0 if paid_at is None else max(0.0, paid_at - now * 1000.0)

    def __len__(self) -> int:
        return len(self._paid_at)
