"""The failed-login throttle per client address (scheduler/console/login_guard.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.console.login_guard import LoginGuard, LoginLimits


def test_an_address_is_throttled_after_its_burst_and_may_try_again_after_the_refill() -> None:
    guard = LoginGuard(LoginLimits(burst=3, per_min=6.0))
    for _ in range(3):
        assert guard.retry_after_s("10.0.0.1", 0.0) == 0.0
        guard.failed("10.0.0.1", 0.0)
    assert guard.retry_after_s("10.0.0.1", 0.0) == pytest.approx(10.0)  # a try every 60/6 s
    assert guard.retry_after_s("10.0.0.1", 4.0) == pytest.approx(6.0)
    assert guard.retry_after_s("10.0.0.2", 4.0) == 0.0  # another address is not held up
    assert guard.retry_after_s("10.0.0.1", 10.001) == 0.0
    guard.failed("10.0.0.1", 10.001)
    assert guard.retry_after_s("10.0.0.1", 10.001) > 9.9  # the refill gave one try, not more


def test_the_table_never_holds_more_than_max_clients() -> None:
    guard = LoginGuard(LoginLimits(burst=1, max_clients=100))
    for n in range(1000):
        guard.failed(f"10.0.{n // 256}.{n % 256}", float(n))
    assert len(guard) == 100
    assert guard.retry_after_s("10.0.3.231", 999.0) > 0  # the newest are kept
    assert guard.retry_after_s("10.0.0.0", 999.0) == 0.0  # the oldest were dropped


@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=300), st.floats(min_value=0, max_value=3)),
        max_size=400,
    )
)
def test_no_address_gets_more_tries_than_its_burst_and_refill(
    attempts: list[tuple[int, float]],
) -> None:
    limits = LoginLimits(burst=2, per_min=6.0, max_clients=50)
    guard = LoginGuard(limits)
    now, tried = 0.0, {}
    for client, step in attempts:
        now += step
        address = f"192.0.2.{client}"
        if guard.retry_after_s(address, now) == 0.0:
            guard.failed(address, now)
            tried.setdefault(address, []).append(now)
        assert len(guard) <= limits.max_clients
    if len({c for c, _ in attempts}) <= limits.max_clients:  # none dropped from the table
        for times in tried.values():
            spent = times[-1] - times[0]
            assert len(times) <= limits.burst + spent * limits.per_min / 60.0 + 1e-9
