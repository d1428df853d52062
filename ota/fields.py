"""Checked reads of a decoded JSON document's fields, and the one error they raise.

Every decoder of device traffic (`ota.protocol` for envelopes and commands,
`ota.reports` for the reports' paras) reads fields through these functions, so a
field that is missing, of the wrong type or out of bounds is refused the same way
everywhere: a `ProtocolError` whose `reason` is a stable code (it becomes the
dead-letter reason) and whose message names the field (`where` is its path).
Pure functions only.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

MAX_VERSION_CHARS = 128
MAX_TEXT_CHARS = 2048


class Reason(StrEnum):
    """Why a payload was refused; stable codes used as dead-letter reasons and metric labels."""

    PAYLOAD_TOO_LARGE = "payload_too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NON_FINITE_NUMBER = "non_finite_number"
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    TOO_DEEP = "too_deep"
    NOT_AN_OBJECT = "not_an_object"
    BAD_TOPIC = "bad_topic"
    BAD_DEVICE_ID = "bad_device_id"
    DEVICE_MISMATCH = "device_mismatch"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    BAD_VALUE = "bad_value"
    UNKNOWN_EVENT = "unknown_event"
    TOO_MANY_EVENTS = "too_many_events"


class ProtocolError(ValueError):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def json_kind(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
    }.get(type(value), "null")


def object_field(raw: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    """An optional object field; absent or null reads as `{}`."""
    value = raw.get(name, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(
            Reason.WRONG_TYPE, f"{where}.{name} must be an object, got {json_kind(value)}"
        )
    return value


def required_str(
    raw: Mapping[str, Any], name: str, where: str, limit: int = MAX_VERSION_CHARS
) -> str:
    if name not in raw:
        raise ProtocolError(Reason.MISSING_FIELD, f"{where}.{name} is required")
    value = optional_str(raw, name, where, limit)
    assert value is not None
    return value


def optional_str(
    raw: Mapping[str, Any], name: str, where: str, limit: int = MAX_VERSION_CHARS
) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError(
            Reason.WRONG_TYPE, f"{where}.{name} must be a string, got {json_kind(value)}"
        )
    if len(value) > limit:
        raise ProtocolError(
            Reason.BAD_VALUE, f"{where}.{name} is {len(value)} chars, the limit is {limit}"
        )
    return value


def required_int(raw: Mapping[str, Any], name: str, where: str, low: int, high: int) -> int:
    if name not in raw or raw[name] is None:
        raise ProtocolError(Reason.MISSING_FIELD, f"{where}.{name} is required")
    value = optional_int(raw, name, where, low, high)
    assert value is not None
    return value


def optional_int(raw: Mapping[str, Any], name: str, where: str, low: int, high: int) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            Reason.WRONG_TYPE, f"{where}.{name} must be an integer, got {json_kind(value)}"
        )
    if not low <= value <= high:
        raise ProtocolError(Reason.BAD_VALUE, f"{where}.{name}={value} is outside {low}..{high}")
    return value
