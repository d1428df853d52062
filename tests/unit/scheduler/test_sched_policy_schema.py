"""The task policy defined once: the OpenAPI schema, the validation and the CLI's options
all come from scheduler.policy_schema.POLICY and agree with each other."""

from __future__ import annotations

from typing import Any

import pytest

from ops.cli import parser
from ops.cli_policy import policy_from_args
from scheduler.errors import ValidationError
from scheduler.policy import parse_policy, policy_json
from scheduler.policy_schema import MAX_RATE_PER_MIN, POLICY, Field, field, json_schema, names

NOW = 1_800_000_000_000

# The smallest valid value of each object that has required members, to place one field in.
_RAMP = {"base_per_min": 1, "factor": 2.0, "every_successes": 1, "max_per_min": MAX_RATE_PER_MIN}
_ABORT = {"failure_pct": 10.0, "min_finished": 1}


def _placed(path: str, value: Any) -> dict[str, Any]:
    """A policy that is valid apart, perhaps, from `value` at `path`."""
    head, _, name = path.partition(".")
    if head == "end_time_ms":  # only a continuous task has an end
        return {"continuous": True, "end_time_ms": value}
    if not name:
        return {head: value}
    if head == "ramp":
        return {"ramp": {**_RAMP, name: value}}
    if head == "waves":
        base = {} if name in ("count", "percent") else {"count": 1}
        return {"waves": [{**base, name: value}]}
    if head == "abort":
        return {"abort": [{**_ABORT, name: value}]}
    if head == "retry_rules" and "." in name:  # one rule, of which count is required
        on, _, member = name.partition(".")
        return {"retry_rules": {on: {"count": 1, member: value}}}
    return {head: {name: value}}


def _bounded(spec: Field, prefix: str = "") -> list[tuple[str, Field]]:
    members = spec.items.members if spec.items is not None else spec.members
    out = []
    for m in members:
        path = prefix + m.name
        if m.low is not None:
            out.append((path, m))
        out.extend(_bounded(m, path + "."))
    return out


BOUNDED = _bounded(POLICY)


def test_every_bounded_field_is_checked() -> None:
    paths = {path for path, _ in BOUNDED}
    assert {"retry_count", "ramp.factor", "waves.percent", "abort.cause", "timeouts.online_s"} <= (
        paths
    )


@pytest.mark.parametrize(("path", "spec"), BOUNDED, ids=[p for p, _ in BOUNDED])
def test_validation_enforces_the_schemas_bounds(path: str, spec: Field) -> None:
    schema = json_schema(spec)
    low, high = schema["minimum"], schema["maximum"]
    step = 1 if spec.type == "integer" else 0.0001
    if path == "abort.cause":  # a known cause code; any code is within the bounds
        low = high = 28
    for inside in (low, high):
        parse_policy(_placed(path, inside), None)
    for outside in (low - step, high + step):
        if path == "abort.cause":
            break
        with pytest.raises(ValidationError) as caught:
            parse_policy(_placed(path, outside), None)
        assert caught.value.field is not None
        assert caught.value.field.endswith(path.rpartition(".")[2])


def _objects(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if schema.get("type") == "object":
        found.append((path, schema))
        for name, child in schema["properties"].items():
            found.extend(_objects(child, f"{path}.{name}" if path else name))
    if "items" in schema:
        found.extend(_objects(schema["items"], path))
    return found


@pytest.mark.parametrize(
    ("path", "schema"), _objects(json_schema(POLICY)), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_object_accepts_exactly_the_fields_the_schema_lists(
    path: str, schema: dict[str, Any]
) -> None:
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == names(path)
    document = _placed(f"{path}.typo", 1) if path else {"typo": 1}
    with pytest.raises(ValidationError) as caught:
        parse_policy(document, None)
    assert caught.value.code == "unknown_field"


def test_defaults_in_the_schema_are_the_parsed_defaults() -> None:
    stored = policy_json(parse_policy(None, NOW))
    for name in ("retry_count", "retry_interval_min", "require_online", "on_conflict"):
        assert json_schema(field(name))["default"] == stored[name]
    for name, seconds in stored["timeouts"].items():
        assert json_schema(field(f"timeouts.{name}"))["default"] == seconds


def test_choices_are_an_enum_and_required_members_are_listed() -> None:
    schema = json_schema(POLICY)["properties"]
    assert schema["on_conflict"]["enum"] == ["fail", "wait"]
    assert schema["ramp"]["required"] == [
        "base_per_min",
        "factor",
        "every_successes",
        "max_per_min",
    ]
    assert schema["maintenance_window"]["properties"]["days"]["items"]["enum"][0] == "mon"


def test_the_cli_options_build_a_policy_the_scheduler_accepts() -> None:
    argv = (
        "tasks create --type firmware --package p"
        " --schedule +1h --retry-count 2 --retry-interval-min 5"
        " --timeout online_s=60 --timeout version_s=30 --max-in-flight 9"
        " --ramp 10,2,5,100 --wave 5:80:approve --wave 10%"
        " --abort 20:10:28 --window 22:00-04:30@sat,sun --require-online"
        " --on-conflict wait --presigned --retry offline=5:10:2:120 --retry device_busy=never"
    )
    args = parser().parse_args(argv.split())
    policy = policy_from_args(args, NOW)
    assert policy == {
        "schedule_time_ms": NOW + 3_600_000,
        "retry_count": 2,
        "retry_interval_min": 5,
        "retry_rules": {
            "offline": {"count": 5, "interval_min": 10, "factor": 2.0, "max_interval_min": 120},
            "device_busy": {"count": 0},
        },
        "timeouts": {"online_s": 60, "version_s": 30},
        "ramp": {"base_per_min": 10, "factor": 2.0, "every_successes": 5, "max_per_min": 100},
        "max_in_flight": 9,
        "waves": [
            {"count": 5, "success_threshold_pct": 80.0, "approval": True},
            {"percent": 10.0},
        ],
        "abort": [{"failure_pct": 20.0, "min_finished": 10, "cause": 28}],
        "maintenance_window": {"start": "22:00", "end": "04:30", "days": ["sat", "sun"]},
        "require_online": True,
        "on_conflict": "wait",
        "presigned_url": True,
    }
    assert parse_policy(policy, NOW).max_in_flight == 9
    assert [r.on for r in parse_policy(policy, NOW).retry_rules] == ["device_busy", "offline"]


def test_no_policy_option_given_asks_for_the_default_policy() -> None:
    args = parser().parse_args(["tasks", "create", "--type", "software", "--package", "p"])
    assert policy_from_args(args, NOW) == {}


def test_every_policy_field_is_settable_from_the_command_line() -> None:
    create = parser().parse_args(["tasks", "create", "--type", "firmware", "--package", "p"])
    assert {m.name for m in POLICY.members} <= set(vars(create))
