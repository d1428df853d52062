"""Wave boundaries and verdicts, abort rules, final task status."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ota.catalog import FailureCause
from scheduler.abort import abort_reason
from scheduler.policy import AbortRule, Wave
from scheduler.taskstatus import Tally, TaskStatus, final_status
from scheduler.waves import Verdict, needed, verdict, wave_ends


def test_wave_ends_counts_and_percentages() -> None:
    waves = (Wave(count=5), Wave(percent=10.0), Wave(count=1000))
    assert wave_ends(200, waves) == [5, 25, 200, 200]
    assert wave_ends(3, waves) == [3, 3, 3, 3]


@given(
    total=st.integers(0, 100_000),
    specs=st.lists(
        st.one_of(
            st.builds(Wave, count=st.integers(1, 5000)),
            st.builds(Wave, percent=st.floats(0.001, 100)),
        ),
        max_size=8,
    ),
)
def test_wave_ends_are_monotone_and_cover_everything(total: int, specs: list[Wave]) -> None:
    ends = wave_ends(total, tuple(specs))
    assert len(ends) == len(specs) + 1
    assert ends == sorted(ends)
    assert ends[-1] == total
    assert all(0 <= e <= total for e in ends)


def test_verdict_passes_early_once_threshold_reached() -> None:
    wave = Wave(count=10, success_threshold_pct=80)
    assert needed(10, wave) == 8
    assert verdict(10, wave, Tally(active=2, succeeded=8)) is Verdict.PASSED
    assert verdict(10, wave, Tally(active=3, succeeded=7)) is Verdict.RUNNING


def test_verdict_fails_as_soon_as_threshold_is_out_of_reach() -> None:
    wave = Wave(count=10, success_threshold_pct=80)
    assert verdict(10, wave, Tally(active=7, failed=3)) is Verdict.FAILED
    assert verdict(10, wave, Tally(active=6, failed=1, cancelled=1, succeeded=2)) is (
        Verdict.RUNNING
    )


def test_zero_threshold_wave_passes_when_finished() -> None:
    wave = Wave(count=4)
    assert verdict(4, wave, Tally(active=1, failed=3)) is Verdict.RUNNING
    assert verdict(4, wave, Tally(failed=4)) is Verdict.PASSED


@given(
    size=st.integers(1, 500),
    pct=st.floats(0, 100),
    succeeded=st.integers(0, 500),
    failed=st.integers(0, 500),
)
def test_verdict_never_passes_below_and_never_fails_above_threshold(
    size: int, pct: float, succeeded: int, failed: int
) -> None:
    succeeded = min(succeeded, size)
    failed = min(failed, size - succeeded)
    tally = Tally(active=size - succeeded - failed, succeeded=succeeded, failed=failed)
    wave = Wave(count=size, success_threshold_pct=pct)
    result = verdict(size, wave, tally)
    if result is Verdict.PASSED:
        assert succeeded >= needed(size, wave)
    if result is Verdict.FAILED:
        assert succeeded + tally.active < needed(size, wave)
    if tally.active == 0:
        assert result is not Verdict.RUNNING


def test_abort_waits_for_minimum_then_trips() -> None:
    rules = (AbortRule(failure_pct=50, min_finished=10),)
    assert abort_reason(rules, Tally(failed=9), {}) is None
    reason = abort_reason(rules, Tally(failed=5, succeeded=5), {})
    assert reason is not None
    assert "50.0% of 10" in reason
    assert abort_reason(rules, Tally(failed=4, succeeded=6), {}) is None


def test_abort_per_cause_counts_only_that_cause() -> None:
    cause = FailureCause.LOW_BATTERY
    rules = (AbortRule(failure_pct=30, min_finished=10, cause=cause),)
    tally = Tally(failed=8, succeeded=2)
    assert abort_reason(rules, tally, {int(cause): 2, 28: 6}) is None
    reason = abort_reason(rules, tally, {int(cause): 3, 28: 5})
    assert reason is not None
    assert "Low battery" in reason


def test_final_status() -> None:
    assert final_status(Tally(succeeded=3), stopped=False) is TaskStatus.SUCCESS
    assert final_status(Tally(failed=3), stopped=False) is TaskStatus.FAIL
    assert final_status(Tally(failed=1, succeeded=2), stopped=False) is (TaskStatus.PARTIAL_SUCCESS)
    assert final_status(Tally(succeeded=3), stopped=True) is TaskStatus.STOPPED
