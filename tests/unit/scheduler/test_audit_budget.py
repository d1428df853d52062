"""The audit budget for refused unauthenticated attempts (scheduler/audit_budget.py): a
flood writes at most the budget, and every failure is recorded or counted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.settings import SettingsError
from scheduler.audit_budget import FailureBudget, Recording, recording, tries_wanted
from scheduler.settings import SchedulerSettings


def test_failures_beyond_the_budget_are_counted_then_reported_once() -> None:
    budget = FailureBudget(burst=4, per_min=60.0, now=0.0)
    assert [budget.record_failure(0.0) for _ in range(4)] == [Recording(True, 0)] * 4
    assert [budget.record_failure(0.5) for _ in range(3)] == [Recording(False, 0)] * 3
    # 2 s later two tokens are back: the count of the three, then this failure's own.
    assert budget.record_failure(2.5) == Recording(True, 3)
    assert budget.record_failure(2.6) == Recording(False, 0)
    # 1 s later one token: room for the count only, which includes this failure.
    assert budget.record_failure(3.6) == Recording(False, 2)
    assert budget.record_failure(5.0) == Recording(True, 0)


@given(st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=500))
def test_a_flood_writes_at_most_the_budget_and_loses_no_failure(steps: list[float]) -> None:
    burst, per_min = 5, 30.0
    budget = FailureBudget(burst, per_min, now=0.0)
    now, records, accounted = 0.0, 0, 0
    for step in steps:
        now += step
        recording = budget.record_failure(now)
        records += int(recording.record) + int(recording.unrecorded > 0)
        accounted += int(recording.record) + recording.unrecorded
        assert records <= burst + now * per_min / 60.0 + 1e-9
    pending = len(steps) - accounted
    assert pending >= 0  # every failure is recorded, in a count, or still to be counted
    assert budget.record_failure(now + 3600.0).unrecorded == pending


def test_the_budget_settings_are_read_and_checked() -> None:
    settings = SchedulerSettings.from_env(
        {"OTA_AUDIT_FAILURES_BURST": "7", "OTA_AUDIT_FAILURES_PER_MIN": "12.5"}
    )
    assert (settings.audit_failures_burst, settings.audit_failures_per_min) == (7, 12.5)
    assert SchedulerSettings.from_env({}).audit_failures_burst == 100
    for name, value in (("BURST", "0"), ("BURST", "many"), ("PER_MIN", "0")):
        with pytest.raises(SettingsError, match=f"OTA_AUDIT_FAILURES_{name}"):
            SchedulerSettings.from_env({f"OTA_AUDIT_FAILURES_{name}": value})


@pytest.mark.parametrize(
    ("taken", "untold", "expected"),
    [
        (0, 0, Recording(False, 0)),  # no token: this failure joins the untold
        (0, 7, Recording(False, 0)),
        (1, 0, Recording(True, 0)),
        (2, 7, Recording(True, 7)),  # the count, then this failure's own record
        (1, 7, Recording(False, 8)),  # room for the count only: it includes this one
    ],
)
def test_what_a_failure_writes_given_the_tokens_it_got(
    taken: int, untold: int, expected: Recording
) -> None:
    assert tries_wanted(untold) == (2 if untold else 1)
    assert recording(taken, untold) == expected


def test_failures_handed_over_are_no_longer_told_here_unless_taken_back() -> None:
    budget = FailureBudget(burst=1, per_min=1.0, now=0.0)
    assert budget.record_failure(0.0) == Recording(True, 0)
    assert [budget.record_failure(1.0) for _ in range(3)] == [Recording(False, 0)] * 3
    assert budget.hand_over() == 3
    assert budget.hand_over() == 0
    assert budget.record_failure(61.0) == Recording(True, 0)  # none untold here any more
    budget.take_back(2)
    assert budget.record_failure(200.0) == Recording(False, 3)  # one token: the count only
