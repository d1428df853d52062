"""Policy parsing: every limit and malformed value gets its own error; the stored form round-trips."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.catalog import FailureCause
from ota.records import ConflictPolicy
from scheduler.errors import ValidationError
from scheduler.policy import (
    MAX_IN_FLIGHT,
    MAX_SCHEDULE_AHEAD_MS,
    StoredPolicies,
    TaskPolicy,
    parse_policy,
    policy_json,
)

NOW = 1_800_000_000_000


def test_empty_policy_has_iotda_defaults() -> None:
    policy = parse_policy(None, NOW)
    assert policy == TaskPolicy()
    assert policy.max_in_flight is None
    assert "max_in_flight" not in policy_json(policy)
    assert policy.windows.online_s == 25 * 3600
    assert policy.windows.version_s == 180


def test_full_policy_parses() -> None:
    policy = parse_policy(
        {
            "schedule_time_ms": NOW + 3600_000,
            "retry_count": 5,
            "retry_interval_min": 1440,
            "timeouts": {"online_s": 60, "version_s": 30},
            "ramp": {"base_per_min": 10, "factor": 2, "every_successes": 5, "max_per_min": 100},
            "max_in_flight": 500,
            "waves": [{"count": 5, "success_threshold_pct": 80, "approval": True}, {"percent": 10}],
            "abort": [{"failure_pct": 20, "min_finished": 10, "cause": 28}],
            "maintenance_window": {"start": "22:00", "end": "04:30", "days": ["sat", "sun"]},
            "on_conflict": "wait",
        },
        NOW,
    )
    assert policy.windows.online_s == 60
    assert policy.windows.result_s == 24 * 3600
    assert policy.waves[0].approval
    assert policy.waves[1].percent == 10.0
    assert policy.abort[0].cause is FailureCause.UPDATE_FAILED
    assert policy.maintenance is not None
    assert policy.maintenance.days == (5, 6)
    assert policy.maintenance.end_min == 4 * 60 + 30
    assert policy.on_conflict is ConflictPolicy.WAIT
    assert policy.max_in_flight == 500
    assert parse_policy(policy_json(policy), None) == policy


def test_max_in_flight_bounds_are_inclusive() -> None:
    assert parse_policy({"max_in_flight": 1}, NOW).max_in_flight == 1
    assert parse_policy({"max_in_flight": MAX_IN_FLIGHT}, NOW).max_in_flight == MAX_IN_FLIGHT
    assert parse_policy({"max_in_flight": 20.0}, NOW).max_in_flight == 20  # JSON's 20.0
    with pytest.raises(ValidationError, match=r"policy.max_in_flight=0 is out of range \[1, "):
        parse_policy({"max_in_flight": 0}, NOW)


@pytest.mark.parametrize(
    ("policy", "code", "field"),
    [
        ({"retry_count": 6}, "out_of_range", "policy.retry_count"),
        ({"retry_count": -1}, "out_of_range", "policy.retry_count"),
        ({"retry_count": "3"}, "wrong_type", "policy.retry_count"),
        ({"retry_count": True}, "wrong_type", "policy.retry_count"),
        ({"retry_interval_min": 1441}, "out_of_range", "policy.retry_interval_min"),
        ({"schedule_time_ms": NOW - 3_600_000}, "bad_schedule_time", "policy.schedule_time_ms"),
        (
            {"schedule_time_ms": NOW + MAX_SCHEDULE_AHEAD_MS + 1},
            "bad_schedule_time",
            "policy.schedule_time_ms",
        ),
        ({"timeouts": {"online_s": 0}}, "out_of_range", "policy.timeouts.online_s"),
        ({"timeouts": {"online_sec": 5}}, "unknown_field", "policy.timeouts.online_sec"),
        ({"rate_per_min": 0}, "out_of_range", "policy.rate_per_min"),
        ({"rate_per_min": 1.5}, "wrong_type", "policy.rate_per_min"),
        ({"max_in_flight": 0}, "out_of_range", "policy.max_in_flight"),
        ({"max_in_flight": -5}, "out_of_range", "policy.max_in_flight"),
        ({"max_in_flight": MAX_IN_FLIGHT + 1}, "out_of_range", "policy.max_in_flight"),
        ({"max_in_flight": 2.5}, "wrong_type", "policy.max_in_flight"),
        ({"max_in_flight": "100"}, "wrong_type", "policy.max_in_flight"),
        ({"max_in_flight": True}, "wrong_type", "policy.max_in_flight"),
        ({"max_in_flight": [10]}, "wrong_type", "policy.max_in_flight"),
        (
            {
                "rate_per_min": 5,
                "ramp": {"base_per_min": 1, "factor": 2, "every_successes": 1, "max_per_min": 9},
            },
            "conflicting_fields",
            "policy.ramp",
        ),
        (
            {"ramp": {"base_per_min": 10, "factor": 2, "every_successes": 1, "max_per_min": 9}},
            "out_of_range",
            "policy.ramp.max_per_min",
        ),
        (
            {"ramp": {"base_per_min": 1, "factor": 50, "every_successes": 1, "max_per_min": 9}},
            "out_of_range",
            "policy.ramp.factor",
        ),
        ({"waves": [{}]}, "bad_wave", "policy.waves[0]"),
        ({"waves": [{"count": 1, "percent": 5}]}, "bad_wave", "policy.waves[0]"),
        ({"waves": [{"count": 1, "success_threshold_pct": 101}]}, "out_of_range", None),
        ({"waves": "all"}, "wrong_type", "policy.waves"),
        ({"abort": [{"failure_pct": 10, "min_finished": 5, "cause": 999}]}, "unknown_cause", None),
        ({"abort": [{"failure_pct": 10}]}, "missing_field", "policy.abort[0].min_finished"),
        (
            {"maintenance_window": {"start": "25:00", "end": "01:00"}},
            "bad_time",
            "policy.maintenance_window.start",
        ),
        (
            {"maintenance_window": {"start": "1:00", "end": "1:00"}},
            "bad_time",
            "policy.maintenance_window",
        ),
        (
            {"maintenance_window": {"start": "01:00", "end": "02:00", "days": ["funday"]}},
            "bad_value",
            None,
        ),
        ({"on_conflict": "queue"}, "bad_value", "policy.on_conflict"),
        ({"retries": 3}, "unknown_field", "policy.retries"),
        ([1, 2], "wrong_type", "policy"),
    ],
)
def test_bad_policy_is_rejected_specifically(policy: Any, code: str, field: str | None) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_policy(policy, NOW)
    assert caught.value.code == code
    if field is not None:
        assert caught.value.field == field
    assert caught.value.message


@given(
    retry=st.integers(0, 5),
    interval=st.integers(0, 1440),
    rate=st.one_of(st.none(), st.integers(1, 1_000_000)),
    in_flight=st.one_of(st.none(), st.integers(1, MAX_IN_FLIGHT)),
    waves=st.lists(st.tuples(st.integers(1, 1000), st.floats(0, 100), st.booleans()), max_size=5),
)
def test_round_trip(
    retry: int,
    interval: int,
    rate: int | None,
    in_flight: int | None,
    waves: list[tuple[int, float, bool]],
) -> None:
    data: dict[str, Any] = {
        "retry_count": retry,
        "retry_interval_min": interval,
        "waves": [{"count": c, "success_threshold_pct": t, "approval": a} for c, t, a in waves],
    }
    if rate is not None:
        data["rate_per_min"] = rate
    if in_flight is not None:
        data["max_in_flight"] = in_flight
    policy = parse_policy(data, NOW)
    assert parse_policy(policy_json(policy), None) == policy


def test_a_stored_policy_is_parsed_once_until_it_changes() -> None:
    stored = policy_json(parse_policy({"rate_per_min": 600, "retry_count": 2}, None))
    policies = StoredPolicies()
    first = policies.of("t1", stored)
    assert first == parse_policy(stored, None)
    assert policies.of("t1", orjson.loads(orjson.dumps(stored))) is first  # equal: reused
    changed = {**stored, "rate_per_min": 60}
    assert policies.of("t1", changed).rate_per_min == 60  # a changed policy: parsed again
    assert policies.of("t2", stored) is not first  # another task: its own


def test_stored_policies_start_again_past_their_size() -> None:
    stored = policy_json(parse_policy({}, None))
    policies = StoredPolicies(size=2)
    kept = policies.of("t1", stored)
    policies.of("t2", stored)
    policies.of("t3", stored)  # full: starts again
    assert policies.of("t1", stored) is not kept
    assert policies.of("t1", stored) == kept
