"""A task's rollout policy: what the operator asked for, validated, as plain data.

Pure. `parse_policy` turns the API's JSON into a `TaskPolicy` or raises a
`ValidationError` naming the field. The fields, their names and bounds are the ones
`scheduler.policy_schema.POLICY` declares (the OpenAPI schema and the CLI's options come
from there too); the rules across fields live here. `policy_json` writes the same JSON
back, so the stored form and the API form are one format. Limits follow IoTDA where it has one
(schedule within 7 days, retry count <= 5, retry interval <= 1440 min).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from ota.catalog import CauseClass, FailureCause
from ota.records import ConflictPolicy, RetryRule, SuccessMode, Windows
from scheduler.errors import ValidationError
from scheduler.fields import Obj
from scheduler.policy_schema import DAYS, MAX_SCHEDULE_AHEAD_MS, field, names
from scheduler.policy_schema import MAX_IN_FLIGHT as MAX_IN_FLIGHT
from scheduler.policy_schema import MAX_RATE_PER_MIN as MAX_RATE_PER_MIN
from scheduler.policy_schema import MAX_RETRY_COUNT as MAX_RETRY_COUNT
from scheduler.policy_schema import MAX_RETRY_INTERVAL_MIN as MAX_RETRY_INTERVAL_MIN

T = TypeVar("T")
SCHEDULE_PAST_TOLERANCE_MS = 60_000  # clock skew between an operator's machine and ours


@dataclass(frozen=True, slots=True)
class Ramp:
    """AWS IoT Jobs' exponential rollout: the rate grows by `factor` per `every_successes`."""

    base_per_min: int
    factor: float
    every_successes: int
    max_per_min: int


@dataclass(frozen=True, slots=True)
class Wave:
    """A wave of `count` devices or `percent` of the task; None/None is "the rest"."""

    count: int | None = None
    percent: float | None = None
    success_threshold_pct: float = 0.0
    approval: bool = False  # after the threshold is met, pause until an operator resumes


@dataclass(frozen=True, slots=True)
class AbortRule:
    """Stop the task when failures reach `failure_pct` of at least `min_finished` devices."""

    failure_pct: float
    min_finished: int
    cause: FailureCause | None = None  # None: failures of any cause count


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Release devices only between start and end minute of the day (UTC) on these days."""

    start_min: int
    end_min: int  # may be below start: the window crosses midnight
    days: tuple[int, ...] = tuple(range(7))  # 0 = Monday


@dataclass(frozen=True, slots=True)
class TaskPolicy:
    schedule_ms: int | None = None
    retry_count: int = 0
    retry_interval_min: int = 0
    retry_rules: tuple[RetryRule, ...] = ()  # by cause or class name, sorted; seconds
    windows: Windows = Windows()  # noqa: RUF009 - frozen, so one shared default is safe
    rate_per_min: int | None = None  # None: unlimited
    ramp: Ramp | None = None
    max_in_flight: int | None = None  # released devices not finished yet; None: unlimited
    waves: tuple[Wave, ...] = ()
    abort: tuple[AbortRule, ...] = ()
    maintenance: MaintenanceWindow | None = None
    require_online: bool = False
    on_conflict: ConflictPolicy = ConflictPolicy.FAIL
    presigned_url: bool = False
    success: SuccessMode = SuccessMode.REPORTED  # confirmed: wait for the device's verdict
    continuous: bool = False  # open: devices that come to match later join the task
    end_ms: int | None = None  # a continuous task's end; None: open until cancelled
    rollback_package_id: str | None = None  # what a rollback installs (scheduler.rollbacks)
    rollback_on_abort: bool = False
    rollback_on_failed_confirmation: bool = False

    def open_at(self, now_ms: int) -> bool:
        """Whether a continuous task still takes devices that come to match its targets."""
        return self.continuous and (self.end_ms is None or now_ms < self.end_ms)


def _int(o: Obj, path: str, default: Any = ...) -> Any:
    """Field `path` of the policy (as policy_schema names it), within its declared bounds."""
    spec = field(path)
    low, high = spec.int_bounds
    if default is ...:
        return o.integer(spec.name, low=low, high=high)
    return o.integer(spec.name, default, low=low, high=high)


def _num(o: Obj, path: str, default: Any = ...) -> Any:
    spec = field(path)
    low, high = spec.float_bounds
    if default is ...:
        return o.number(spec.name, low=low, high=high)
    return o.number(spec.name, default, low=low, high=high)


def _array(o: Obj, path: str) -> Any:
    spec = field(path)
    assert spec.max_items is not None
    return o.array(spec.name, [], max_items=spec.max_items)


class StoredPolicies:
    """The parsed policies of stored task documents, by task id. The reconciler reads a
    task's document on every pass; parsing its policy costs tens of microseconds, comparing
    it with the one parsed last time a few. A changed policy is parsed again."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._parsed: dict[str, tuple[Any, TaskPolicy]] = {}

    def of(self, task_id: str, stored: Any) -> TaskPolicy:
        hit = self._parsed.get(task_id)
        if hit is not None and hit[0] == stored:
            return hit[1]
        policy = parse_policy(stored, None)
        if len(self._parsed) >= self._size:
            self._parsed.clear()  # many more tasks than ever run at once: start again
        self._parsed[task_id] = (stored, policy)
        return policy


def parse_policy(data: Any, now_ms: int | None) -> TaskPolicy:
    """Validate a policy object; `now_ms` None skips checks relative to the present (stored form)."""
    p = Obj({} if data is None else data, "policy", names())
    schedule_ms = _int(p, "schedule_time_ms", None)
    if schedule_ms is not None and now_ms is not None:
        if schedule_ms < now_ms - SCHEDULE_PAST_TOLERANCE_MS:
            raise ValidationError(
                "policy.schedule_time_ms is in the past",
                code="bad_schedule_time",
                field="policy.schedule_time_ms",
            )
        if schedule_ms > now_ms + MAX_SCHEDULE_AHEAD_MS:
            raise ValidationError(
                "policy.schedule_time_ms is more than 7 days ahead",
                code="bad_schedule_time",
                field="policy.schedule_time_ms",
            )
    rate = _int(p, "rate_per_min", None)
    ramp = _ramp(p)
    if ramp is not None and rate is not None:
        raise ValidationError(
            "policy.rate_per_min and policy.ramp exclude each other: the ramp sets the rate",
            code="conflicting_fields",
            field="policy.ramp",
        )
    continuous = p.flag("continuous", False)
    end_ms = _end(p, continuous, schedule_ms, now_ms)
    success = _choice(p, "success", SuccessMode)
    abort = _abort(p)
    return TaskPolicy(
        schedule_ms=schedule_ms,
        retry_count=_int(p, "retry_count", 0),
        retry_interval_min=_int(p, "retry_interval_min", 0),
        retry_rules=_retry_rules(p),
        windows=_windows(p),
        rate_per_min=rate,
        ramp=ramp,
        max_in_flight=_int(p, "max_in_flight", None),
        waves=_waves(p),
        abort=abort,
        maintenance=_maintenance(p),
        require_online=p.flag("require_online", False),
        on_conflict=_choice(p, "on_conflict", ConflictPolicy),
        presigned_url=p.flag("presigned_url", False),
        success=success,
        continuous=continuous,
        end_ms=end_ms,
        # Checked at creation only (a stored policy is read as it was accepted).
        **_rollback(
            p, success, abort, open_ended=now_ms is not None and continuous and end_ms is None
        ),
    )


def _rollback(
    p: Obj, success: SuccessMode, abort: tuple[AbortRule, ...], *, open_ended: bool
) -> dict[str, Any]:
    """The rollback fields; whether the package exists and fits is the task's check
    (scheduler.rollback_plan), as it needs the store. `open_ended`: a continuous task
    without an end, which finishes only when cancelled."""
    spec = field("rollback_package_id")
    assert spec.max_len is not None
    package: str | None = p.text("rollback_package_id", None, max_len=spec.max_len)
    if package is not None and not package:
        raise ValidationError(
            "policy.rollback_package_id is empty",
            code="bad_value",
            field="policy.rollback_package_id",
        )
    on_abort = p.flag("rollback_on_abort", False)
    on_failed = p.flag("rollback_on_failed_confirmation", False)
    needs = (
        ("rollback_on_abort", on_abort, bool(abort), "abort rules"),
        (
            "rollback_on_failed_confirmation",
            on_failed,
            success is SuccessMode.CONFIRMED,
            "success confirmed",
        ),
    )
    for name, wanted, has_rule, rule in needs:
        if wanted and package is None:
            raise ValidationError(
                f"policy.{name} needs policy.rollback_package_id: the package to roll back to",
                code="conflicting_fields",
                field=f"policy.{name}",
            )
        if wanted and not has_rule:
            raise ValidationError(
                f"policy.{name} needs {rule}: without them it never applies",
                code="conflicting_fields",
                field=f"policy.{name}",
            )
    if on_failed and open_ended:
        raise ValidationError(
            "policy.rollback_on_failed_confirmation needs policy.end_time_ms on a continuous"
            " task: failed confirmations are rolled back when the task finishes, and an open"
            " task without an end finishes only when cancelled (roll back by hand instead)",
            code="conflicting_fields",
            field="policy.rollback_on_failed_confirmation",
        )
    return {
        "rollback_package_id": package,
        "rollback_on_abort": on_abort,
        "rollback_on_failed_confirmation": on_failed,
    }


def _end(p: Obj, continuous: bool, schedule_ms: int | None, now_ms: int | None) -> int | None:
    end_ms: int | None = _int(p, "end_time_ms", None)
    if end_ms is None:
        return None
    if not continuous:
        raise ValidationError(
            "policy.end_time_ms needs policy.continuous: only a continuous task stays open",
            code="conflicting_fields",
            field="policy.end_time_ms",
        )
    start = schedule_ms if schedule_ms is not None else now_ms
    if start is not None and end_ms <= start:
        raise ValidationError(
            "policy.end_time_ms is not after "
            + ("policy.schedule_time_ms" if schedule_ms is not None else "now"),
            code="bad_end_time",
            field="policy.end_time_ms",
        )
    return end_ms


def _windows(p: Obj) -> Windows:
    t = p.child("timeouts", names("timeouts"))
    if t is None:
        return Windows()
    defaults = Windows()
    return Windows(
        **{
            name: _int(t, f"timeouts.{name}", getattr(defaults, name))
            for name in sorted(names("timeouts"))
        }
    )


def _retry_rules(p: Obj) -> tuple[RetryRule, ...]:
    raw = p.raw("retry_rules", {})
    allowed = names("retry_rules")
    unknown = sorted(set(raw) - allowed) if isinstance(raw, dict) else []
    if unknown:  # said more plainly than Obj's unknown field, and with what is allowed
        raise ValidationError(
            f"policy.retry_rules.{unknown[0]} names no failure cause or cause class; use a "
            f"class ({', '.join(CauseClass)}) or a cause ({', '.join(c.key for c in FailureCause)})",
            code="unknown_field",
            field=f"policy.retry_rules.{unknown[0]}",
        )
    rules = p.child("retry_rules", allowed)
    if rules is None:
        return ()
    return tuple(_retry_rule(rules, name) for name in sorted(rules.data))


def _retry_rule(rules: Obj, name: str) -> RetryRule:
    r = Obj(rules.data[name], rules.path(name), names(f"retry_rules.{name}"))
    where = f"retry_rules.{name}"
    interval = _int(r, f"{where}.interval_min", 0)
    longest = _int(r, f"{where}.max_interval_min", MAX_RETRY_INTERVAL_MIN)
    if longest < interval:
        raise ValidationError(
            f"policy.{where}.max_interval_min={longest} is below interval_min={interval}",
            code="out_of_range",
            field=f"policy.{where}.max_interval_min",
        )
    return RetryRule(
        on=name,
        count=_int(r, f"{where}.count"),
        interval_s=interval * 60,
        factor=_num(r, f"{where}.factor", 1.0),
        max_interval_s=longest * 60,
    )


def _ramp(p: Obj) -> Ramp | None:
    r = p.child("ramp", names("ramp"))
    if r is None:
        return None
    base = _int(r, "ramp.base_per_min")
    top = _int(r, "ramp.max_per_min")
    if top < base:
        raise ValidationError(
            "policy.ramp.max_per_min is below base_per_min",
            code="out_of_range",
            field="policy.ramp.max_per_min",
        )
    return Ramp(
        base_per_min=base,
        factor=_num(r, "ramp.factor"),
        every_successes=_int(r, "ramp.every_successes"),
        max_per_min=top,
    )


def _waves(p: Obj) -> tuple[Wave, ...]:
    waves = []
    for i, item in enumerate(_array(p, "waves")):
        w = Obj(item, f"policy.waves[{i}]", names("waves"))
        count = _int(w, "waves.count", None)
        percent = _num(w, "waves.percent", None)
        if (count is None) == (percent is None):
            raise ValidationError(
                f"policy.waves[{i}] needs exactly one of count or percent",
                code="bad_wave",
                field=f"policy.waves[{i}]",
            )
        waves.append(
            Wave(
                count=count,
                percent=percent,
                success_threshold_pct=_num(w, "waves.success_threshold_pct", 0.0),
                approval=w.flag("approval", False),
            )
        )
    return tuple(waves)


def _abort(p: Obj) -> tuple[AbortRule, ...]:
    rules = []
    for i, item in enumerate(_array(p, "abort")):
        a = Obj(item, f"policy.abort[{i}]", names("abort"))
        code = _int(a, "abort.cause", None)
        cause = None
        if code is not None:
            try:
                cause = FailureCause(code)
            except ValueError:
                raise ValidationError(
                    f"policy.abort[{i}].cause={code} is not a known failure cause code",
                    code="unknown_cause",
                    field=f"policy.abort[{i}].cause",
                ) from None
        rules.append(
            AbortRule(
                failure_pct=_num(a, "abort.failure_pct"),
                min_finished=_int(a, "abort.min_finished"),
                cause=cause,
            )
        )
    return tuple(rules)


def _minute_of_day(text: str, path: str) -> int:
    hh, sep, mm = text.partition(":")
    if not sep or not (hh.isdigit() and mm.isdigit()) or len(mm) != 2 or not 1 <= len(hh) <= 2:
        raise ValidationError(f"{path}={text!r} is not HH:MM", code="bad_time", field=path)
    hours, minutes = int(hh), int(mm)
    if hours > 23 or minutes > 59:
        raise ValidationError(f"{path}={text!r} is not a time of day", code="bad_time", field=path)
    return hours * 60 + minutes


def _time_of_day(m: Obj, name: str) -> int:
    spec = field(f"maintenance_window.{name}")
    assert spec.max_len is not None
    return _minute_of_day(m.text(name, max_len=spec.max_len), m.path(name))


def _maintenance(p: Obj) -> MaintenanceWindow | None:
    m = p.child("maintenance_window", names("maintenance_window"))
    if m is None:
        return None
    start = _time_of_day(m, "start")
    end = _time_of_day(m, "end")
    if start == end:
        raise ValidationError(
            "policy.maintenance_window has no length (start == end)",
            code="bad_time",
            field="policy.maintenance_window",
        )
    days = m.strings("days", max_items=len(DAYS), max_len=16) or DAYS
    for day in days:
        if day not in DAYS:
            raise ValidationError(
                f"policy.maintenance_window.days has {day!r}; use {', '.join(DAYS)}",
                code="bad_value",
                field="policy.maintenance_window.days",
            )
    return MaintenanceWindow(start, end, tuple(sorted(DAYS.index(d) for d in days)))


def _choice(p: Obj, name: str, kind: Callable[[str], T]) -> T:
    """A string field that takes one of the schema's `choices`, as `kind`."""
    spec = field(name)
    assert spec.max_len is not None
    raw = p.text(name, spec.default, max_len=spec.max_len)
    if raw not in spec.choices:
        raise ValidationError(
            f"policy.{name}={raw!r} is not {' or '.join(spec.choices)}",
            code="bad_value",
            field=f"policy.{name}",
        )
    return kind(raw)


def policy_json(policy: TaskPolicy) -> dict[str, Any]:
    """The policy in its API/stored form; `parse_policy(policy_json(p), None) == p`."""
    out: dict[str, Any] = {
        "retry_count": policy.retry_count,
        "retry_interval_min": policy.retry_interval_min,
        "retry_rules": {
            rule.on: {
                "count": rule.count,
                "interval_min": rule.interval_s // 60,
                "factor": rule.factor,
                "max_interval_min": rule.max_interval_s // 60,
            }
            for rule in policy.retry_rules
        },
        "timeouts": {f.name: getattr(policy.windows, f.name) for f in fields(Windows)},
        "waves": [
            {
                ("count" if w.count is not None else "percent"): (
                    w.count if w.count is not None else w.percent
                ),
                "success_threshold_pct": w.success_threshold_pct,
                "approval": w.approval,
            }
            for w in policy.waves
        ],
        "abort": [
            {
                "failure_pct": a.failure_pct,
                "min_finished": a.min_finished,
                "cause": None if a.cause is None else int(a.cause),
            }
            for a in policy.abort
        ],
        "require_online": policy.require_online,
        "on_conflict": policy.on_conflict.value,
        "presigned_url": policy.presigned_url,
        "success": policy.success.value,
        "continuous": policy.continuous,
    }
    if policy.end_ms is not None:
        out["end_time_ms"] = policy.end_ms
    if policy.rollback_package_id is not None:
        out["rollback_package_id"] = policy.rollback_package_id
        out["rollback_on_abort"] = policy.rollback_on_abort
        out["rollback_on_failed_confirmation"] = policy.rollback_on_failed_confirmation
    if policy.schedule_ms is not None:
        out["schedule_time_ms"] = policy.schedule_ms
    if policy.rate_per_min is not None:
        out["rate_per_min"] = policy.rate_per_min
    if policy.ramp is not None:
        r = policy.ramp
        out["ramp"] = {
            "base_per_min": r.base_per_min,
            "factor": r.factor,
            "every_successes": r.every_successes,
            "max_per_min": r.max_per_min,
        }
    if policy.max_in_flight is not None:
        out["max_in_flight"] = policy.max_in_flight
    if policy.maintenance is not None:
        m = policy.maintenance
        out["maintenance_window"] = {
            "start": f"{m.start_min // 60:02d}:{m.start_min % 60:02d}",
            "end": f"{m.end_min // 60:02d}:{m.end_min % 60:02d}",
            "days": [DAYS[d] for d in m.days],
        }
    return out
