"""The reconciler's decision for one task at one moment: what to release, pause or finish.

Pure: `decide` reads a snapshot of the task (`PaceInput`) and the time, and returns a
`Step`; the reconciler applies it. Pieces:
- rate: a fixed devices-per-minute, or AWS IoT Jobs' exponential ramp driven by
  successes; enforced with a token bucket (`refill`) whose state is stored per task;
- in flight: with `max_in_flight`, releases only while fewer of the task's released
  devices are unfinished (any non-terminal state, waiting for a retry included), so the
  pipeline holds a bounded number of the task's devices whatever its capacity;
- maintenance window: releases only inside it (UTC);
- waves: release up to the current wave's end, judge it (`waves.verdict`), then move
  on, pause for approval, or pause on a missed threshold;
- abort criteria (`abort.abort_reason`);
- finish when nothing is pending or active, unless the task is continuous and still
  open (`TaskPolicy.open_at`): it then waits for devices that come to match.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from scheduler.abort import abort_reason
from scheduler.policy import MaintenanceWindow, Ramp, TaskPolicy
from scheduler.taskstatus import FINISHED, Tally, TaskStatus, final_status
from scheduler.waves import Verdict, verdict

BURST_S = 5.0  # a bucket holds at most this many seconds' worth of releases
MAX_BATCH = 5000  # devices released per step; the loop comes back at once when more remain


class Hold:
    """Why a task is paused: it decides what resuming does."""

    NONE = ""
    MANUAL = "manual"  # resume continues the same wave
    APPROVAL = "approval"  # resume starts the next wave
    THRESHOLD = "threshold"  # resume overrides the failed wave and starts the next


def ramp_rate(ramp: Ramp, successes: int) -> float:
    steps = min(successes // ramp.every_successes, 64)
    return float(min(ramp.max_per_min, ramp.base_per_min * ramp.factor**steps))


def rate_per_min(policy: TaskPolicy, successes: int) -> float | None:
    if policy.ramp is not None:
        return ramp_rate(policy.ramp, successes)
    return None if policy.rate_per_min is None else float(policy.rate_per_min)


def in_flight_room(policy: TaskPolicy, active: int) -> int:
    """Devices that may be released before the task reaches its in-flight cap."""
    if policy.max_in_flight is None:
        return MAX_BATCH
    return max(0, policy.max_in_flight - active)


def refill(tokens: float, at_ms: int, rate: float, now_ms: int) -> float:
    """Tokens in a bucket filled at `rate` per minute since `at_ms`, capped at the burst."""
    capacity = max(1.0, rate * BURST_S / 60.0)
    gained = rate * max(0, now_ms - at_ms) / 60_000.0
    return min(capacity, tokens + gained)


def in_window(window: MaintenanceWindow | None, now_ms: int) -> bool:
    if window is None:
        return True
    now = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC)
    minute, day = now.hour * 60 + now.minute, now.weekday()
    if window.start_min < window.end_min:
        return day in window.days and window.start_min <= minute < window.end_min
    # Crosses midnight: the early-morning part belongs to the previous day's window.
    return (day in window.days and minute >= window.start_min) or (
        (day - 1) % 7 in window.days and minute < window.end_min
    )


@dataclass(frozen=True, slots=True)
class PaceInput:
    status: TaskStatus
    policy: TaskPolicy
    ends: tuple[int, ...]  # waves.wave_ends(...) with the last entry = list length
    cursor: int  # devices of the list released so far
    wave: int
    hold: str
    tokens: float
    bucket_ms: int
    stopping: bool  # cancelled or aborted: finishes as Stopped
    tally: Tally
    wave_tallies: tuple[Tally, ...]  # per listed wave
    causes: Mapping[int, int] = field(default_factory=dict)
    # per listed wave, devices removed from a continuous task before their release: a
    # wave is judged on the devices it released
    wave_removed: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Step:
    release: int = 0
    tokens: float = 0.0
    bucket_ms: int = 0
    wave: int = 0
    status: TaskStatus | None = None  # a status change to record
    hold: str = Hold.NONE
    reason: str = ""
    abort: bool = False


def decide(s: PaceInput, now_ms: int) -> Step:
    keep = Step(tokens=s.tokens, bucket_ms=s.bucket_ms, wave=s.wave, hold=s.hold)
    if s.status in FINISHED or s.status in (TaskStatus.PAUSED, TaskStatus.INITIALIZING):
        return keep
    started: TaskStatus | None = None
    if s.status is TaskStatus.WAITING:
        if s.policy.schedule_ms is not None and now_ms < s.policy.schedule_ms:
            return keep
        started = TaskStatus.PROCESSING
    length = s.ends[-1]
    idle = s.cursor >= length and s.tally.pending == 0 and s.tally.active == 0
    # An open continuous task waits, idle, for devices that come to match its targets.
    if idle and (s.stopping or not s.policy.open_at(now_ms)):
        return Step(
            wave=s.wave,
            status=final_status(s.tally, stopped=s.stopping),
            reason="all devices finished",
        )
    if s.stopping:
        return keep
    reason = abort_reason(s.policy.abort, s.tally, s.causes)
    if reason is not None:
        return Step(wave=s.wave, status=TaskStatus.STOPPED, reason=reason, abort=True)
    wave = s.wave
    waves = s.policy.waves
    while wave < len(waves) and s.cursor >= s.ends[wave]:
        start = s.ends[wave - 1] if wave else 0
        removed = s.wave_removed[wave] if wave < len(s.wave_removed) else 0
        size = s.ends[wave] - start - removed
        judged = verdict(size, waves[wave], s.wave_tallies[wave])
        if judged is Verdict.RUNNING:
            return Step(tokens=s.tokens, bucket_ms=s.bucket_ms, wave=wave, status=started)
        if judged is Verdict.FAILED:
            return Step(
                wave=wave,
                status=TaskStatus.PAUSED,
                hold=Hold.THRESHOLD,
                reason=f"wave {wave + 1} missed its success threshold of "
                f"{waves[wave].success_threshold_pct:g}% ({s.wave_tallies[wave].succeeded} of {size} succeeded)",
            )
        if waves[wave].approval and size > 0:
            return Step(
                wave=wave,
                status=TaskStatus.PAUSED,
                hold=Hold.APPROVAL,
                reason=f"wave {wave + 1} passed; waiting for approval to start wave {wave + 2}",
            )
        wave += 1
    end = s.ends[wave] if wave < len(waves) else length
    room = max(0, end - s.cursor)
    if room == 0 or not in_window(s.policy.maintenance, now_ms):
        return Step(tokens=s.tokens, bucket_ms=s.bucket_ms, wave=wave, status=started)
    # The stricter of wave, in-flight cap, batch and rate wins.
    room = min(room, in_flight_room(s.policy, s.tally.active), MAX_BATCH)
    rate = rate_per_min(s.policy, s.tally.succeeded)
    if rate is None:
        return Step(release=room, wave=wave, status=started)
    tokens = refill(s.tokens, s.bucket_ms or now_ms, rate, now_ms)
    release = min(room, int(tokens))
    return Step(
        release=release, tokens=tokens - release, bucket_ms=now_ms, wave=wave, status=started
    )
