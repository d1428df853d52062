"""Device broker outages as holds on deadlines: a pure decision of when a deadline is due.

A broker that crashed took every device's connection with it (ota.broker_outage). Once it
is back the devices connect again, each when its own backoff and the broker's admission
of the reconnect storm allow: seconds for some, a minute or more for others. Until a
device is back, what it reported and what it was sent around the crash are lost, and a
window that runs out meanwhile says nothing about the device. So a deadline of a device
whose connection is from before the outage (`connected_ms` older than its start) is held
while the device is away, for at most `hold_ms` after the broker returned (a device not
back by then is treated as any device that went silent: its deadlines fire). Once the
device is back its reconnect gets what it waits for (the version query, the command
again: workers.transitions), and each window that was running at the crash gets back the
time the device was away plus `grace_ms` (time for its answer to reach the log ahead of
a timeout).

Deadlines from before the outage fire as before; so do those of devices known offline
(an offline notice names a departure the outage did not cause), and of devices that came
online only after the hold (what they wait for was sent to their new connection).

Rules of this module: no I/O, no clock; callers pass the time.
"""

from __future__ import annotations

from dataclasses import dataclass

from ota.broker_outage import BrokerOutage
from workers.model import Device


@dataclass(frozen=True, slots=True)
class BrokerHold:
    """How the sweeper treats deadlines after a broker outage from `since_ms` to
    `until_ms`."""

    since_ms: int
    until_ms: int
    hold_ms: int
    grace_ms: int

    @classmethod
    def after(cls, outage: BrokerOutage, now_ms: int, hold_ms: int, grace_ms: int) -> BrokerHold:
        """The hold `outage` makes at `now_ms`: one still under way counts as ending now."""
        until = now_ms if outage.until_ms is None else outage.until_ms
        return cls(outage.since_ms, until, hold_ms, grace_ms)

    @property
    def back_by_ms(self) -> int:
        """A device away longer than this was not held back by the outage."""
        return self.until_ms + self.hold_ms

    def remembered(self, now_ms: int) -> bool:
        """Whether the outage still moves deadlines at `now_ms`: until every device held
        could have come back and had its window's extension."""
        return now_ms < self.back_by_ms + (self.back_by_ms - self.since_ms) + self.grace_ms

    def due_at(self, deadline_ms: int, device: Device) -> int:
        """When `deadline_ms`, one of `device`'s, comes due."""
        since = self.since_ms
        if deadline_ms < since or device.online is not True:
            return deadline_ms
        if device.connected_ms < since:  # the outage took its connection: not back yet
            return max(deadline_ms, self.back_by_ms)
        if device.connected_ms > self.back_by_ms:
            return deadline_ms
        return deadline_ms + (device.connected_ms - since) + self.grace_ms
