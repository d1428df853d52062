"""Failed console logins, bounded: which client may try again now, and which failures the
audit trail records one by one. Pure: no I/O; the caller passes monotonic seconds.

Two token buckets bound what a flood of failed logins can cost:
- per client address, `client_burst` failures, then one more every 60/`client_per_min` s.
  A client with none left is answered 429 before its key is looked at, so guessing slows
  to the refill rate. The table of clients holds at most `max_clients`, the least recently
  seen dropped first.
- one for the audit trail, shared by every client: `audit_burst` failure records, then
  `audit_per_min`. A failure beyond it is answered as usual and only counted; when tokens
  are back, one record says how many were not recorded before the next failure's own.

So however many addresses flood the login form, the audit records of failed logins grow
at most at `audit_per_min` (per scheduler replica) and this state by `max_clients` entries.
Successful logins need a valid key and are always recorded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

MAX_CLIENTS = 10_000  # ~100 B each: about 1 MB at most


@dataclass(frozen=True, slots=True)
class Recording:
    record: bool  # write this failure's own audit record
    unrecorded: int  # first write one record counting this many failures not recorded


@dataclass(frozen=True, slots=True)
class LoginLimits:
    client_burst: int = 10
    client_per_min: float = 6.0
    audit_burst: int = 100
    audit_per_min: float = 60.0
    max_clients: int = MAX_CLIENTS


class _Bucket:
    __slots__ = ("_at", "_burst", "_per_s", "_tokens")

    def __init__(self, burst: int, per_min: float, now: float) -> None:
        self._burst, self._per_s = float(burst), per_min / 60.0
        self._tokens, self._at = float(burst), now

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._at) * self._per_s)
        self._at = now

    def has(self, now: float) -> bool:
        self._refill(now)
        return self._tokens >= 1.0

    def take(self, now: float) -> bool:
        if not self.has(now):
            return False
        self._tokens -= 1.0
        return True

    def wait_s(self, now: float) -> float:
        """Seconds until one token is back (0 if there is one)."""
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self._per_s if self._per_s > 0 else float("inf")


class LoginGuard:
    def __init__(self, limits: LoginLimits, now: float) -> None:
        self.limits = limits
        self._clients: OrderedDict[str, _Bucket] = OrderedDict()
        self._audit = _Bucket(limits.audit_burst, limits.audit_per_min, now)
        self._unrecorded = 0

    def retry_after_s(self, client: str, now: float) -> float:
        """0 when `client` may try to log in now, else the seconds until it may."""
        bucket = self._clients.get(client)
        return 0.0 if bucket is None else bucket.wait_s(now)

    def failed(self, client: str, now: float) -> None:
        """A failed attempt by `client` spends one of its tries."""
        bucket = self._clients.get(client)
        if bucket is None:
            self._make_room()
            bucket = self._clients[client] = _Bucket(
                self.limits.client_burst, self.limits.client_per_min, now
            )
        self._clients.move_to_end(client)
        bucket.take(now)

    def record_failure(self, now: float) -> Recording:
        """Which audit records this failure may write; each one spends a token."""
        if not self._audit.take(now):
            self._unrecorded += 1
            return Recording(record=False, unrecorded=0)
        if self._unrecorded == 0:
            return Recording(record=True, unrecorded=0)
        count, self._unrecorded = self._unrecorded, 0
        if self._audit.take(now):  # room for the count and this failure
            return Recording(record=True, unrecorded=count)
        return Recording(record=False, unrecorded=count + 1)  # this one is in the count

    def __len__(self) -> int:
        return len(self._clients)

    def _make_room(self) -> None:
        # The least recently seen client goes: it regains its burst, but the audit bucket
        # still bounds what its failures write.
        while len(self._clients) >= self.limits.max_clients:
            self._clients.popitem(last=False)
