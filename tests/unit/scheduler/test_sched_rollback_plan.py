"""Rollback policy fields and the pure rollback decisions: parsed and refused with a
specific error, stored and read back, settable from the CLI; the rollback package's
check; what the rollback task inherits, its source versions and which failures join it;
and, as properties over any input, the rules docs/scheduler.md ("Rollback") states."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from ops.cli import parser
from ops.cli_policy import policy_from_args
from ota.catalog import FailureCause
from ota.records import SuccessMode, TaskType
from scheduler.errors import ValidationError
from scheduler.packages import Package
from scheduler.policy import parse_policy, policy_json
from scheduler.rollback_plan import (
    _NOT_INHERITED,
    check_rollback_package,
    rollback_policy,
    rollback_sources,
    rolled_back_by_cause,
)

NOW = 1_800_000_000_000
ABORT = [{"failure_pct": 20, "min_finished": 5}]


def package(pid: str, version: str, **more: Any) -> Package:
    fields: dict[str, Any] = {
        "id": pid,
        "sha256": "0" * 64,
        "size": 1,
        "type": TaskType.FIRMWARE,
        "version": version,
        "file_name": "fw.bin",
        "product": "",
        "allowed_sources": (),
        "custom_info": "",
        "description": "",
        "signed": False,
        "created_ms": NOW,
        **more,
    }
    return Package(**fields)


def refused(data: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_policy(data, NOW)
    return caught.value


def test_absent_rollback_fields_change_nothing_stored() -> None:
    policy = parse_policy(None, NOW)
    assert policy.rollback_package_id is None
    assert not policy.rollback_on_abort
    assert not policy.rollback_on_failed_confirmation
    assert "rollback_package_id" not in policy_json(policy)


def test_rollback_fields_parse_and_round_trip() -> None:
    data = {
        "rollback_package_id": "pkg-old",
        "rollback_on_abort": True,
        "abort": ABORT,
        "success": "confirmed",
        "rollback_on_failed_confirmation": True,
    }
    policy = parse_policy(data, NOW)
    assert policy.rollback_package_id == "pkg-old"
    assert policy.rollback_on_abort
    assert policy.rollback_on_failed_confirmation
    assert parse_policy(policy_json(policy), None) == policy


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"rollback_on_abort": True, "abort": ABORT}, "policy.rollback_on_abort"),
        (
            {"rollback_on_failed_confirmation": True, "success": "confirmed"},
            "policy.rollback_on_failed_confirmation",
        ),
    ],
)
def test_a_rollback_trigger_needs_a_package(data: dict[str, Any], field: str) -> None:
    error = refused(data)
    assert (error.code, error.field) == ("conflicting_fields", field)
    assert "needs policy.rollback_package_id" in error.message


def test_rollback_on_abort_needs_abort_rules() -> None:
    error = refused({"rollback_package_id": "p", "rollback_on_abort": True})
    assert (error.code, error.field) == ("conflicting_fields", "policy.rollback_on_abort")
    assert "abort rules" in error.message


def test_rollback_on_failed_confirmation_needs_confirmed_success() -> None:
    error = refused({"rollback_package_id": "p", "rollback_on_failed_confirmation": True})
    assert error.field == "policy.rollback_on_failed_confirmation"
    assert "success confirmed" in error.message


@pytest.mark.parametrize(
    ("value", "code"), [("", "bad_value"), (7, "wrong_type"), ("x" * 65, "too_long")]
)
def test_a_malformed_rollback_package_id_is_refused(value: Any, code: str) -> None:
    error = refused({"rollback_package_id": value})
    assert (error.code, error.field) == (code, "policy.rollback_package_id")


def test_the_cli_sets_the_rollback_fields() -> None:
    argv = (
        "tasks create --type firmware --package p --rollback-package pkg-old "
        "--abort 20:5 --rollback-on-abort"
    )
    policy = policy_from_args(parser().parse_args(argv.split()), NOW)
    assert policy["rollback_package_id"] == "pkg-old"
    assert policy["rollback_on_abort"] is True
    assert parse_policy(policy, NOW).rollback_on_abort


def test_the_rollback_package_must_fit_the_task() -> None:
    target = package("new", "2.0", product="meter")
    check_rollback_package(package("old", "1.0", product="meter"), target)
    check_rollback_package(package("old", "1.0"), target)  # no product named: any
    cases = [
        (package("sw", "1.0", type=TaskType.SOFTWARE), "wrong_rollback_type"),
        (package("other", "1.0", product="valve"), "wrong_rollback_product"),
        (package("again", "2.0", product="meter"), "same_rollback_version"),
    ]
    for rollback, code in cases:
        with pytest.raises(ValidationError) as caught:
            check_rollback_package(rollback, target)
        assert (caught.value.code, caught.value.field) == (code, "policy.rollback_package_id")


def test_the_rollback_task_keeps_pacing_and_retries_only() -> None:
    original = policy_json(
        parse_policy(
            {
                "rate_per_min": 60,
                "retry_count": 2,
                "waves": [{"count": 5}],
                "abort": ABORT,
                "success": "confirmed",
                "schedule_time_ms": NOW + 60_000,
                "rollback_package_id": "old",
                "rollback_on_abort": True,
            },
            NOW,
        )
    )
    inherited = parse_policy(rollback_policy(original), NOW)
    assert (inherited.rate_per_min, inherited.retry_count) == (60, 2)
    assert inherited.waves == ()
    assert inherited.abort == ()
    assert inherited.schedule_ms is None
    assert inherited.rollback_package_id is None
    assert inherited.success.value == "reported"


def test_the_rollback_allows_the_version_it_undoes() -> None:
    assert rollback_sources((), "2.0") == ()  # any source already
    assert rollback_sources(("0.9",), "2.0") == ("0.9", "2.0")
    assert rollback_sources(("0.9", "2.0"), "2.0") == ("0.9", "2.0")


def test_only_failed_confirmations_join_and_only_when_asked() -> None:
    for cause in (FailureCause.HEALTH_CHECK_FAILED, FailureCause.ROLLED_BACK):
        assert rolled_back_by_cause(int(cause), True)
        assert not rolled_back_by_cause(int(cause), False)
    assert not rolled_back_by_cause(int(FailureCause.CONFIRM_TIMEOUT), True)
    assert not rolled_back_by_cause(None, True)


# Properties. Few distinct values, so that equal products and versions come up often.
TYPES = st.sampled_from(list(TaskType))
PRODUCTS = st.sampled_from(["", "meter", "valve"])
VERSIONS = st.sampled_from(["1.0", "1.1", "2.0", "2.0-rc1"])
PACKAGES = st.builds(
    package,
    pid=st.sampled_from(["a", "b"]),
    version=VERSIONS,
    type=TYPES,
    product=PRODUCTS,
    allowed_sources=st.lists(VERSIONS, max_size=3, unique=True).map(tuple),
    signed=st.booleans(),
)
# The documented causes a failed confirmation ends with: health_check_failed, rolled_back.
FAILED_CONFIRMATIONS = {30, 31}
CAUSES = st.one_of(
    st.none(), st.sampled_from([int(c) for c in FailureCause]), st.integers(-1, 1100)
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
# A stored policy's keys: every not-inherited one, some inherited ones, and any other.
POLICY_KEYS = st.sampled_from(
    [*sorted(_NOT_INHERITED), "rate_per_min", "retry_count", "timeouts", "on_conflict"]
) | st.text(max_size=20)
STORED_POLICIES = st.dictionaries(POLICY_KEYS, JSON, max_size=12)
# API policies, each field optional; combinations parse_policy refuses are rejected.
API_POLICIES = st.fixed_dictionaries(
    {},
    optional={
        "schedule_time_ms": st.integers(NOW, NOW + 6 * 86_400_000),
        "retry_count": st.integers(0, 5),
        "retry_interval_min": st.integers(0, 1440),
        "retry_rules": st.fixed_dictionaries(
            {}, optional={"timeout": st.fixed_dictionaries({"count": st.integers(0, 3)})}
        ),
        "timeouts": st.fixed_dictionaries(
            {}, optional={"online_s": st.integers(1, 86_400), "confirm_s": st.integers(1, 600)}
        ),
        "rate_per_min": st.integers(1, 1000),
        "max_in_flight": st.integers(1, 100),
        "waves": st.lists(st.fixed_dictionaries({"count": st.integers(1, 50)}), max_size=3),
        "abort": st.lists(
            st.fixed_dictionaries(
                {"failure_pct": st.integers(1, 100), "min_finished": st.integers(1, 50)},
                optional={"cause": st.sampled_from([13, 30, 31])},
            ),
            max_size=2,
        ),
        "maintenance_window": st.just({"start": "22:00", "end": "04:00", "days": ["sat"]}),
        "require_online": st.booleans(),
        "on_conflict": st.sampled_from(["fail", "wait"]),
        "presigned_url": st.booleans(),
        "success": st.sampled_from(["reported", "confirmed"]),
        "continuous": st.booleans(),
        "end_time_ms": st.integers(NOW + 7 * 86_400_000, NOW + 8 * 86_400_000),
        "rollback_package_id": st.just("pkg-old"),
        "rollback_on_abort": st.booleans(),
        "rollback_on_failed_confirmation": st.booleans(),
    },
)


def refusal(rollback: Package, target: Package) -> str | None:
    """The documented rule, first failing check first: same type, then the same product
    when both name one, then another version."""
    if rollback.type is not target.type:
        return "wrong_rollback_type"
    if rollback.product and target.product and rollback.product != target.product:
        return "wrong_rollback_product"
    if rollback.version == target.version:
        return "same_rollback_version"
    return None


def admits(sources: tuple[str, ...], version: str) -> bool:
    """Whether a package with these allowed_sources installs on a device on `version`."""
    return not sources or version in sources


@settings(max_examples=300)
@given(PACKAGES, PACKAGES)
def test_a_rollback_package_is_refused_exactly_when_it_does_not_fit(
    rollback: Package, target: Package
) -> None:
    expected = refusal(rollback, target)
    if expected is None:
        check_rollback_package(rollback, target)
        return
    with pytest.raises(ValidationError) as caught:
        check_rollback_package(rollback, target)
    assert (caught.value.code, caught.value.field) == (expected, "policy.rollback_package_id")


@given(STORED_POLICIES)
def test_a_rollback_policy_drops_every_not_inherited_field_and_keeps_the_rest(
    policy: dict[str, Any],
) -> None:
    before = dict(policy)
    out = rollback_policy(policy)
    assert policy == before  # the task's own policy is not touched
    assert not set(out) & _NOT_INHERITED
    assert set(out) == set(policy) - _NOT_INHERITED
    assert all(out[k] is policy[k] for k in out)


@given(STORED_POLICIES)
def test_a_rollback_policy_is_idempotent(policy: dict[str, Any]) -> None:
    once = rollback_policy(policy)
    assert rollback_policy(once) == once


@settings(max_examples=200)
@given(API_POLICIES)
def test_a_rollback_task_keeps_the_tasks_pacing_retries_and_timeouts_only(
    data: dict[str, Any],
) -> None:
    try:
        original = parse_policy(data, NOW)
    except ValidationError:
        reject()
    inherited = parse_policy(rollback_policy(policy_json(original)), NOW)
    assert inherited == replace(
        original,
        schedule_ms=None,
        waves=(),
        abort=(),
        continuous=False,
        end_ms=None,
        success=SuccessMode.REPORTED,
        rollback_package_id=None,
        rollback_on_abort=False,
        rollback_on_failed_confirmation=False,
    )


@given(st.lists(VERSIONS, max_size=4, unique=True).map(tuple), VERSIONS, VERSIONS)
def test_rollback_sources_admit_the_undone_version_and_otherwise_the_same_devices(
    allowed: tuple[str, ...], undone: str, other: str
) -> None:
    sources = rollback_sources(iter(allowed), undone)
    assert admits(sources, undone)
    if other != undone:
        assert admits(sources, other) == admits(allowed, other)
    # The package's own list comes first, in its order, and nothing is repeated.
    assert sources[: len(allowed)] == allowed
    assert len(set(sources)) == len(sources)


@given(st.lists(VERSIONS, max_size=4, unique=True).map(tuple), VERSIONS)
def test_rollback_sources_are_idempotent(allowed: tuple[str, ...], undone: str) -> None:
    once = rollback_sources(allowed, undone)
    assert rollback_sources(once, undone) == once


@given(CAUSES, st.booleans())
def test_a_failed_device_joins_only_for_a_failed_confirmation_and_only_when_asked(
    cause: int | None, on_failed_confirmation: bool
) -> None:
    joins = rolled_back_by_cause(cause, on_failed_confirmation)
    assert joins is (on_failed_confirmation and cause in FAILED_CONFIRMATIONS)
