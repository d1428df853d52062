"""The reconciler's pure decision: rate, ramp, bucket, window, waves, abort, finish."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.pacing import (
    MAX_BATCH,
    Hold,
    PaceInput,
    decide,
    in_flight_room,
    in_window,
    ramp_rate,
    refill,
)
from scheduler.policy import AbortRule, MaintenanceWindow, Ramp, TaskPolicy, Wave
from scheduler.taskstate import tally
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


def test_in_flight_cap_releases_only_up_to_the_cap() -> None:
    policy = TaskPolicy(max_in_flight=10)
    assert in_flight_room(policy, 0) == 10
    assert in_flight_room(policy, 12) == 0
    assert in_flight_room(TaskPolicy(), 10**6) == MAX_BATCH
    assert decide(snapshot(policy, 100), NOW).release == 10
    busy = snapshot(policy, 100, cursor=10, tally=Tally(pending=90, active=7, succeeded=3))
    assert decide(busy, NOW).release == 3
    full = replace(busy, tally=Tally(pending=90, active=10))
    assert decide(full, NOW).release == 0
    big = TaskPolicy(max_in_flight=MAX_BATCH * 3)
    assert decide(snapshot(big, MAX_BATCH * 4), NOW).release == MAX_BATCH


def test_devices_waiting_for_a_retry_count_as_in_flight() -> None:
    counts = {"s:WAITING_RETRY": 3, "s:RELEASED": 2, "s:QUERYING_VERSION": 1, "s:SUCCEEDED": 4}
    held = tally(counts)
    assert held.active == 6
    policy = TaskPolicy(max_in_flight=6)
    s = snapshot(policy, 20, cursor=10, tally=replace(held, pending=10))
    assert decide(s, NOW).release == 0


def test_rate_and_in_flight_cap_the_stricter_wins_and_tokens_are_kept() -> None:
    # 600/min holds a 50-token burst; the cap allows 2 more, so 48 tokens stay.
    policy = TaskPolicy(rate_per_min=600, max_in_flight=10)
    s = snapshot(
        policy, 100, cursor=8, tokens=50.0, bucket_ms=NOW, tally=Tally(pending=92, active=8)
    )
    step = decide(s, NOW)
    assert step.release == 2
    assert step.tokens == 48.0
    # With room under the cap, the bucket is the limit.
    slow = replace(s, tokens=1.0, tally=Tally(pending=92, succeeded=8))
    assert decide(slow, NOW).release == 1


def test_ramp_and_in_flight_cap() -> None:
    ramp = Ramp(base_per_min=1200, factor=2.0, every_successes=5, max_per_min=4800)
    policy = TaskPolicy(ramp=ramp, max_in_flight=30)
    first = decide(snapshot(policy, 1000, bucket_ms=NOW - 60_000), NOW)
    assert first.release == 30  # the bucket holds 100, the cap 30
    grown = snapshot(
        policy, 1000, cursor=30, tokens=3.0, bucket_ms=NOW, tally=Tally(pending=970, succeeded=30)
    )
    assert decide(grown, NOW).release == 3  # the bucket is stricter now


def test_wave_end_and_in_flight_cap() -> None:
    policy = TaskPolicy(waves=(Wave(count=10, success_threshold_pct=50),), max_in_flight=4)
    assert decide(snapshot(policy, 100), NOW).release == 4
    mid = snapshot(
        policy,
        100,
        cursor=8,
        tally=Tally(pending=92, active=1, succeeded=7),
        wave_tallies=(Tally(pending=2, active=1, succeeded=7),),
    )
    assert decide(mid, NOW).release == 2  # the wave ends before the cap does


@settings(max_examples=200)
@given(
    total=st.integers(1, 300),
    cap=st.integers(1, 50),
    rate=st.one_of(st.none(), st.integers(1, 5000)),
    finishes=st.lists(st.floats(0, 1), min_size=1, max_size=50),
)
def test_in_flight_never_exceeds_the_cap_and_every_device_is_released(
    total: int, cap: int, rate: int | None, finishes: list[float]
) -> None:
    policy = TaskPolicy(rate_per_min=rate, max_in_flight=cap)
    cursor, active, done, tokens, bucket_ms = 0, 0, 0, 0.0, 0
    now = NOW
    # A minute per step refills at least one token, so every step releases or finishes.
    for i in range(2 * total + 2):
        s = snapshot(
            policy,
            total,
            cursor=cursor,
            tokens=tokens,
            bucket_ms=bucket_ms,
            tally=Tally(pending=total - cursor, active=active, succeeded=done),
        )
        step = decide(s, now)
        if step.status is TaskStatus.SUCCESS:
            break
        cursor, active = cursor + step.release, active + step.release
        tokens, bucket_ms = step.tokens, step.bucket_ms
        assert active <= cap
        finished = round(active * finishes[i % len(finishes)])
        if finished == 0 and active:  # the devices finish, given time
            finished = 1
        active, done = active - finished, done + finished
        now += 60_000
    assert cursor == total
    assert done == total
