"""A task's rollout policy: what the operator asked for, validated, as plain data.

Pure. `parse_policy` turns the API's JSON into a `TaskPolicy` or raises a
`ValidationError` naming the field; `policy_json` writes the same JSON back, so the
stored form and the API form are one format. Limits follow IoTDA where it has one
(schedule within 7 days, retry count <= 5, retry interval <= 1440 min).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ota.catalog import FailureCause
from ota.records import ConflictPolicy, Windows
from scheduler.errors import ValidationError
from scheduler.fields import Obj

MAX_SCHEDULE_AHEAD_MS = 7 * 24 * 3600 * 1000
SCHEDULE_PAST_TOLERANCE_MS = 60_000  # clock skew between an operator's machine and ours
MAX_RETRY_COUNT = 5
MAX_RETRY_INTERVAL_MIN = 1440
MAX_WINDOW_S = 7 * 24 * 3600
MAX_RATE_PER_MIN = 1_000_000
MAX_IN_FLIGHT = 10_000_000  # a task's largest device count
MAX_WAVES = 20
MAX_ABORT_RULES = 10
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


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


_WINDOW_FIELDS = frozenset(f.name for f in fields(Windows))
_POLICY_FIELDS = frozenset(
    {
        "schedule_time_ms",
        "retry_count",
        "retry_interval_min",
        "timeouts",
        "rate_per_min",
        "ramp",
        "max_in_flight",
        "waves",
        "abort",
        "maintenance_window",
        "require_online",
        "on_conflict",
        "presigned_url",
    }
)


def parse_policy(data: Any, now_ms: int | None) -> TaskPolicy:
    """Validate a policy object; `now_ms` None skips checks relative to the present (stored form)."""
    p = Obj({} if data is None else data, "policy", _POLICY_FIELDS)
    schedule_ms = p.integer("schedule_time_ms", None, low=0, high=2**53)
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
    rate = p.integer("rate_per_min", None, low=1, high=MAX_RATE_PER_MIN)
    ramp = _ramp(p)
    if ramp is not None and rate is not None:
        raise ValidationError(
            "policy.rate_per_min and policy.ramp exclude each other: the ramp sets the rate",
            code="conflicting_fields",
            field="policy.ramp",
        )
    return TaskPolicy(
        schedule_ms=schedule_ms,
        retry_count=p.integer("retry_count", 0, low=0, high=MAX_RETRY_COUNT),
        retry_interval_min=p.integer("retry_interval_min", 0, low=0, high=MAX_RETRY_INTERVAL_MIN),
        windows=_windows(p),
        rate_per_min=rate,
        ramp=ramp,
        max_in_flight=p.integer("max_in_flight", None, low=1, high=MAX_IN_FLIGHT),
        waves=_waves(p),
        abort=_abort(p),
        maintenance=_maintenance(p),
        require_online=p.flag("require_online", False),
        on_conflict=_conflict(p),
        presigned_url=p.flag("presigned_url", False),
    )


def _windows(p: Obj) -> Windows:
    t = p.child("timeouts", _WINDOW_FIELDS)
    if t is None:
        return Windows()
    defaults = Windows()
    return Windows(
        **{
            name: t.integer(name, getattr(defaults, name), low=1, high=MAX_WINDOW_S)
            for name in sorted(_WINDOW_FIELDS)
        }
    )


def _ramp(p: Obj) -> Ramp | None:
    r = p.child("ramp", frozenset({"base_per_min", "factor", "every_successes", "max_per_min"}))
    if r is None:
        return None
    base = r.integer("base_per_min", low=1, high=MAX_RATE_PER_MIN)
    top = r.integer("max_per_min", low=1, high=MAX_RATE_PER_MIN)
    if top < base:
        raise ValidationError(
            "policy.ramp.max_per_min is below base_per_min",
            code="out_of_range",
            field="policy.ramp.max_per_min",
        )
    return Ramp(
        base_per_min=base,
        factor=r.number("factor", low=1.1, high=5.0),
        every_successes=r.integer("every_successes", low=1, high=1_000_000),
        max_per_min=top,
    )


def _waves(p: Obj) -> tuple[Wave, ...]:
    items = p.array("waves", [], max_items=MAX_WAVES)
    waves = []
    for i, item in enumerate(items):
        w = Obj(
            item,
            f"policy.waves[{i}]",
            frozenset({"count", "percent", "success_threshold_pct", "approval"}),
        )
        count = w.integer("count", None, low=1, high=10_000_000)
        percent = w.number("percent", None, low=0.001, high=100.0)
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
                success_threshold_pct=w.number("success_threshold_pct", 0.0, low=0.0, high=100.0),
                approval=w.flag("approval", False),
            )
        )
    return tuple(waves)


def _abort(p: Obj) -> tuple[AbortRule, ...]:
    rules = []
    for i, item in enumerate(p.array("abort", [], max_items=MAX_ABORT_RULES)):
        a = Obj(item, f"policy.abort[{i}]", frozenset({"failure_pct", "min_finished", "cause"}))
        code = a.integer("cause", None, low=0, high=1000)
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
                failure_pct=a.number("failure_pct", low=0.001, high=100.0),
                min_finished=a.integer("min_finished", low=1, high=10_000_000),
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


def _maintenance(p: Obj) -> MaintenanceWindow | None:
    m = p.child("maintenance_window", frozenset({"start", "end", "days"}))
    if m is None:
        return None
    start = _minute_of_day(m.text("start", max_len=5), "policy.maintenance_window.start")
    end = _minute_of_day(m.text("end", max_len=5), "policy.maintenance_window.end")
    if start == end:
        raise ValidationError(
            "policy.maintenance_window has no length (start == end)",
            code="bad_time",
            field="policy.maintenance_window",
        )
    days = m.strings("days", max_items=7, max_len=16) or DAYS
    for day in days:
        if day not in DAYS:
            raise ValidationError(
                f"policy.maintenance_window.days has {day!r}; use {', '.join(DAYS)}",
                code="bad_value",
                field="policy.maintenance_window.days",
            )
    return MaintenanceWindow(start, end, tuple(sorted(DAYS.index(d) for d in days)))


def _conflict(p: Obj) -> ConflictPolicy:
    raw = p.text("on_conflict", "fail", max_len=8)
    try:
        return ConflictPolicy(raw)
    except ValueError:
        raise ValidationError(
            f"policy.on_conflict={raw!r} is not fail or wait",
            code="bad_value",
            field="policy.on_conflict",
        ) from None


def policy_json(policy: TaskPolicy) -> dict[str, Any]:
    """The policy in its API/stored form; `parse_policy(policy_json(p), None) == p`."""
    out: dict[str, Any] = {
        "retry_count": policy.retry_count,
        "retry_interval_min": policy.retry_interval_min,
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
    }
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
