"""The task form's continuous switch and end time, into the API's policy; an unreadable end
is refused naming the form field."""

from __future__ import annotations

import pytest

from scheduler.console import taskform
from scheduler.errors import ValidationError
from scheduler.policy import parse_policy

FORM = {"type": "firmware", "package_id": "p", "groups": "north"}
NOW = 1_800_000_000_000


def test_continuous_with_a_relative_end() -> None:
    policy = taskform.task_body({**FORM, "continuous": "on", "end": " +2h "}, NOW)["policy"]
    assert policy == {"continuous": True, "end_time_ms": NOW + 2 * 3_600_000}
    assert parse_policy(policy, NOW).open_at(NOW + 3_600_000)


def test_unchecked_leaves_the_policy_without_it() -> None:
    policy = taskform.task_body({**FORM, "end": ""}, NOW)["policy"]
    assert "continuous" not in policy
    assert "end_time_ms" not in policy


def test_an_unreadable_end_names_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        taskform.task_body({**FORM, "continuous": "on", "end": "tomorrow"}, NOW)
    assert caught.value.field == "end"
    assert "end 'tomorrow'" in caught.value.message
