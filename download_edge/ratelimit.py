"""Per-device byte rate limit: one token bucket per device, shared by its connections.

Pure apart from the caller's monotonic `now`. A bucket holds at most one second of
bytes, so an idle device cannot save up a burst larger than its rate.
"""

from __future__ import annotations


class Bucket:
    __slots__ = ("_rate", "_tokens", "_updated", "last_used")

    def __init__(self, rate_bytes_s: int, now: float) -> None:
        self._rate = rate_bytes_s
        self._tokens = float(rate_bytes_s)
        self._updated = now
        self.last_used = now

    def take(self, wanted: int, now: float) -> int:
        """Up to `wanted` bytes that may be sent now (0: wait `wait_s`)."""
        self._tokens = min(self._rate, self._tokens + (now - self._updated) * self._rate)
        self._updated = self.last_used = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted

    def refund(self, unused: int) -> None:
        self._tokens += unused

    def wait_s(self) -> float:
        """How long until at least a 16 KiB slice (or a full bucket) is available."""
        need = min(16384, self._rate) - self._tokens
        return max(need / self._rate, 0.001)


class DeviceLimiter:
    def __init__(self, rate_bytes_s: int) -> None:
        self._rate = rate_bytes_s
        self._buckets: dict[str, Bucket] = {}

    def bucket(self, device_id: str, now: float) -> Bucket:
        found = self._buckets.get(device_id)
        if found is None:
            found = self._buckets[device_id] = Bucket(self._rate, now)
        return found

    def forget_idle(self, now: float, idle_s: float) -> None:
        """Drop buckets unused for `idle_s` (they would be full again anyway)."""
        stale = [d for d, b in self._buckets.items() if now - b.last_used > idle_s]
        for device_id in stale:
            del self._buckets[device_id]
