"""A device broker outage, as a gateway saw it: the time its link to the broker dropped
and the time it came back, shared through Redis with the workers' sweepers.

A broker that crashes (or restarts) takes every device's connection with it and announces
no offline. Each device connects again on its own schedule: after a restart under load the
last of them may be back minutes later (every connect is a TLS handshake and a credential
check). A device away for that long misses its reports' window through no fault of its
own: the sweepers read this record and hold the deadlines of devices whose connection is
from before the outage until they are back (workers.broker_hold).

The gateway writes the outage under one key (`KEY`) as soon as its link drops, marked
ongoing, and again every few seconds while it stays down: an ongoing record lives
`ONGOING_LIFE_MS`, so one whose gateway died with it does not hold deadlines for long.
Once the link is back it writes the outage's end, and the record lives `KEY_LIFE_MS`
after that. A later outage replaces it (devices that came back after the first lost
their connection again in the second, so the second is the one that counts). The
gateway's own clock stamps both ends, as it stamps the devices' presence notices the
sweepers compare them with.
"""

from __future__ import annotations

from dataclasses import dataclass

KEY = "ota:broker-outage"
# Longer than any hold the workers allow (workers.settings), so the record outlives it.
KEY_LIFE_MS = 3_600_000
# An ongoing outage's record, unless written again; the gateway writes it every
# `ONGOING_REFRESH_S` while its link is down.
ONGOING_LIFE_MS = 30_000
ONGOING_REFRESH_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerOutage:
    """The gateway's link to the device broker went down at `since_ms` and came back at
    `until_ms` (None: it is still down)."""

    since_ms: int
    until_ms: int | None = None

    def expires_at_ms(self, now_ms: int) -> int:
        """When the record of this outage, written at `now_ms`, expires."""
        if self.until_ms is None:
            return now_ms + ONGOING_LIFE_MS
        return self.until_ms + KEY_LIFE_MS


def encode(outage: BrokerOutage) -> bytes:
    until = "" if outage.until_ms is None else str(outage.until_ms)
    return f"{outage.since_ms},{until}".encode()


def decode(raw: bytes) -> BrokerOutage | None:
    """An outage as stored; None for anything but a start and an optional end, both
    non-negative integers, in order."""
    parts = raw.split(b",")
    if len(parts) != 2 or not parts[0].isdigit() or not (parts[1].isdigit() or parts[1] == b""):
        return None
    since = int(parts[0])
    if parts[1] == b"":
        return BrokerOutage(since)
    until = int(parts[1])
    return BrokerOutage(since, until) if since <= until else None
