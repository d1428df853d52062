"""The reconciler's pure decision: rate, ramp, bucket, window, waves, abort, finish."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from scheduler.pacing import (
    MAX_BATCH,
    Hold,
    PaceInput,
    decide,
    in_window,
    ramp_rate,
    refill,
)
from scheduler.policy import AbortRule, MaintenanceWindow, Ramp, TaskPolicy, Wave
from scheduler.taskstatus import Tally, TaskStatus
from scheduler.waves import wave_ends

NOW = int(dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)  # a Wednesday


def snapshot(policy: TaskPolicy, total: int, **changes: object) -> PaceInput:
    base = PaceInput(
        status=TaskStatus.PROCESSING,
        policy=policy,
        ends=tuple(wave_ends(total, policy.waves)),
        cursor=0,
        wave=0,
        hold=Hold.NONE,
        tokens=0.0,
        bucket_ms=0,
        stopping=False,
        tally=Tally(pending=total),
        wave_tallies=tuple(Tally() for _ in policy.waves),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_unlimited_rate_releases_a_full_batch() -> None:
    step = decide(snapshot(TaskPolicy(), 12_000), NOW)
    assert step.release == MAX_BATCH


def test_fixed_rate_uses_the_bucket() -> None:
    policy = TaskPolicy(rate_per_min=60)
    first = decide(snapshot(policy, 100, bucket_ms=NOW - 1000), NOW)
    assert first.release == 1
    later = decide(
        snapshot(policy, 100, tokens=first.tokens, bucket_ms=first.bucket_ms), NOW + 3000
    )
    assert later.release == 3


@given(
    rate=st.floats(1, 1e6),
    tokens=st.floats(0, 1e5),
    elapsed=st.integers(0, 10**9),
)
def test_bucket_never_exceeds_burst(rate: float, tokens: float, elapsed: int) -> None:
    filled = refill(min(tokens, max(1.0, rate / 12)), 0, rate, elapsed)
    assert filled <= max(1.0, rate * 5 / 60) + 1e-6
    assert filled >= 0


def test_ramp_grows_with_successes_up_to_max() -> None:
    ramp = Ramp(base_per_min=10, factor=2.0, every_successes=5, max_per_min=70)
    assert ramp_rate(ramp, 0) == 10
    assert ramp_rate(ramp, 5) == 20
    assert ramp_rate(ramp, 14) == 40
    assert ramp_rate(ramp, 10**9) == 70


def test_schedule_time_holds_a_waiting_task() -> None:
    policy = TaskPolicy(schedule_ms=NOW + 60_000)
    assert decide(snapshot(policy, 5, status=TaskStatus.WAITING), NOW).release == 0
    step = decide(snapshot(policy, 5, status=TaskStatus.WAITING), NOW + 60_000)
    assert step.status is TaskStatus.PROCESSING
    assert step.release == 5


def test_maintenance_window_across_midnight() -> None:
    window = MaintenanceWindow(start_min=22 * 60, end_min=4 * 60, days=(2,))  # Wednesday night
    wed_23 = NOW + 11 * 3600_000
    thu_03 = NOW + 15 * 3600_000
    thu_23 = NOW + 35 * 3600_000
    assert not in_window(window, NOW)
    assert in_window(window, wed_23)
    assert in_window(window, thu_03)
    assert not in_window(window, thu_23)
    policy = TaskPolicy(maintenance=window)
    assert decide(snapshot(policy, 5), NOW).release == 0
    assert decide(snapshot(policy, 5), wed_23).release == 5


def test_first_wave_is_released_alone_then_judged() -> None:
    policy = TaskPolicy(waves=(Wave(count=10, success_threshold_pct=80),))
    step = decide(snapshot(policy, 100), NOW)
    assert step.release == 10
    running = snapshot(
        policy, 100, cursor=10, tally=Tally(pending=90, active=10), wave_tallies=(Tally(active=10),)
    )
    assert decide(running, NOW).release == 0
    passed = replace(
        running,
        tally=Tally(pending=90, active=2, succeeded=8),
        wave_tallies=(Tally(active=2, succeeded=8),),
    )
    step = decide(passed, NOW)
    assert step.wave == 1
    assert step.release == 90


def test_failed_threshold_pauses() -> None:
    policy = TaskPolicy(waves=(Wave(count=10, success_threshold_pct=80),))
    failing = snapshot(
        policy,
        100,
        cursor=10,
        tally=Tally(pending=90, active=7, failed=3),
        wave_tallies=(Tally(active=7, failed=3),),
    )
    step = decide(failing, NOW)
    assert step.status is TaskStatus.PAUSED
    assert step.hold == Hold.THRESHOLD
    assert "wave 1" in step.reason
    assert step.release == 0


def test_approval_wave_pauses_after_passing() -> None:
    policy = TaskPolicy(waves=(Wave(count=2, approval=True),))
    done = snapshot(
        policy,
        10,
        cursor=2,
        tally=Tally(pending=8, succeeded=2),
        wave_tallies=(Tally(succeeded=2),),
    )
    step = decide(done, NOW)
    assert step.status is TaskStatus.PAUSED
    assert step.hold == Hold.APPROVAL
    resumed = replace(done, wave=1, hold=Hold.NONE)
    assert decide(resumed, NOW).release == 8


def test_paused_task_does_nothing() -> None:
    step = decide(snapshot(TaskPolicy(), 10, status=TaskStatus.PAUSED), NOW)
    assert step.release == 0
    assert step.status is None


def test_abort_stops_the_task() -> None:
    policy = TaskPolicy(abort=(AbortRule(failure_pct=50, min_finished=4),))
    s = snapshot(policy, 10, cursor=6, tally=Tally(pending=4, active=2, failed=3, succeeded=1))
    step = decide(s, NOW)
    assert step.abort
    assert step.status is TaskStatus.STOPPED


def test_finishes_when_every_device_is_terminal() -> None:
    s = snapshot(TaskPolicy(), 3, cursor=3, tally=Tally(succeeded=2, failed=1))
    assert decide(s, NOW).status is TaskStatus.PARTIAL_SUCCESS
    stopped = replace(s, stopping=True)
    assert decide(stopped, NOW).status is TaskStatus.STOPPED


def test_stopping_task_releases_nothing() -> None:
    s = snapshot(TaskPolicy(), 3, cursor=1, stopping=True, tally=Tally(pending=2, active=1))
    step = decide(s, NOW)
    assert step.release == 0
    assert step.status is None
