"""The task form's rollback package and switches, into the API's policy."""

from __future__ import annotations

from scheduler.console import taskform
from scheduler.policy import parse_policy

FORM = {"type": "firmware", "package_id": "p", "device_ids": "d1"}
NOW = 1_800_000_000_000


def test_the_rollback_fields_reach_the_policy() -> None:
    form = {
        **FORM,
        "rollback_package_id": " old ",
        "abort": "20:5",
        "rollback_on_abort": "on",
        "success": "confirmed",
        "rollback_on_failed_confirmation": "on",
    }
    policy = taskform.task_body(form, NOW)["policy"]
    assert policy["rollback_package_id"] == "old"
    assert policy["rollback_on_abort"] is True
    assert policy["rollback_on_failed_confirmation"] is True
    parsed = parse_policy(policy, NOW)
    assert parsed.rollback_on_abort
    assert parsed.rollback_on_failed_confirmation


def test_none_chosen_leaves_the_policy_without_them() -> None:
    policy = taskform.task_body({**FORM, "rollback_package_id": ""}, NOW)["policy"]
    assert not {"rollback_package_id", "rollback_on_abort"} & set(policy)
