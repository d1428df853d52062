"""The task form's retry rules: one per line in the CLI's syntax, into the API's policy;
a line it cannot read is refused naming the form field."""

from __future__ import annotations

import pytest

from scheduler.console import taskform
from scheduler.errors import ValidationError
from scheduler.policy import parse_policy

FORM = {"type": "firmware", "package_id": "p", "device_ids": "d1"}


def test_each_line_is_one_rule() -> None:
    form = {**FORM, "retry_rules": "offline=5:10:2:120\n\n  low_battery=never  \n"}
    policy = taskform.task_body(form, now_ms=0)["policy"]
    assert policy["retry_rules"] == {
        "offline": {"count": 5, "interval_min": 10, "factor": 2.0, "max_interval_min": 120},
        "low_battery": {"count": 0},
    }
    assert [r.on for r in parse_policy(policy, None).retry_rules] == ["low_battery", "offline"]


def test_no_rules_leave_the_policy_without_them() -> None:
    assert "retry_rules" not in taskform.task_body({**FORM, "retry_rules": " "}, now_ms=0)["policy"]


def test_an_unreadable_line_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        taskform.task_body({**FORM, "retry_rules": "offline=often"}, now_ms=0)
    assert caught.value.field == "retry_rules"
    assert "retry 'offline=often'" in caught.value.message
