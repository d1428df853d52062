"""The task form's fields mapped onto the API's task body. Pure.

The compact syntaxes (waves, abort rules, retry rules, ramp, window, schedule, end) are the
`ota` CLI's, parsed by the same functions (`ota.policy_specs`); every rule about the values
themselves stays in `scheduler.policy`, which judges the body when the task is created.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from ota import policy_specs as specs
from ota.records import Windows
from scheduler.errors import ValidationError

TIMEOUTS = tuple(f.name for f in dataclasses.fields(Windows))
INTEGERS = ("retry_count", "retry_interval_min", "rate_per_min", "max_in_flight")
_SPLIT = re.compile(r"[\s,]+")


def words(text: str) -> list[str]:
    return [w for w in _SPLIT.split(text.strip()) if w]


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _integer(form: Mapping[str, str], name: str) -> int | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(
            f"{name}={raw!r} is not a whole number", code="wrong_type", field=name
        ) from None


def _spec(name: str, parse: Any, text: str) -> Any:
    try:
        return parse(text)
    except specs.SpecError as exc:
        message = str(exc).replace("--", "", 1)
        raise ValidationError(message, code="bad_value", field=name) from None


def task_body(form: Mapping[str, str], now_ms: int, list_id: str = "") -> dict[str, Any]:
    """The API body for the form's values; a value it cannot read raises ValidationError
    naming the form field."""
    targets: dict[str, Any] = {}
    if ids := words(form.get("device_ids", "")):
        targets["device_ids"] = ids
    if list_id:
        targets["list_id"] = list_id
    if groups := words(form.get("groups", "")):
        targets["groups"] = groups
    flt: dict[str, Any] = {}
    for name in ("fw_versions", "sw_versions", "groups", "tags"):
        if values := words(form.get(f"filter_{name}", "")):
            flt[name] = values
    online = form.get("filter_online", "")
    if online in ("true", "false"):
        flt["online"] = online == "true"
    if flt:
        targets["filter"] = flt
    policy: dict[str, Any] = {}
    for name in INTEGERS:
        if (value := _integer(form, name)) is not None:
            policy[name] = value
    if schedule := form.get("schedule", "").strip():
        policy["schedule_time_ms"] = _spec("schedule", lambda s: specs.when(s, now_ms), schedule)
    timeouts = {n: v for n in TIMEOUTS if (v := _integer(form, f"timeout_{n}")) is not None}
    if timeouts:
        policy["timeouts"] = timeouts
    if ramp := form.get("ramp", "").strip():
        policy["ramp"] = _spec("ramp", specs.ramp, ramp)
    if waves := lines(form.get("waves", "")):
        policy["waves"] = [_spec("waves", specs.wave, w) for w in waves]
    if aborts := lines(form.get("abort", "")):
        policy["abort"] = [_spec("abort", specs.abort, a) for a in aborts]
    if rules := lines(form.get("retry_rules", "")):
        policy["retry_rules"] = dict(_spec("retry_rules", specs.retry, r) for r in rules)
    if window := form.get("window", "").strip():
        policy["maintenance_window"] = _spec("window", specs.window, window)
    if form.get("require_online") == "on":
        policy["require_online"] = True
    if form.get("continuous") == "on":
        policy["continuous"] = True
    if end := form.get("end", "").strip():
        policy["end_time_ms"] = _spec("end", lambda s: specs.when(s, now_ms, "--end"), end)
    if form.get("on_conflict") in ("fail", "wait"):
        policy["on_conflict"] = form["on_conflict"]
    if form.get("success") in ("reported", "confirmed"):
        policy["success"] = form["success"]
    if rollback := form.get("rollback_package_id", "").strip():
        policy["rollback_package_id"] = rollback
    for flag in ("rollback_on_abort", "rollback_on_failed_confirmation"):
        if form.get(flag) == "on":
            policy[flag] = True
    body: dict[str, Any] = {
        "type": form.get("type", ""),
        "package_id": form.get("package_id", ""),
        "targets": targets,
        "policy": policy,
    }
    if name := form.get("name", "").strip():
        body["name"] = name
    return body
