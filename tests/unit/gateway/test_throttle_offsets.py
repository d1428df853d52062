from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.offsets import OffsetTracker
from gateway.throttle import PresenceThrottle


def test_throttle_once_per_interval() -> None:
    throttle = PresenceThrottle(interval_ms=1000)
    assert throttle.should_emit("d", 0)
    assert not throttle.should_emit("d", 999)
    assert throttle.should_emit("d", 1000)
    assert throttle.should_emit("e", 1000)


def test_throttle_after_offline_emits_again() -> None:
    throttle = PresenceThrottle(interval_ms=1000)
    assert throttle.should_emit("d", 0)
    throttle.offline("d")
    assert throttle.should_emit("d", 1)


def test_throttle_clock_going_back_emits() -> None:
    throttle = PresenceThrottle(interval_ms=1000)
    assert throttle.should_emit("d", 5000)
    assert throttle.should_emit("d", 100)


def test_throttle_is_bounded() -> None:
    throttle = PresenceThrottle(interval_ms=1000, max_devices=2)
    for name in ("a", "b", "c"):
        assert throttle.should_emit(name, 0)
    assert throttle.should_emit("a", 1)  # forgotten, so emitted again
    assert not throttle.should_emit("c", 1)


def test_commit_point_waits_for_the_gap() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(0, offset)
    tracker.finished(0, 11)
    tracker.finished(0, 12)
    assert tracker.committable() == {}
    tracker.finished(0, 10)
    assert tracker.committable() == {0: 13}
    assert tracker.committable() == {}
    assert tracker.in_flight() == 0


def test_partitions_are_independent_and_revocable() -> None:
    tracker = OffsetTracker()
    tracker.started(0, 1)
    tracker.started(1, 5)
    tracker.finished(1, 5)
    assert tracker.committable() == {1: 6}
    tracker.forget({0})
    tracker.finished(0, 1)
    assert tracker.committable() == {}
    assert tracker.in_flight() == 0


def test_offsets_must_ascend() -> None:
    tracker = OffsetTracker()
    tracker.started(0, 5)
    with pytest.raises(ValueError, match="not after"):
        tracker.started(0, 5)


@given(st.permutations(list(range(30))), st.integers(min_value=0, max_value=30))
def test_commit_point_is_the_acknowledged_prefix(order: list[int], acked: int) -> None:
    tracker = OffsetTracker()
    for offset in range(30):
        tracker.started(3, offset)
    done = set(order[:acked])
    for offset in order[:acked]:
        tracker.finished(3, offset)
    prefix = 0
    while prefix in done:
        prefix += 1
    assert tracker.committable().get(3, 0) == prefix
