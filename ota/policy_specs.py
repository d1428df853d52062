"""Pure parsers for a task policy's compact syntax, mapped onto the API's policy JSON: shared
by the `ota` CLI's options (declared with each field in scheduler/policy_schema.py, made
into options by ops/cli_policy.py) and the console's task form (scheduler/console).

- wave:   `10`, `5%`, `10:90` (threshold %), `10:90:approve`
- abort:  `20:50` (failure % after 50 finished), `20:50:22` (only cause 22)
- window: `22:00-04:00` or `22:00-04:00@sat,sun` (UTC)
- ramp:   `base,factor,every,max` (devices per minute, growth factor, successes per step)
- when:   an ISO 8601 time (`2026-11-28T02:00:00Z`) or `+30m`, `+2h`, `+1d` from now
- timeout: `online_s=3600`
- retry:  `NAME=COUNT[:INTERVAL_MIN[:FACTOR[:MAX_INTERVAL_MIN]]]` or `NAME=never`, NAME a
          failure cause (`low_battery`) or a class (`offline`, `timeout`, `device_error`,
          `platform_error`): `offline=5:10:2:120`, `signature_check_failed=never`
Each raises `SpecError` with a message naming the option.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any


class SpecError(ValueError):
    pass


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SpecError(f"{what}: {text!r} is not a number") from None


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{what}: {text!r} is not an integer") from None


def wave(spec: str) -> dict[str, Any]:
    parts = spec.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0]:
        raise SpecError(f"--wave {spec!r}: use SIZE[:THRESHOLD[:approve]], SIZE as 10 or 5%")
    out: dict[str, Any] = {}
    size = parts[0]
    if size.endswith("%"):
        out["percent"] = _number(size[:-1], f"--wave {spec!r}")
    else:
        out["count"] = _int(size, f"--wave {spec!r}")
    if len(parts) >= 2 and parts[1]:
        out["success_threshold_pct"] = _number(parts[1], f"--wave {spec!r}")
    if len(parts) == 3:
        if parts[2] != "approve":
            raise SpecError(f"--wave {spec!r}: the third part may only be 'approve'")
        out["approval"] = True
    return out


def abort(spec: str) -> dict[str, Any]:
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise SpecError(f"--abort {spec!r}: use PERCENT:MIN_FINISHED[:CAUSE_CODE]")
    out: dict[str, Any] = {
        "failure_pct": _number(parts[0], f"--abort {spec!r}"),
        "min_finished": _int(parts[1], f"--abort {spec!r}"),
    }
    if len(parts) == 3:
        out["cause"] = _int(parts[2], f"--abort {spec!r}")
    return out


_WINDOW = re.compile(r"(\d{1,2}:\d{2})-(\d{1,2}:\d{2})(?:@([a-z,]+))?")


def window(spec: str) -> dict[str, Any]:
    match = _WINDOW.fullmatch(spec)
    if not match:
        raise SpecError(f"--window {spec!r}: use HH:MM-HH:MM[@mon,tue,...] (UTC)")
    out: dict[str, Any] = {"start": match[1], "end": match[2]}
    if match[3]:
        out["days"] = match[3].split(",")
    return out


def ramp(spec: str) -> dict[str, Any]:
    parts = spec.split(",")
    if len(parts) != 4:
        raise SpecError(f"--ramp {spec!r}: use BASE_PER_MIN,FACTOR,EVERY_SUCCESSES,MAX_PER_MIN")
    what = f"--ramp {spec!r}"
    return {
        "base_per_min": _int(parts[0], what),
        "factor": _number(parts[1], what),
        "every_successes": _int(parts[2], what),
        "max_per_min": _int(parts[3], what),
    }


_RELATIVE = re.compile(r"\+(\d+)([mhd])")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400}


def when(spec: str, now_ms: int, flag: str = "--schedule") -> int:
    """An absolute or relative time as epoch milliseconds; `flag` names the option in errors."""
    rel = _RELATIVE.fullmatch(spec)
    if rel:
        return now_ms + int(rel[1]) * _UNIT_S[rel[2]] * 1000
    try:
        parsed = dt.datetime.fromisoformat(spec.replace("Z", "+00:00"))
    except ValueError:
        raise SpecError(
            f"{flag} {spec!r}: use an ISO 8601 time such as 2026-11-28T02:00:00Z, or +30m/+2h/+1d"
        ) from None
    if parsed.tzinfo is None:
        raise SpecError(f"{flag} {spec!r}: give a time zone (Z or +01:00)")
    return int(parsed.timestamp() * 1000)


def timeout(spec: str) -> tuple[str, int]:
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise SpecError(f"--timeout {spec!r}: use NAME=SECONDS, e.g. online_s=3600")
    return name, _int(value, f"--timeout {spec!r}")


_RETRY_USE = "use NAME=COUNT[:INTERVAL_MIN[:FACTOR[:MAX_INTERVAL_MIN]]] or NAME=never"


def retry(spec: str) -> tuple[str, dict[str, Any]]:
    """One retry rule: the cause or class it is for, and the rule's policy JSON."""
    name, sep, rule = spec.partition("=")
    if not sep or not name or not rule:
        raise SpecError(f"--retry {spec!r}: {_RETRY_USE}")
    if rule == "never":
        return name, {"count": 0}
    parts = rule.split(":")
    if len(parts) > 4:
        raise SpecError(f"--retry {spec!r}: {_RETRY_USE}")
    what = f"--retry {spec!r}"
    out: dict[str, Any] = {"count": _int(parts[0], what)}
    for key, text in zip(("interval_min", "factor", "max_interval_min"), parts[1:], strict=False):
        out[key] = _number(text, what) if key == "factor" else _int(text, what)
    return name, out
