"""The failed-login guard (scheduler/console/login_guard.py): per-client throttling, the
audit budget shared by every client, and the bounds a flood cannot break."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.console.login_guard import LoginGuard, LoginLimits, Recording

LIMITS = LoginLimits(client_burst=3, client_per_min=6.0, audit_burst=4, audit_per_min=60.0)


def test_a_client_is_throttled_after_its_burst_and_may_try_again_after_the_refill() -> None:
    guard = LoginGuard(LIMITS, now=0.0)
    for _ in range(3):
        assert guard.retry_after_s("10.0.0.1", 0.0) == 0.0
        guard.failed("10.0.0.1", 0.0)
    assert guard.retry_after_s("10.0.0.1", 0.0) == pytest.approx(10.0)  # a try every 60/6 s
    assert guard.retry_after_s("10.0.0.1", 4.0) == pytest.approx(6.0)
    assert guard.retry_after_s("10.0.0.2", 4.0) == 0.0  # another address is not held up
    assert guard.retry_after_s("10.0.0.1", 10.001) == 0.0
    guard.failed("10.0.0.1", 10.001)
    assert guard.retry_after_s("10.0.0.1", 10.001) > 9.9  # the refill gave one try, not more


def test_failures_beyond_the_audit_budget_are_counted_then_reported_once() -> None:
    guard = LoginGuard(LIMITS, now=0.0)
    assert [guard.record_failure(0.0) for _ in range(4)] == [Recording(True, 0)] * 4
    assert [guard.record_failure(0.5) for _ in range(3)] == [Recording(False, 0)] * 3
    # 2 s later two tokens are back: the count of the three, then this failure's own.
    assert guard.record_failure(2.5) == Recording(True, 3)
    assert guard.record_failure(2.6) == Recording(False, 0)
    # 1 s later one token: room for the count only, which includes this failure.
    assert guard.record_failure(3.6) == Recording(False, 2)
    assert guard.record_failure(5.0) == Recording(True, 0)


def test_the_client_table_never_holds_more_than_max_clients() -> None:
    guard = LoginGuard(LoginLimits(client_burst=1, max_clients=100), now=0.0)
    for n in range(1000):
        guard.failed(f"10.0.{n // 256}.{n % 256}", float(n))
    assert len(guard) == 100
    assert guard.retry_after_s("10.0.3.231", 999.0) > 0  # the newest are kept
    assert guard.retry_after_s("10.0.0.0", 999.0) == 0.0  # the oldest were dropped


events = st.lists(
    st.tuples(st.integers(min_value=0, max_value=50), st.floats(min_value=0.0, max_value=5.0)),
    max_size=400,
)


@given(events)
def test_a_flood_writes_at_most_the_budget_and_loses_no_failure(
    flood: list[tuple[int, float]],
) -> None:
    limits = LoginLimits(client_burst=2, client_per_min=6.0, audit_burst=5, audit_per_min=30.0)
    guard = LoginGuard(limits, now=0.0)
    now, records, accounted, failures = 0.0, 0, 0, 0
    for client, step in flood:
        now += step
        address = f"192.0.2.{client}"
        if guard.retry_after_s(address, now) == 0.0:
            guard.failed(address, now)
        failures += 1  # a throttled attempt is a failed login too
        recording = guard.record_failure(now)
        records += int(recording.record) + int(recording.unrecorded > 0)
        accounted += int(recording.record) + recording.unrecorded
        budget = limits.audit_burst + now * limits.audit_per_min / 60.0
        assert records <= budget + 1e-9
        assert len(guard) <= limits.max_clients
    pending = failures - accounted
    assert pending >= 0  # every failure is recorded, counted in a summary, or still pending
    assert guard.record_failure(now + 3600.0).unrecorded == pending
