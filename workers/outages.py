"""Kafka outages as pauses of the deadline clock: a pure decision of which deadlines are due.

A deadline that comes due while Kafka is down (or soon after it answers again) says
nothing about the device: its reports, and the commands it waits for, are stuck in the
producers of the gateway and the workers, and they reach the log after Kafka returns. A
timeout fired then would land ahead of them and fail or retry a job that did its part.

So the sweeper fires nothing while Kafka does not answer, and once it answers again,
every deadline from the outage's start on is pushed by the outage's length plus a grace
(time for the reports held elsewhere to reach the log first): each window that was
running when Kafka stopped gets back the time the platform lost, and deadlines from
before the outage fire as before. The pause is remembered for `memory_ms` after Kafka
returned; after that, deadlines fire at their own time again (jobs armed after the
outage were never owed the extension). A second outage within that memory adds its
length to the pause.

Every sweeper process probes Kafka itself, but one started after the outage (a worker
restarted meanwhile, or a new replica taking partitions) saw none of it: the pause is
shared through Redis (`encode_pause`), and a clock adopts a pause another process
remembers, joined with its own (the earliest start, the longest push, the latest end), so
the deadlines an outage held stay held whichever process sweeps them.

Rules of this module: no I/O, no clock; callers pass the time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pause:
    """Deadlines at or after `since_ms` are due `by_ms` later, until `until_ms`."""

    since_ms: int
    by_ms: int
    until_ms: int


def encode_pause(pause: Pause) -> bytes:
    return f"{pause.since_ms},{pause.by_ms},{pause.until_ms}".encode()


def decode_pause(raw: bytes) -> Pause | None:
    """A shared pause; None for anything that is not three non-negative integers."""
    parts = raw.split(b",")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    since, by, until = (int(part) for part in parts)
    return Pause(since, by, until)


class OutageClock:
    """What the sweeper may fire, from what its probes of Kafka said."""

    def __init__(self, grace_ms: int, memory_ms: int) -> None:
        self.grace_ms, self.memory_ms = grace_ms, memory_ms
        self.answered_ms: int | None = None  # the last probe Kafka answered
        self.down_since_ms: int | None = None  # set while Kafka does not answer
        self.pause: Pause | None = None

    @property
    def down(self) -> bool:
        return self.down_since_ms is not None

    def unanswered(self, now_ms: int) -> None:
        """A probe got no answer. The outage counts from the last answer (it may have
        begun any time since), or from now when Kafka never answered this process."""
        if self.down_since_ms is None:
            self.down_since_ms = self.answered_ms if self.answered_ms is not None else now_ms

    def answered(self, now_ms: int) -> Pause | None:
        """A probe was answered; the new pause when this ends an outage."""
        self.answered_ms = now_ms
        since = self.down_since_ms
        if since is None:
            return None
        self.down_since_ms = None
        lost = max(0, now_ms - since)
        kept = self.pause_at(now_ms)
        if kept is not None:  # a second outage within the memory of the first
            self.pause = Pause(kept.since_ms, kept.by_ms + lost, now_ms + self.memory_ms)
        else:
            self.pause = Pause(since, lost + self.grace_ms, now_ms + self.memory_ms)
        return self.pause

    def adopt(self, shared: Pause, now_ms: int) -> Pause | None:
        """Join a pause another process remembers with this clock's own; the joined
        pause when that changed it, else None (already known, or past its memory)."""
        if now_ms >= shared.until_ms:
            return None
        own = self.pause_at(now_ms)
        joined = (
            shared
            if own is None
            else Pause(
                min(own.since_ms, shared.since_ms),
                max(own.by_ms, shared.by_ms),
                max(own.until_ms, shared.until_ms),
            )
        )
        if joined == own:
            return None
        self.pause = joined
        return joined

    def cutoff(self, now_ms: int) -> int | None:
        """The latest deadline due now (every deadline at or before it fires); None while
        Kafka is down: nothing fires."""
        if self.down:
            return None
        pause = self.pause_at(now_ms)
        if pause is None:
            return now_ms
        return min(now_ms, max(pause.since_ms - 1, now_ms - pause.by_ms))

    def due_at(self, deadline_ms: int, now_ms: int) -> int:
        """When `deadline_ms` comes due: later by the pause when the pause covers it."""
        pause = self.pause_at(now_ms)
        if pause is None or deadline_ms < pause.since_ms:
            return deadline_ms
        return min(deadline_ms + pause.by_ms, max(deadline_ms, pause.until_ms))

    def pause_at(self, now_ms: int) -> Pause | None:
        """The pause still remembered at `now_ms` (forgotten once past its memory)."""
        pause = self.pause
        if pause is not None and now_ms >= pause.until_ms:
            self.pause = pause = None
        return pause
