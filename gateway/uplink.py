"""Uplink messages -> Kafka records: the gateway's pure translation step.

Each event of a valid envelope becomes one `DeviceEventRecord` for the inbox (key =
device id, time = receive time). When the device gave an `event_id`, the record id is
derived from it and the event's content, so a message the broker redelivers (after a
gateway crash before its PUBACK) yields records with the same ids and consumers drop
the copies; distinct reports that echo one command's event_id keep distinct ids.
IoTDA system events the platform has no use for (`$log`, `$time_sync`) become no record:
they are only named, for the gateway to count.
A malformed message becomes one `DeadLetterRecord` carrying the reason and raw bytes, and
so does a record Kafka refuses for good (reason `kafka_refused`) and a message the
gateway itself failed to translate (reason `gateway_error`).
"""

from __future__ import annotations

import hashlib
from dataclasses import fields
from typing import NamedTuple

import orjson

from ota.protocol import Event, ProtocolError, parse_uplink
from ota.records import DeadLetterRecord, DeviceEventRecord, new_id

SOURCE = "gateway"
KAFKA_REFUSED = "kafka_refused"
GATEWAY_ERROR = "gateway_error"
# A dead letter keeps at most this much of the raw message, so it always fits in a Kafka record.
MAX_RAW_BYTES = 64 * 1024

# Records are built with positional arguments (a dataclass's __init__ matching keywords
# by name costs a third more, once per event): a reordered record stops the gateway at
# import instead of swapping two of its fields.
_EVENT_FIELDS = (
    "device_id",
    "event_type",
    "paras",
    "device_event_id",
    "device_time_ms",
    "id",
    "at_ms",
)
if tuple(f.name for f in fields(DeviceEventRecord)) != _EVENT_FIELDS:
    raise ImportError("DeviceEventRecord's fields are not in the order uplink.py builds")


def record_id(device_id: str, index: int, event: Event) -> str:
    """A stable id for an event the device named, a fresh one otherwise."""
    if event.event_id is None:
        return new_id()
    # One call over the parts, each followed by a NUL, then the paras with sorted keys.
    content = b"\0".join(
        (
            device_id.encode(),
            event.event_id.encode(),
            event.event_type.encode(),
            str(index).encode(),
            orjson.dumps(event.paras, option=orjson.OPT_SORT_KEYS),
        )
    )
    return hashlib.blake2b(content, digest_size=16).hexdigest()


class Uplink(NamedTuple):
    """One uplink message translated: its inbox records, and the (service_id, event_type)
    of the system events it carried that are accepted but not forwarded. (A named tuple:
    one per message, built for a third of a frozen dataclass's cost.)"""

    records: list[DeviceEventRecord]
    ignored: tuple[tuple[str, str], ...] = ()
    device_id: str = ""  # the device the message is from (its topic's)


def translate(topic: str, payload: bytes, received_ms: int) -> Uplink:
    """The inbox records of one uplink message; raises ProtocolError when it is malformed."""
    message = parse_uplink(topic, payload)
    device_id = message.device_id
    records = [
        DeviceEventRecord(  # positional (in field order): cheaper than keywords per message
            device_id,
            event.event_type,
            event.paras,
            event.event_id,
            event.event_time_ms,
            record_id(device_id, index, event),
            received_ms,
        )
        for index, event in enumerate(message.events)
    ]
    return Uplink(records, message.ignored, device_id)


def dead_letter(
    topic: str, payload: bytes, error: ProtocolError, received_ms: int
) -> DeadLetterRecord:
    """The dead letter of a malformed message; its id repeats for a redelivered copy."""
    digest = hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).hexdigest()
    return DeadLetterRecord(
        source=SOURCE,
        reason=error.reason.value,
        message=error.message
        + (
            f" (raw bytes cut to the first {MAX_RAW_BYTES})" if len(payload) > MAX_RAW_BYTES else ""
        ),
        raw_b64=DeadLetterRecord.raw_bytes(payload[:MAX_RAW_BYTES]),
        origin=topic,
        key=_device_part(topic),
        id=digest,
        at_ms=received_ms,
    )


def refused_letter(
    topic: str, payload: bytes, index: int, error: BaseException, received_ms: int
) -> DeadLetterRecord:
    """The dead letter of record `index` of a message, refused by Kafka for good; its id
    repeats for a redelivered copy."""
    digest = hashlib.blake2b(
        b"%s\0%d\0%s" % (topic.encode(), index, payload), digest_size=16
    ).hexdigest()
    return DeadLetterRecord(
        source=SOURCE,
        reason=KAFKA_REFUSED,
        message=f"Kafka refused record {index} of this message for good: {str(error)[:500]}",
        raw_b64=DeadLetterRecord.raw_bytes(payload[:MAX_RAW_BYTES]),
        origin=topic,
        key=_device_part(topic),
        id=digest,
        at_ms=received_ms,
    )


def error_letter(
    topic: str, payload: bytes, error: Exception, received_ms: int
) -> DeadLetterRecord:
    """The dead letter of a message the gateway failed to translate (a defect in the
    gateway); its id repeats for a redelivered copy."""
    digest = hashlib.blake2b(b"error\0" + topic.encode() + b"\0" + payload, digest_size=16)
    return DeadLetterRecord(
        source=SOURCE,
        reason=GATEWAY_ERROR,
        message=f"the gateway failed to translate this message: {type(error).__name__}: "
        + str(error)[:500],
        raw_b64=DeadLetterRecord.raw_bytes(payload[:MAX_RAW_BYTES]),
        origin=topic,
        key=_device_part(topic),
        id=digest.hexdigest(),
        at_ms=received_ms,
    )


def _device_part(topic: str) -> str | None:
    parts = topic.split("/")
    return parts[2][:128] if len(parts) > 2 and parts[2] else None
