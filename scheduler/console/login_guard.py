"""Failed console logins per client address: which address may try again now. Pure: no
I/O; the caller passes monotonic seconds.

An address gets `burst` failed logins, then one more every 60/`per_min` s. An address
with none left is answered 429 before its key is looked at, so guessing slows to the
refill rate. The table holds at most `max_clients` addresses, the least recently seen
dropped first (it regains its burst; what its failures write to the audit trail is still
bounded by scheduler/audit_budget.py), so a flood from any number of addresses keeps this
state under about 1 MB.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_CLIENTS = 10_000  # ~100 B each


@dataclass(frozen=True, slots=True)
class LoginLimits:
    burst: int = 10
    per_min: float = 6.0
    max_clients: int = MAX_CLIENTS


class _Tries:
    __slots__ = ("_at", "_tokens")

    def __init__(self, burst: int, now: float) -> None:
        self._tokens, self._at = float(burst), now

    def wait_s(self, limits: LoginLimits, now: float) -> float:
        """Seconds until one try is back (0: there is one), after refilling."""
        per_s = limits.per_min / 60.0
        self._tokens = min(float(limits.burst), self._tokens + max(0.0, now - self._at) * per_s)
        self._at = now
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / per_s

    def spend(self, limits: LoginLimits, now: float) -> None:
        if self.wait_s(limits, now) == 0.0:
            self._tokens -= 1.0


class LoginGuard:
    def __init__(self, limits: LoginLimits) -> None:
        self.limits = limits
        self._clients: OrderedDict[str, _Tries] = OrderedDict()

    def retry_after_s(self, client: str, now: float) -> float:
        """0 when `client` may try to log in now, else the seconds until it may."""
        tries = self._clients.get(client)
        return 0.0 if tries is None else tries.wait_s(self.limits, now)

    def failed(self, client: str, now: float) -> None:
        """A failed attempt by `client` spends one of its tries."""
        tries = self._clients.get(client)
        if tries is None:
            while len(self._clients) >= self.limits.max_clients:
                self._clients.popitem(last=False)  # the least recently seen
            tries = self._clients[client] = _Tries(self.limits.burst, now)
        self._clients.move_to_end(client)
        tries.spend(self.limits, now)

    def __len__(self) -> int:
        return len(self._clients)
