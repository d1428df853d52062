"""Fleet reports: duration histograms, and merging the reports of a split fleet."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from devices.report import bucket_of, bucket_top_s, histogram, merge, summarize
from ops.fleet_group import FleetProcess, merge_ready, slices

_durations = st.lists(st.floats(0.0005, 5000.0), min_size=1, max_size=300)


@given(st.floats(0.0, 10_000.0))
def test_a_duration_lies_in_its_bucket_within_one_percent(duration: float) -> None:
    bucket = bucket_of(duration)
    assert duration <= bucket_top_s(bucket) * (1 + 1e-9)
    if bucket > 0:
        assert bucket_top_s(bucket - 1) < duration * (1 + 1e-9)


def _report(durations: list[float], outcomes: dict[str, int]) -> dict[str, object]:
    return {
        "size": sum(outcomes.values()),
        "online": sum(outcomes.values()),
        "outcomes": outcomes,
        "durations_s": summarize(durations),
        "histogram": histogram(durations),
    }


@given(_durations, st.integers(1, 4))
def test_merged_percentiles_are_within_one_percent_of_the_whole(
    durations: list[float], parts: int
) -> None:
    cut = [durations[n::parts] for n in range(parts)]
    merged = merge(_report(part, {"succeeded": len(part)}) for part in cut)
    assert merged["size"] == len(durations)
    assert merged["outcomes"] == {"succeeded": len(durations)}
    assert merged["histogram"] == histogram(durations)
    ordered = sorted(durations)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        exact = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
        assert exact - 0.001 <= merged["durations_s"][name] <= max(exact * 1.01, exact + 0.001)
    assert math.isclose(merged["durations_s"]["max"], round(ordered[-1], 3))


def test_merge_sums_outcomes_and_tolerates_empty_reports() -> None:
    merged = merge(
        [
            _report([1.0], {"succeeded": 1, "failed_7": 2}),
            {},
            _report([], {"idle": 4}),
        ]
    )
    assert merged["outcomes"] == {"failed_7": 2, "idle": 4, "succeeded": 1}
    assert (merged["size"], merged["online"]) == (7, 7)
    assert merge([])["durations_s"] == {}


@given(st.integers(1, 100_000), st.integers(1, 16))
def test_slices_cover_the_fleet_once_in_order(size: int, parts: int) -> None:
    cut = slices(size, parts)
    assert len(cut) == min(size, parts)
    assert [first for first, _ in cut] == [sum(c for _, c in cut[:n]) for n in range(len(cut))]
    assert sum(count for _, count in cut) == size
    assert max(c for _, c in cut) - min(c for _, c in cut) <= 1


def test_merge_ready_sums_devices_and_waits_for_the_slowest() -> None:
    lines = [
        {"ready": True, "online": 3, "connect_s": 1.5, "kinds": {"ok": 2, "fails": 1}},
        {"ready": True, "online": 4, "connect_s": 2.5, "kinds": {"ok": 4}},
    ]
    assert merge_ready(lines) == {
        "ready": True,
        "online": 7,
        "connect_s": 2.5,
        "kinds": {"fails": 1, "ok": 6},
    }


def test_fleet_process_flags() -> None:
    command = FleetProcess({}, size=5, first=10, own_downlinks=True, mix="none").command
    assert command[-7:] == ["--size", "5", "--first", "10", "--own-downlinks", "--mix", "none"]
    assert "--own-downlinks" not in FleetProcess({}, own_downlinks=False).command
