"""Task policy `success` and `timeouts.confirm_s` (two-stage success): parsed with their
bounds and defaults, rejected specifically, stored and read back, settable from the CLI,
described in the OpenAPI schema, and carried to the workers in the job spec."""

from __future__ import annotations

from typing import Any

import pytest

from ops.cli import parser
from ops.cli_policy import policy_from_args
from ota.records import (
    JobStartRecord,
    RecordError,
    SuccessMode,
    Windows,
    decode_inbox,
    encode,
)
from scheduler.errors import ValidationError
from scheduler.policy import TaskPolicy, parse_policy, policy_json
from scheduler.policy_schema import MAX_WINDOW_S, POLICY, json_schema
from scheduler.reconciler import job_spec

NOW = 1_800_000_000_000


def test_success_is_reported_by_default_with_a_half_hour_confirmation_window() -> None:
    policy = parse_policy(None, NOW)
    assert policy.success is SuccessMode.REPORTED
    assert policy.windows.confirm_s == 1800
    stored = policy_json(policy)
    assert stored["success"] == "reported"
    assert stored["timeouts"]["confirm_s"] == 1800


def test_confirmed_with_its_own_window_parses_and_round_trips() -> None:
    policy = parse_policy({"success": "confirmed", "timeouts": {"confirm_s": 600}}, NOW)
    assert policy.success is SuccessMode.CONFIRMED
    assert policy.windows == Windows(confirm_s=600)
    assert parse_policy(policy_json(policy), None) == policy


def test_a_policy_stored_before_two_stage_success_reads_back_as_reported() -> None:
    stored = {"retry_count": 1, "timeouts": {"online_s": 60}, "on_conflict": "fail"}
    policy = parse_policy(stored, None)
    assert policy.success is SuccessMode.REPORTED
    assert policy.windows.confirm_s == Windows().confirm_s


@pytest.mark.parametrize("seconds", [1, MAX_WINDOW_S])
def test_the_confirmation_window_bounds_are_inclusive(seconds: int) -> None:
    assert parse_policy({"timeouts": {"confirm_s": seconds}}, NOW).windows.confirm_s == seconds


@pytest.mark.parametrize(
    ("policy", "code", "field", "message"),
    [
        (
            {"success": "healthy"},
            "bad_value",
            "policy.success",
            "policy.success='healthy' is not reported or confirmed",
        ),
        ({"success": "Confirmed"}, "bad_value", "policy.success", None),
        ({"success": True}, "wrong_type", "policy.success", None),
        ({"success": "x" * 17}, None, "policy.success", None),
        ({"timeouts": {"confirm_s": 0}}, "out_of_range", "policy.timeouts.confirm_s", None),
        (
            {"timeouts": {"confirm_s": MAX_WINDOW_S + 1}},
            "out_of_range",
            "policy.timeouts.confirm_s",
            None,
        ),
        ({"timeouts": {"confirm_s": "600"}}, "wrong_type", "policy.timeouts.confirm_s", None),
        ({"timeouts": {"confirm_ms": 600}}, "unknown_field", "policy.timeouts.confirm_ms", None),
    ],
)
def test_a_bad_success_or_window_is_rejected_specifically(
    policy: dict[str, Any], code: str | None, field: str, message: str | None
) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_policy(policy, NOW)
    assert caught.value.field == field
    if code is not None:
        assert caught.value.code == code
    if message is not None:
        assert str(caught.value) == message


def test_the_schema_lists_the_choices_and_defaults() -> None:
    schema = json_schema(POLICY)["properties"]
    assert schema["success"]["enum"] == ["reported", "confirmed"]
    assert schema["success"]["default"] == "reported"
    confirm = schema["timeouts"]["properties"]["confirm_s"]
    assert (confirm["minimum"], confirm["maximum"], confirm["default"]) == (1, MAX_WINDOW_S, 1800)


def test_the_cli_asks_for_confirmed_success_and_its_window() -> None:
    argv = "tasks create --type firmware --package p --success confirmed --timeout confirm_s=600"
    policy = policy_from_args(parser().parse_args(argv.split()), NOW)
    assert policy == {"success": "confirmed", "timeouts": {"confirm_s": 600}}
    parsed = parse_policy(policy, NOW)
    assert (parsed.success, parsed.windows.confirm_s) == (SuccessMode.CONFIRMED, 600)


def test_the_cli_refuses_another_success() -> None:
    argv = "tasks create --type firmware --package p --success healthy"
    with pytest.raises(SystemExit):
        parser().parse_args(argv.split())


DOC = {
    "id": "task-1",
    "type": "firmware",
    "package": {
        "sha256": "ab" * 32,
        "version": "2.0",
        "file_name": "fw.bin",
        "file_size": 10,
        "allowed_sources": [],
    },
}


@pytest.mark.parametrize("success", list(SuccessMode))
def test_the_job_start_record_carries_the_success_and_window_to_the_workers(
    success: SuccessMode,
) -> None:
    policy = TaskPolicy(success=success, windows=Windows(confirm_s=90))
    spec = job_spec(DOC, policy)
    assert (spec.success, spec.windows.confirm_s) == (success, 90)
    record = JobStartRecord(device_id="d1", job=spec, id="r1", at_ms=NOW)
    assert decode_inbox(encode(record)) == record


def test_a_job_start_written_before_two_stage_success_reads_as_reported() -> None:
    record = JobStartRecord(device_id="d1", job=job_spec(DOC, TaskPolicy()), id="r1")
    raw = encode(record).replace(b',"success":"reported"', b"")
    assert b"success" not in raw
    decoded = decode_inbox(raw)
    assert isinstance(decoded, JobStartRecord)
    assert decoded.job.success is SuccessMode.REPORTED


def test_a_job_start_with_an_unknown_success_is_refused() -> None:
    record = JobStartRecord(device_id="d1", job=job_spec(DOC, TaskPolicy()), id="r1")
    raw = encode(record).replace(b'"success":"reported"', b'"success":"maybe"')
    with pytest.raises(RecordError) as caught:
        decode_inbox(raw)
    assert caught.value.reason == "bad_value"
    assert "success='maybe' is not allowed" in caught.value.message
