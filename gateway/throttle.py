"""At most one uplink-inferred presence record per device per interval.

Every uplink proves its device online, but writing a presence record per message would
double the inbox traffic; one per interval keeps "online" fresh without the flood. The
table is bounded (least recently seen devices are forgotten first). Pure: the caller
passes the time.
"""

from __future__ import annotations

from collections import OrderedDict


class PresenceThrottle:
    def __init__(self, interval_ms: int, max_devices: int = 1_000_000) -> None:
        self._interval_ms = interval_ms
        self._max_devices = max_devices
        self._last: OrderedDict[str, int] = OrderedDict()

    def should_emit(self, device_id: str, now_ms: int) -> bool:
        last = self._last.get(device_id)
        if last is not None and 0 <= now_ms - last < self._interval_ms:
            return False
        self._last[device_id] = now_ms
        self._last.move_to_end(device_id)
        if len(self._last) > self._max_devices:
            self._last.popitem(last=False)
        return True

    def offline(self, device_id: str) -> None:
        """The device went away: its next uplink must report it online again."""
        self._last.pop(device_id, None)
