"""Rollback policy fields and the pure rollback decisions: parsed and refused with a
specific error, stored and read back, settable from the CLI; the rollback package's
check; what the rollback task inherits, its source versions and which failures join it."""

from __future__ import annotations

from typing import Any

import pytest

from ops.cli import parser
from ops.cli_policy import policy_from_args
from ota.catalog import FailureCause
from ota.records import TaskType
from scheduler.errors import ValidationError
from scheduler.packages import Package
from scheduler.policy import parse_policy, policy_json
from scheduler.rollback_plan import (
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
