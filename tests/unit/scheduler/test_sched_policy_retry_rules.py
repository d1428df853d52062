"""A task's retry rules through the API's policy: parsed into the job spec in seconds, every
bad cause name or value refused with an error naming it, the stored form round-tripping,
and a task stored before retry rules releasing the same job spec as then."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota import policy_specs as specs
from ota.records import RetryRule
from ota.retry_rules import RULE_NAMES
from scheduler.errors import ValidationError
from scheduler.policy import parse_policy, policy_json
from scheduler.reconciler import job_spec

NOW = 1_800_000_000_000
TASK = {
    "id": "t1",
    "type": "firmware",
    "package": {
        "sha256": "ab" * 32,
        "version": "2.0",
        "file_name": "fw.bin",
        "file_size": 1,
        "allowed_sources": [],
    },
}


def test_rules_reach_the_job_spec_in_seconds_sorted_by_name() -> None:
    policy = parse_policy(
        {
            "retry_count": 2,
            "retry_interval_min": 5,
            "retry_rules": {
                "offline": {"count": 5, "interval_min": 10, "factor": 2, "max_interval_min": 120},
                "device_busy": {"count": 0},
            },
        },
        NOW,
    )
    spec = job_spec(TASK, policy)
    assert spec.retry_rules == (
        RetryRule("device_busy", 0, 0, 1.0, 86_400),
        RetryRule("offline", 5, 600, 2.0, 7_200),
    )
    assert (spec.retry_count, spec.retry_interval_s) == (2, 300)


def test_a_task_stored_before_retry_rules_releases_the_same_spec() -> None:
    stored = {"retry_count": 3, "retry_interval_min": 1, "timeouts": {"online_s": 60}}
    spec = job_spec(TASK, parse_policy(stored, None))
    assert spec.retry_rules == ()
    assert (spec.retry_count, spec.retry_interval_s) == (3, 60)
    assert policy_json(parse_policy(stored, None))["retry_rules"] == {}


@pytest.mark.parametrize(
    ("rules", "code", "field", "says"),
    [
        (
            {"low_batery": {"count": 1}},
            "unknown_field",
            "policy.retry_rules.low_batery",
            "names no failure cause or cause class",
        ),
        ({"offline": {}}, "missing_field", "policy.retry_rules.offline.count", "required"),
        ({"offline": {"count": 6}}, "out_of_range", "policy.retry_rules.offline.count", "[0, 5]"),
        (
            {"timeout": {"count": 1, "factor": 0.5}},
            "out_of_range",
            "policy.retry_rules.timeout.factor",
            "factor=0.5",
        ),
        (
            {"low_battery": {"count": 1, "interval_min": 1441}},
            "out_of_range",
            "policy.retry_rules.low_battery.interval_min",
            "1441",
        ),
        (
            {"offline": {"count": 1, "interval_min": 30, "max_interval_min": 10}},
            "out_of_range",
            "policy.retry_rules.offline.max_interval_min",
            "below interval_min=30",
        ),
        (
            {"offline": {"count": 1, "tries": 2}},
            "unknown_field",
            "policy.retry_rules.offline.tries",
            "tries",
        ),
        ({"offline": 3}, "wrong_type", "policy.retry_rules.offline", "must be an object"),
        ({"offline": {"count": "3"}}, "wrong_type", "policy.retry_rules.offline.count", "integer"),
        ([{"on": "offline"}], "wrong_type", "policy.retry_rules", "must be an object"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_cause_and_field(
    rules: Any, code: str, field: str, says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_policy({"retry_rules": rules}, NOW)
    assert (caught.value.code, caught.value.field) == (code, field)
    assert says in caught.value.message


RULE_JSON = st.fixed_dictionaries(
    {"count": st.integers(0, 5), "interval_min": st.integers(0, 60)},
    optional={"factor": st.floats(1.0, 10.0), "max_interval_min": st.integers(60, 1440)},
)


@given(st.dictionaries(st.sampled_from(sorted(RULE_NAMES)), RULE_JSON, max_size=6))
def test_the_stored_form_round_trips(rules: dict[str, dict[str, Any]]) -> None:
    policy = parse_policy({"retry_rules": rules}, NOW)
    assert {r.on for r in policy.retry_rules} == set(rules)
    assert parse_policy(policy_json(policy), None) == policy


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("offline=5", ("offline", {"count": 5})),
        ("timeout=2:15", ("timeout", {"count": 2, "interval_min": 15})),
        (
            "low_battery=3:10:2.5:240",
            (
                "low_battery",
                {"count": 3, "interval_min": 10, "factor": 2.5, "max_interval_min": 240},
            ),
        ),
        ("signature_check_failed=never", ("signature_check_failed", {"count": 0})),
    ],
)
def test_the_cli_syntax(text: str, parsed: tuple[str, dict[str, Any]]) -> None:
    assert specs.retry(text) == parsed
    parse_policy({"retry_rules": dict([parsed])}, NOW)


@pytest.mark.parametrize("text", ["offline", "=3", "offline=", "offline=x", "offline=1:2:3:4:5"])
def test_bad_cli_syntax_names_the_option(text: str) -> None:
    with pytest.raises(specs.SpecError, match=r"^--retry "):
        specs.retry(text)
