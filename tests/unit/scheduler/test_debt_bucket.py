"""The token bucket kept as debt (scheduler/debt_bucket.py) that both failure throttles
use, in each process and in Redis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.debt_bucket import Rate


def test_a_full_bucket_gives_its_burst_at_once_then_one_a_step() -> None:
    rate = Rate(burst=3, per_min=6.0)
    assert (rate.step_ms, rate.spare_ms) == (10_000, 20_000)
    assert [rate.tries(debt, 1) for debt in (0, 10_000, 20_000)] == [1, 1, 1]
    assert rate.tries(30_000, 1) == 0  # three taken at once: none left
    assert rate.wait_ms(30_000) == 10_000
    assert rate.wait_ms(24_000) == 4_000  # 6 s later
    assert rate.tries(0, 5) == 3  # never more than the burst at once
    assert rate.tries(15_000, 2) == 1
    assert rate.wait_ms(-5.0) == 0.0
    assert rate.tries(-5.0, 2) == 2


def test_a_step_is_whole_milliseconds_rounded_up() -> None:
    assert Rate(1, 7.0).step_ms == 8572  # 8571.4...: never faster than 7 a minute
    assert Rate(1, 60_000.0).step_ms == 1
    assert Rate(1, 1e9).step_ms == 1


@pytest.mark.parametrize(("burst", "per_min"), [(0, 6.0), (-1, 6.0), (3, 0.0), (3, -1.0)])
def test_a_bucket_that_could_give_nothing_is_refused(burst: int, per_min: float) -> None:
    with pytest.raises(ValueError, match="burst >= 1 and per_min > 0"):
        Rate(burst, per_min)


@given(
    st.integers(min_value=1, max_value=20),
    st.floats(min_value=0.5, max_value=600.0),
    st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=30_000.0), st.integers(1, 3)), max_size=200
    ),
)
def test_tries_taken_never_exceed_the_burst_and_refill_and_a_wait_is_exact(
    burst: int, per_min: float, attempts: list[tuple[float, int]]
) -> None:
    rate = Rate(burst, per_min)
    now = paid_at = 0.0
    taken_in_all = 0
    for step, want in attempts:
        now += step
        debt = max(0.0, paid_at - now)
        taken = rate.tries(debt, want)
        assert 0 <= taken <= want
        assert (taken == 0) == (rate.wait_ms(debt) > 0)
        if taken == 0:  # exactly when the wait says, a try is back
            assert rate.tries(debt - rate.wait_ms(debt), 1) == 1
        paid_at = now + debt + taken * rate.step_ms
        taken_in_all += taken
        assert paid_at - now <= burst * rate.step_ms + 1e-6  # the debt stays bounded
        assert taken_in_all <= burst + now / rate.step_ms + 1e-9
