"""The IoTDA OTA device protocol: topics, the envelope and every event, both ways.

Pure functions only. Parsing is strict: each way a payload can be wrong raises one
`ProtocolError` whose `reason` is a stable code (it becomes the dead-letter reason)
and whose message says exactly what was wrong. The paras of the device's reports are
read into typed values by `ota.reports`; this module reads the envelope around them. The device id always comes from the
topic; `object_device_id` may only repeat it or name a known child device.
"""

from __future__ import annotations

import calendar
import functools
import json
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

# ota.fields and ota.reports hold the field readers and the report types; the names
# other packages know from here are re-exported.
from ota.fields import MAX_TEXT_CHARS as MAX_TEXT_CHARS
from ota.fields import MAX_VERSION_CHARS as MAX_VERSION_CHARS
from ota.fields import ProtocolError as ProtocolError
from ota.fields import Reason as Reason
from ota.fields import (
    json_kind,
    object_field,
    optional_int,
    optional_str,
    required_int,
    required_str,
)
from ota.reports import Report, decode_report
from ota.reports import UplinkType as UplinkType

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_DEPTH = 8
MAX_EVENTS = 16
_DEVICE_ID = re.compile(r"[A-Za-z0-9_\-.:@]{1,128}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Upgrade command paras of a signed package (ota/package_signing.py): the detached
# signature, base64, and the id of the key it verifies with. Not IoTDA's: its devices
# ignore paras they do not know.
PARA_SIGNATURE = "package_signature"
PARA_KEY_ID = "package_key_id"

OTA_SERVICE = "$ota"
SDK_INFO_SERVICE = "$sdk_info"
LOG_SERVICE = "$log"
TIME_SYNC_SERVICE = "$time_sync"

# IoTDA system events that SDK devices send on their own around connecting (log lines,
# clock sync requests). Normal traffic with no bearing on upgrades: accepted without
# looking at their paras, named in `Message.ignored`, never an error. Other events of
# these services are as unknown as any other.
IGNORED_UPLINK: frozenset[tuple[str, str]] = frozenset(
    {(LOG_SERVICE, "log_report"), (TIME_SYNC_SERVICE, "time_sync_request")}
)


class DownlinkType(StrEnum):
    VERSION_QUERY = "version_query"
    FIRMWARE_UPGRADE = "firmware_upgrade"
    SOFTWARE_UPGRADE = "software_upgrade"
    FIRMWARE_UPGRADE_V2 = "firmware_upgrade_v2"
    SOFTWARE_UPGRADE_V2 = "software_upgrade_v2"

    @property
    def is_upgrade(self) -> bool:
        return self is not DownlinkType.VERSION_QUERY

    @property
    def presigned(self) -> bool:
        return self in (DownlinkType.FIRMWARE_UPGRADE_V2, DownlinkType.SOFTWARE_UPGRADE_V2)


_UPLINK_SERVICE: dict[UplinkType, str] = {
    UplinkType.VERSION_REPORT: OTA_SERVICE,
    UplinkType.UPGRADE_PROGRESS_REPORT: OTA_SERVICE,
    UplinkType.SDK_INFO_REPORT: SDK_INFO_SERVICE,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One event of an envelope, with `paras` normalised to the fields the protocol knows."""

    event_type: str
    paras: Mapping[str, Any]
    event_id: str | None = None
    event_time_ms: int | None = None  # the device's claim; never used for ordering
    service_id: str = OTA_SERVICE


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded envelope: the device it concerns, its events in order, and the
    (service_id, event_type) of each system event accepted but left out (IGNORED_UPLINK)."""

    device_id: str
    events: tuple[Event, ...] = field(default_factory=tuple)
    ignored: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------- topics


def up_topic(device_id: str) -> str:
    return f"$oc/devices/{device_id}/sys/events/up"


def down_topic(device_id: str) -> str:
    return f"$oc/devices/{device_id}/sys/events/down"


_TOPIC_HEAD = "$oc/devices/"
_TOPIC_TAILS = {"up": "/sys/events/up", "down": "/sys/events/down"}


def device_id_from_topic(topic: str, direction: str = "up") -> str:
    """The device id in `$oc/devices/<id>/sys/events/<direction>`."""
    tail = _TOPIC_TAILS.get(direction)
    if tail is not None and topic.startswith(_TOPIC_HEAD) and topic.endswith(tail):
        # The usual case without splitting: the id is what lies between, with no `/`.
        device_id = topic[len(_TOPIC_HEAD) : len(topic) - len(tail)]
        if len(topic) >= len(_TOPIC_HEAD) + len(tail) and "/" not in device_id:
            return check_device_id(device_id)
    return _split_device_id(topic, direction)


def _split_device_id(topic: str, direction: str) -> str:
    """Any topic, read by its parts (the fast path's reference: tests/unit/gateway)."""
    parts = topic.split("/")
    if (
        len(parts) != 6
        or parts[0] != "$oc"
        or parts[1] != "devices"
        or parts[3:] != ["sys", "events", direction]
    ):
        raise ProtocolError(
            Reason.BAD_TOPIC, f"topic {topic[:200]!r} is not an OTA {direction} topic"
        )
    return check_device_id(parts[2])


def check_device_id(device_id: str) -> str:
    if not _DEVICE_ID.fullmatch(device_id):
        raise ProtocolError(
            Reason.BAD_DEVICE_ID,
            f"device id {device_id[:200]!r} must be 1-128 of letters, digits and _-.:@",
        )
    return device_id


# ---------------------------------------------------------------- decoding


def load_json_object(payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Decode a JSON object, naming the exact reason when the bytes are not one."""
    if len(payload) > max_bytes:
        raise ProtocolError(
            Reason.PAYLOAD_TOO_LARGE, f"payload is {len(payload)} bytes, the limit is {max_bytes}"
        )
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise _explain_bad_json(payload, exc) from None
    if not isinstance(document, dict):
        raise ProtocolError(
            Reason.NOT_AN_OBJECT, f"payload is a JSON {json_kind(document)}, not an object"
        )
    # Every level opens a bracket: with few brackets in the bytes, skip the walk.
    if payload.count(b"{") + payload.count(b"[") > MAX_DEPTH and _depth(document) > MAX_DEPTH:
        raise ProtocolError(Reason.TOO_DEEP, f"payload nests deeper than {MAX_DEPTH} levels")
    return document


def _explain_bad_json(payload: bytes, exc: orjson.JSONDecodeError) -> ProtocolError:
    # Slow path only: find out *why* orjson refused, for a specific error.
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as bad:
        return ProtocolError(Reason.INVALID_UTF8, f"payload is not valid UTF-8 at byte {bad.start}")
    if "recursion" in str(exc).lower() or "depth" in str(exc).lower():
        return ProtocolError(Reason.TOO_DEEP, f"payload nests deeper than {MAX_DEPTH} levels")

    def refuse_constant(name: str) -> None:
        raise ProtocolError(Reason.NON_FINITE_NUMBER, f"{name} is not a valid JSON number")

    try:
        json.loads(text, parse_constant=refuse_constant)
    except ProtocolError as specific:
        return specific
    except (ValueError, RecursionError):
        return ProtocolError(Reason.INVALID_JSON, f"payload is not JSON: {exc}")
    # The standard library accepts what orjson refused: a number beyond a double's range.
    return ProtocolError(
        Reason.NUMBER_OUT_OF_RANGE, "a number in the payload is beyond a double's range"
    )


def _depth(document: Any) -> int:
    deepest, stack = 0, [(document, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _services(document: Mapping[str, Any]) -> list[Any]:
    services = document.get("services")
    if services is None:
        raise ProtocolError(Reason.MISSING_FIELD, "services is required")
    if not isinstance(services, list):
        raise ProtocolError(
            Reason.WRONG_TYPE, f"services must be an array, got {json_kind(services)}"
        )
    if not services:
        raise ProtocolError(Reason.MISSING_FIELD, "services must hold at least one event")
    if len(services) > MAX_EVENTS:
        raise ProtocolError(
            Reason.TOO_MANY_EVENTS,
            f"services holds {len(services)} events, the limit is {MAX_EVENTS}",
        )
    return services


def parse_uplink(topic: str, payload: bytes, *, known_children: Container[str] = ()) -> Message:
    """Decode a device's message on its `.../sys/events/up` topic."""
    device_id = device_id_from_topic(topic, "up")
    document = load_json_object(payload)
    device_id = _resolve_object_device(document, device_id, known_children)
    events = []
    ignored = []
    for index, raw in enumerate(_services(document)):
        where = _WHERE[index]  # at most MAX_EVENTS: names made once, not per message
        if not isinstance(raw, dict):
            raise ProtocolError(
                Reason.WRONG_TYPE, f"{where} must be an object, got {json_kind(raw)}"
            )
        event_type = required_str(raw, "event_type", where)
        service_id = required_str(raw, "service_id", where)
        if (service_id, event_type) in IGNORED_UPLINK:
            ignored.append((service_id, event_type))
            continue
        # A dict look-up by the text (UplinkType's values), not the enum's call.
        kind = _UPLINK_KINDS.get(event_type)
        if kind is None:
            raise ProtocolError(
                Reason.UNKNOWN_EVENT,
                f"{where}.event_type {event_type[:100]!r} is not a device event",
            )
        if _UPLINK_SERVICE[kind] != service_id:
            raise ProtocolError(
                Reason.UNKNOWN_EVENT,
                f"{where}: {event_type} belongs to service {_UPLINK_SERVICE[kind]}, not {service_id[:100]!r}",
            )
        report = decode_report(kind, object_field(raw, "paras", where), _WHERE_PARAS[index])
        events.append(
            Event(  # positional, in field order: keywords cost a third more per event
                event_type,  # kind's value
                report.paras(),
                optional_str(raw, "event_id", where, MAX_VERSION_CHARS),
                parse_event_time(raw.get("event_time")),
                service_id,
            )
        )
    return Message(device_id, tuple(events), tuple(ignored))


_WHERE = tuple(f"services[{index}]" for index in range(MAX_EVENTS))
_WHERE_PARAS = tuple(f"{where}.paras" for where in _WHERE)
_UPLINK_KINDS: dict[str, UplinkType] = {kind.value: kind for kind in UplinkType}


def _resolve_object_device(
    document: Mapping[str, Any], topic_device: str, known_children: Container[str]
) -> str:
    claimed = document.get("object_device_id")
    if claimed is None or claimed == topic_device:
        return topic_device
    if not isinstance(claimed, str):
        raise ProtocolError(
            Reason.WRONG_TYPE, f"object_device_id must be a string, got {json_kind(claimed)}"
        )
    if claimed in known_children:
        return check_device_id(claimed)
    raise ProtocolError(
        Reason.DEVICE_MISMATCH,
        f"object_device_id {claimed[:200]!r} is neither the topic's device {topic_device!r} nor a known child",
    )


def parse_event_time(value: Any) -> int | None:
    """Epoch ms from `yyyyMMddTHHmmssZ` (IoTDA) or `yyyy-MM-ddTHH:mm:ssZ` (Huawei's SDK)."""
    if not isinstance(value, str):
        return None
    return _event_time_ms(value)


@functools.lru_cache(maxsize=1024)
def _event_time_ms(value: str) -> int | None:
    # Cached: a fleet's messages of one second carry the same time, and at thousands of
    # messages a second the calendar arithmetic was a visible part of parsing.
    if len(value) == 16 and value[8] == "T" and value[15] == "Z":
        digits = value[:8] + value[9:15]
    elif (
        len(value) == 20
        and value[4] == value[7] == "-"
        and value[10] == "T"
        and value[13] == value[16] == ":"
        and value[19] == "Z"
    ):
        digits = value[0:4] + value[5:7] + value[8:10] + value[11:13] + value[14:16] + value[17:19]
    else:
        return None
    if not (digits.isascii() and digits.isdigit()):
        return None
    year, month, day = int(digits[0:4]), int(digits[4:6]), int(digits[6:8])
    hour, minute, second = int(digits[8:10]), int(digits[10:12]), int(digits[12:14])
    if not (
        1970 <= year <= 9999
        and 1 <= month <= 12
        and 1 <= day <= calendar.monthrange(year, month)[1]
        and hour < 24
        and minute < 60
        and second < 60
    ):
        return None
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) * 1000


def format_event_time(epoch_ms: int) -> str:
    import time

    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch_ms // 1000))


# ---------------------------------------------------------------- downlink


def _upgrade_paras(paras: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": required_str(paras, "version", where),
        "url": required_str(paras, "url", where, MAX_TEXT_CHARS),
        "file_size": required_int(paras, "file_size", where, 0, 2**53),
        "file_name": required_str(paras, "file_name", where, 255),
        "sign": required_str(paras, "sign", where),
    }
    if not _SHA256_HEX.fullmatch(out["sign"]):
        raise ProtocolError(Reason.BAD_VALUE, f"{where}.sign must be 64 lowercase hex digits")
    for name in ("access_token", "custom_info", "task_id"):
        text = optional_str(paras, name, where, MAX_TEXT_CHARS)
        if text is not None:
            out[name] = text
    # This platform's signed-package fields (docs/protocol.md): IoTDA devices ignore them.
    for name, limit in ((PARA_SIGNATURE, 512), (PARA_KEY_ID, 64)):
        text = optional_str(paras, name, where, limit)
        if text is not None:
            out[name] = text
    for name in ("expires", "sub_device_count"):
        number = optional_int(paras, name, where, 0, 2**31 - 1)
        if number is not None:
            out[name] = number
    if "task_ext_info" in paras:
        out["task_ext_info"] = object_field(paras, "task_ext_info", where)
    return out


def _version_query_paras(paras: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    task_id = optional_str(paras, "task_id", where)
    if task_id is not None:
        out["task_id"] = task_id
    count = optional_int(paras, "sub_device_count", where, 0, 2**31 - 1)
    if count is not None:
        out["sub_device_count"] = count
    if "task_ext_info" in paras:
        out["task_ext_info"] = object_field(paras, "task_ext_info", where)
    return out


def parse_downlink(device_id: str, payload: bytes) -> Message:
    """Decode a platform command, as a device does (the reference agent uses this)."""
    document = load_json_object(payload)
    device_id = _resolve_object_device(document, device_id, ())
    events = []
    for index, raw in enumerate(_services(document)):
        where = f"services[{index}]"
        if not isinstance(raw, dict):
            raise ProtocolError(
                Reason.WRONG_TYPE, f"{where} must be an object, got {json_kind(raw)}"
            )
        event_type = required_str(raw, "event_type", where)
        try:
            kind = DownlinkType(event_type)
        except ValueError:
            raise ProtocolError(
                Reason.UNKNOWN_EVENT,
                f"{where}.event_type {event_type[:100]!r} is not a platform command",
            ) from None
        paras = object_field(raw, "paras", where)
        parse = _upgrade_paras if kind.is_upgrade else _version_query_paras
        events.append(
            Event(
                event_type=kind.value,
                paras=parse(paras, f"{where}.paras"),
                event_id=optional_str(raw, "event_id", where),
                event_time_ms=parse_event_time(raw.get("event_time")),
            )
        )
    return Message(device_id, tuple(events))


def uplink_event(report: Report, event_id: str | None = None) -> Event:
    """The event a device sends to carry `report` (the reference agent uses this)."""
    kind = report.event_type
    return Event(kind.value, report.paras(), event_id=event_id, service_id=_UPLINK_SERVICE[kind])


def encode_envelope(device_id: str, events: tuple[Event, ...] | list[Event], now_ms: int) -> bytes:
    """The envelope carrying `events` for `device_id`, stamped with `now_ms` where unstamped."""
    services = []
    for event in events:
        service: dict[str, Any] = {
            "service_id": event.service_id,
            "event_type": event.event_type,
            "event_time": format_event_time(event.event_time_ms or now_ms),
            "paras": dict(event.paras),
        }
        if event.event_id is not None:
            service["event_id"] = event.event_id
        services.append(service)
    return orjson.dumps({"object_device_id": device_id, "services": services})


def check_downlink_paras(event_type: str, paras: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalise the paras of a platform command before it is sent."""
    try:
        kind = DownlinkType(event_type)
    except ValueError:
        raise ProtocolError(
            Reason.UNKNOWN_EVENT, f"{event_type[:100]!r} is not a platform command"
        ) from None
    return (_upgrade_paras if kind.is_upgrade else _version_query_paras)(paras, "paras")
