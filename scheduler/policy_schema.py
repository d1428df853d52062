"""The task policy's fields, declared once: names, types, bounds, meaning and CLI option.

Pure data and two readers of it. `POLICY` is the one description of what a task's
`policy` object may hold; from it come the OpenAPI schema (`json_schema`), the field
names and bounds that `scheduler.policy.parse_policy` enforces (`field`, `names`), and
the options of `ota tasks create` (`Option`: the flag, and for a compound field the
compact syntax of `ota.policy_specs` that fills it). Cross-field rules (a ramp excludes
a rate, a wave has a count or a percent, a schedule lies within 7 days of now) stay in
`scheduler.policy`, which owns validation; this module only describes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from ota import policy_specs as specs
from ota.catalog import CauseClass, FailureCause
from ota.records import MAX_RETRY_DELAY_S, Windows

MAX_SCHEDULE_AHEAD_MS = 7 * 24 * 3600 * 1000
MAX_RETRY_COUNT = 5
MAX_RETRY_INTERVAL_MIN = MAX_RETRY_DELAY_S // 60  # 1440, IoTDA's
MAX_RETRY_FACTOR = 10.0
MAX_WINDOW_S = 7 * 24 * 3600
MAX_RATE_PER_MIN = 1_000_000
MAX_IN_FLIGHT = 10_000_000  # a task's largest device count
MAX_WAVES = 20
MAX_ABORT_RULES = 10
MAX_WAVE_COUNT = 10_000_000
MAX_CAUSE_CODE = 1000
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Option:
    """How `ota tasks create` sets a field: `flag`, and for a compound field `parse`,
    which reads one compact-syntax value (`metavar`) into the field's JSON, given the
    time now in epoch ms; `repeat` collects every use into an array (or, with
    `keyed`, an object of the (name, value) pairs parsed)."""

    flag: str
    metavar: str | None = None
    parse: Callable[[str, int], Any] | None = None
    repeat: bool = False
    keyed: bool = False
    hint: str = ""  # how to write the compact syntax, after the field's doc in --help


@dataclass(frozen=True, slots=True)
class Field:
    """One JSON field: `type` is a JSON Schema type; `low`/`high` bound a number, or
    `max_len` a string; `choices` list a string's allowed values; an object's fields are
    `members`, an array's element is `items`."""

    name: str
    type: str
    doc: str = ""
    low: float | None = None
    high: float | None = None
    default: Any = None
    choices: tuple[str, ...] = ()
    members: tuple[Field, ...] = ()
    items: Field | None = None
    max_items: int | None = None
    max_len: int | None = None
    required: bool = False
    example: str | None = None
    option: Option | None = None

    @property
    def int_bounds(self) -> tuple[int, int]:
        low, high = self._bounds()
        return int(low), int(high)

    @property
    def float_bounds(self) -> tuple[float, float]:
        low, high = self._bounds()
        return float(low), float(high)

    def _bounds(self) -> tuple[float, float]:
        if self.low is None or self.high is None:
            raise TypeError(f"policy field {self.name} has no bounds")
        return self.low, self.high


def _integer(name: str, low: int, high: int, doc: str = "", **more: Any) -> Field:
    return Field(name, "integer", doc, low=low, high=high, **more)


def _number(name: str, low: float, high: float, doc: str = "", **more: Any) -> Field:
    return Field(name, "number", doc, low=low, high=high, **more)


_TIME_OF_DAY = "HH:MM, UTC"


def _retry_rule(name: str, doc: str) -> Field:
    return Field(
        name,
        "object",
        doc,
        members=(
            _integer(
                "count",
                0,
                MAX_RETRY_COUNT,
                "retried while the job has used fewer retries (of any cause); 0 = never",
                required=True,
            ),
            _integer(
                "interval_min", 0, MAX_RETRY_INTERVAL_MIN, "minutes before a retry", default=0
            ),
            _number(
                "factor",
                1.0,
                MAX_RETRY_FACTOR,
                "the wait grows by this factor with each retry used",
                default=1.0,
            ),
            _integer(
                "max_interval_min",
                0,
                MAX_RETRY_INTERVAL_MIN,
                "the longest wait, at least interval_min",
                default=MAX_RETRY_INTERVAL_MIN,
            ),
        ),
    )


def _class_doc(kind: CauseClass) -> str:
    causes = ", ".join(c.key for c in FailureCause if c.cause_class is kind)
    return f"any cause of the class: {causes}"


# One member per cause class, then per cause (a cause's own rule beats its class's).
_RETRY_RULES = tuple(_retry_rule(k.value, _class_doc(k)) for k in CauseClass) + tuple(
    _retry_rule(c.key, f"cause {c.value}: {c.message}") for c in FailureCause
)

POLICY = Field(
    "policy",
    "object",
    "how the task is rolled out; every field is optional",
    members=(
        _integer(
            "schedule_time_ms",
            0,
            2**53,
            "start no earlier than this (epoch ms), within 7 days; absent = now",
            option=Option(
                "--schedule",
                "WHEN",
                lambda text, now: specs.when(text, now, "--schedule"),
                hint="an ISO 8601 time or +30m/+2h/+1d",
            ),
        ),
        _integer(
            "retry_count",
            0,
            MAX_RETRY_COUNT,
            "how many times a failed device is tried again",
            default=0,
            option=Option("--retry-count"),
        ),
        _integer(
            "retry_interval_min",
            0,
            MAX_RETRY_INTERVAL_MIN,
            "minutes between a failure and the next try",
            default=0,
            option=Option("--retry-interval-min"),
        ),
        Field(
            "retry_rules",
            "object",
            "per failure cause or cause class, how a failed device is tried again, in place "
            "of retry_count and retry_interval_min (which retry only the causes retrying "
            "can help); a cause's own rule beats its class's",
            members=_RETRY_RULES,
            option=Option(
                "--retry",
                "NAME=COUNT[:INTERVAL_MIN[:FACTOR[:MAX_INTERVAL_MIN]]]",
                lambda text, _now: specs.retry(text),
                repeat=True,
                keyed=True,
                hint="or NAME=never; NAME a cause (low_battery) or class (offline, timeout, "
                "device_error, platform_error); repeatable",
            ),
        ),
        Field(
            "timeouts",
            "object",
            "seconds each wait may last (IoTDA's defaults when absent; confirm_s, the wait "
            "for a health verdict when success is confirmed, is this platform's)",
            members=tuple(
                _integer(f.name, 1, MAX_WINDOW_S, default=f.default) for f in fields(Windows)
            ),
            option=Option(
                "--timeout",
                "NAME=SECONDS",
                lambda text, _now: specs.timeout(text),
                repeat=True,
                keyed=True,
                hint="e.g. online_s=3600; repeatable",
            ),
        ),
        _integer(
            "rate_per_min",
            1,
            MAX_RATE_PER_MIN,
            "devices released per minute; absent = unlimited; excludes ramp",
            option=Option("--rate-per-min"),
        ),
        Field(
            "ramp",
            "object",
            "a rate that grows by factor every every_successes successes; excludes rate_per_min",
            members=(
                _integer("base_per_min", 1, MAX_RATE_PER_MIN, required=True),
                _number("factor", 1.1, 5.0, required=True),
                _integer("every_successes", 1, 1_000_000, required=True),
                _integer(
                    "max_per_min", 1, MAX_RATE_PER_MIN, "at least base_per_min", required=True
                ),
            ),
            option=Option(
                "--ramp",
                "BASE,FACTOR,EVERY_SUCCESSES,MAX",
                lambda text, _now: specs.ramp(text),
                hint="devices per minute",
            ),
        ),
        _integer(
            "max_in_flight",
            1,
            MAX_IN_FLIGHT,
            "release a device only while fewer of the task's released devices are "
            "unfinished (waiting for a retry included); absent = unlimited",
            option=Option("--max-in-flight"),
        ),
        Field(
            "waves",
            "array",
            "canary waves in order, each of count devices or percent of the task",
            max_items=MAX_WAVES,
            items=Field(
                "wave",
                "object",
                members=(
                    _integer("count", 1, MAX_WAVE_COUNT, "exactly one of count and percent"),
                    _number("percent", 0.001, 100.0, "exactly one of count and percent"),
                    _number(
                        "success_threshold_pct",
                        0.0,
                        100.0,
                        "successes needed before the next wave",
                        default=0.0,
                    ),
                    Field(
                        "approval",
                        "boolean",
                        "pause after the threshold until an operator resumes",
                        default=False,
                    ),
                ),
            ),
            option=Option(
                "--wave",
                "SIZE[:THRESHOLD[:approve]]",
                lambda text, _now: specs.wave(text),
                repeat=True,
                hint="SIZE 10 or 5%; repeatable",
            ),
        ),
        Field(
            "abort",
            "array",
            "stop the task when failures reach failure_pct of at least min_finished devices",
            max_items=MAX_ABORT_RULES,
            items=Field(
                "rule",
                "object",
                members=(
                    _number("failure_pct", 0.001, 100.0, required=True),
                    _integer("min_finished", 1, MAX_WAVE_COUNT, required=True),
                    _integer(
                        "cause", 0, MAX_CAUSE_CODE, "count only this failure cause; absent = any"
                    ),
                ),
            ),
            option=Option(
                "--abort",
                "PERCENT:MIN_FINISHED[:CAUSE]",
                lambda text, _now: specs.abort(text),
                repeat=True,
                hint="repeatable",
            ),
        ),
        Field(
            "maintenance_window",
            "object",
            "release devices only inside this window of the day (UTC); end may be below start",
            members=(
                Field("start", "string", _TIME_OF_DAY, max_len=5, required=True, example="22:00"),
                Field("end", "string", _TIME_OF_DAY, max_len=5, required=True, example="04:00"),
                Field(
                    "days",
                    "array",
                    "absent = every day",
                    items=Field("day", "string", choices=DAYS),
                    max_items=7,
                ),
            ),
            option=Option("--window", "HH:MM-HH:MM[@days]", lambda text, _now: specs.window(text)),
        ),
        Field(
            "require_online",
            "boolean",
            "release only devices the broker reports online",
            default=False,
            option=Option("--require-online"),
        ),
        Field(
            "on_conflict",
            "string",
            "a device busy with another task: fail it, or wait behind that job",
            default="fail",
            choices=("fail", "wait"),
            max_len=8,
            option=Option("--on-conflict"),
        ),
        Field(
            "success",
            "string",
            "when a device's job succeeds: reported = it reported the target version "
            "(IoTDA's rule); confirmed = then also confirmed its own health checks passed "
            "on it, within timeouts.confirm_s (docs/protocol.md, 'Health confirmation')",
            default="reported",
            choices=("reported", "confirmed"),
            max_len=16,
            option=Option("--success"),
        ),
        Field(
            "presigned_url",
            "boolean",
            "send *_upgrade_v2 commands carrying a presigned URL",
            default=False,
            option=Option("--presigned"),
        ),
        Field(
            "continuous",
            "boolean",
            "stay open: devices that join a targeted group, or come to match the filter "
            "through a change of their groups or tags, get jobs at the task's pace, and a "
            "pending device that stops matching is removed; needs groups or a filter as "
            "the only targets",
            default=False,
            option=Option("--continuous"),
        ),
        _integer(
            "end_time_ms",
            0,
            2**53,
            "a continuous task takes no new devices from this time (epoch ms) and finishes "
            "once its devices have; absent = open until cancelled",
            option=Option(
                "--end",
                "WHEN",
                lambda text, now: specs.when(text, now, "--end"),
                hint="an ISO 8601 time or +30m/+2h/+1d",
            ),
        ),
        Field(
            "rollback_package_id",
            "string",
            "the package a rollback installs on the devices this task upgraded: the same "
            "type as the task's package, another version (POST /v1/tasks/{id}/rollback)",
            max_len=64,
            option=Option("--rollback-package", "PACKAGE_ID"),
        ),
        Field(
            "rollback_on_abort",
            "boolean",
            "when the abort criteria stop the task, roll back its upgraded devices once "
            "its devices have finished; needs rollback_package_id and abort",
            default=False,
            option=Option("--rollback-on-abort"),
        ),
        Field(
            "rollback_on_failed_confirmation",
            "boolean",
            "devices whose health confirmation failed (health_check_failed, rolled_back) "
            "are rolled back when the task finishes; needs rollback_package_id and success "
            "confirmed",
            default=False,
            option=Option("--rollback-on-failed-confirmation"),
        ),
    ),
)


def json_schema(spec: Field) -> dict[str, Any]:
    """The JSON Schema (as OpenAPI 3.1 uses it) of a field."""
    out: dict[str, Any] = {"enum": list(spec.choices)} if spec.choices else {"type": spec.type}
    if spec.doc:
        out["description"] = spec.doc
    if spec.low is not None:
        out["minimum"] = spec.low
    if spec.high is not None:
        out["maximum"] = spec.high
    if spec.max_len is not None and not spec.choices:
        out["maxLength"] = spec.max_len
    if spec.default is not None:
        out["default"] = spec.default
    if spec.example is not None:
        out["example"] = spec.example
    if spec.type == "object":
        out["properties"] = {m.name: json_schema(m) for m in spec.members}
        out["additionalProperties"] = False
        required = [m.name for m in spec.members if m.required]
        if required:
            out["required"] = required
    if spec.items is not None:
        out["items"] = json_schema(spec.items)
    if spec.max_items is not None:
        out["maxItems"] = spec.max_items
    return out


def field(path: str) -> Field:
    """The field at a dotted path below the policy, array elements skipped:
    `retry_count`, `ramp.factor`, `waves.count`."""
    return _BY_PATH[path]


def names(path: str = "") -> frozenset[str]:
    """The names an object (the policy itself for '') may hold."""
    spec = field(path) if path else POLICY
    if spec.items is not None:
        spec = spec.items
    return frozenset(m.name for m in spec.members)


def options() -> Iterator[Field]:
    """The policy's fields that `ota tasks create` sets, in the policy's order."""
    return (m for m in POLICY.members if m.option is not None)


def _paths(spec: Field, prefix: str) -> Iterator[tuple[str, Field]]:
    members = spec.items.members if spec.items is not None else spec.members
    for m in members:
        path = f"{prefix}{m.name}"
        yield path, m
        yield from _paths(m, path + ".")


_BY_PATH = dict(_paths(POLICY, ""))
