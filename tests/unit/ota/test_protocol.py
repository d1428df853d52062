"""The IoTDA codec: every event round-trips, every bad input gets its specific reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.protocol import (
    MAX_PAYLOAD_BYTES,
    DownlinkType,
    Event,
    ProtocolError,
    Reason,
    check_downlink_paras,
    device_id_from_topic,
    down_topic,
    encode_envelope,
    format_event_time,
    parse_downlink,
    parse_event_time,
    parse_uplink,
    up_topic,
)

DEV = "dev-1"
TOPIC = up_topic(DEV)
SHA = "ab" * 32
NOW_MS = 1_795_000_000_000


def envelope(*services: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"services": list(services), **extra})


def service(
    event_type: str, paras: dict[str, Any], service_id: str = "$ota", **extra: Any
) -> dict[str, Any]:
    return {"service_id": service_id, "event_type": event_type, "paras": paras, **extra}


def refused(payload: bytes, topic: str = TOPIC, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_uplink(topic, payload, **kwargs)
    return caught.value


UPLINK_EVENTS = [
    service("version_report", {"fw_version": "1.0", "sw_version": "2.0"}),
    service("version_report", {}),
    service(
        "upgrade_progress_report",
        {"result_code": 0, "progress": 100, "version": "2.0", "description": "ok"},
    ),
    service("upgrade_progress_report", {"result_code": 255, "version": "1.0"}),
    service(
        "sdk_info_report",
        {"device_sdk_version": "C_v0.5", "sw_version": "1", "fw_version": "2"},
        "$sdk_info",
    ),
]


@pytest.mark.parametrize("raw", UPLINK_EVENTS, ids=lambda s: s["event_type"])
def test_every_uplink_event_round_trips(raw: dict[str, Any]) -> None:
    event_time = "20261127T120000Z"
    message = parse_uplink(TOPIC, envelope({**raw, "event_time": event_time, "event_id": "e1"}))
    assert message.device_id == DEV
    (event,) = message.events
    assert (event.event_type, event.service_id, dict(event.paras)) == (
        raw["event_type"],
        raw["service_id"],
        raw["paras"],
    )
    assert event.event_id == "e1"
    again = parse_uplink(TOPIC, encode_envelope(DEV, message.events, NOW_MS))
    assert again == message


DOWNLINK_PARAS: dict[str, dict[str, Any]] = {
    "version_query": {},
    "firmware_upgrade": {
        "version": "2.0",
        "url": "https://edge/packages/sha256/" + SHA,
        "file_size": 10,
        "file_name": "fw.bin",
        "access_token": "tok",
        "expires": 86400,
        "sign": SHA,
        "custom_info": "note",
    },
    "software_upgrade": {
        "version": "2.0",
        "url": "https://e/p",
        "file_size": 0,
        "file_name": "a",
        "sign": SHA,
    },
    "firmware_upgrade_v2": {
        "version": "3",
        "url": "https://e/p?token=t",
        "file_size": 5,
        "file_name": "f",
        "sign": SHA,
        "task_id": "t1",
        "sub_device_count": 2,
        "task_ext_info": {"k": "v"},
    },
    "software_upgrade_v2": {
        "version": "3",
        "url": "https://e/p?token=t",
        "file_size": 5,
        "file_name": "f",
        "sign": SHA,
    },
}


@pytest.mark.parametrize("event_type", list(DOWNLINK_PARAS))
def test_every_downlink_event_round_trips(event_type: str) -> None:
    paras = check_downlink_paras(event_type, DOWNLINK_PARAS[event_type])
    payload = encode_envelope(DEV, [Event(event_type, paras, event_id="cmd-1")], NOW_MS)
    message = parse_downlink(DEV, payload)
    (event,) = message.events
    assert (event.event_type, dict(event.paras), event.event_id) == (
        event_type,
        DOWNLINK_PARAS[event_type],
        "cmd-1",
    )
    assert event.event_time_ms == NOW_MS // 1000 * 1000
    assert DownlinkType(event_type).presigned == event_type.endswith("_v2")


# What Huawei's device SDKs send on their own when they connect (paras as theirs look).
LOG_REPORT = service(
    "log_report",
    {"timestamp": "1795000000000", "type": "DEVICE_STATUS", "content": "connect complete"},
    "$log",
)
TIME_SYNC = service("time_sync_request", {"device_send_time": 1_795_000_000_000}, "$time_sync")


def test_sdk_system_events_are_accepted_and_set_aside() -> None:
    message = parse_uplink(TOPIC, envelope(LOG_REPORT, UPLINK_EVENTS[0], TIME_SYNC))
    assert [e.event_type for e in message.events] == ["version_report"]
    assert message.ignored == (("$log", "log_report"), ("$time_sync", "time_sync_request"))


def test_system_events_are_accepted_whatever_their_paras() -> None:
    odd = service("log_report", {"content": ["not", "text"], "timestamp": 7}, "$log")
    message = parse_uplink(TOPIC, envelope(odd))
    assert (message.events, message.ignored) == ((), (("$log", "log_report"),))


def test_ota_events_carry_nothing_ignored() -> None:
    assert parse_uplink(TOPIC, envelope(*UPLINK_EVENTS)).ignored == ()


def test_several_events_in_one_envelope_are_kept_in_order() -> None:
    message = parse_uplink(TOPIC, envelope(*UPLINK_EVENTS))
    assert [e.event_type for e in message.events] == [s["event_type"] for s in UPLINK_EVENTS]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"x" * (MAX_PAYLOAD_BYTES + 1), Reason.PAYLOAD_TOO_LARGE),
        (b'{"services": "\xff\xfe"}', Reason.INVALID_UTF8),
        (b"not json", Reason.INVALID_JSON),
        (b'{"services": [', Reason.INVALID_JSON),
        (b'{"services": [{"paras": {"progress": NaN}}]}', Reason.NON_FINITE_NUMBER),
        (b'{"services": [{"paras": {"progress": -Infinity}}]}', Reason.NON_FINITE_NUMBER),
        (b'{"services": [{"paras": {"progress": 1e400}}]}', Reason.NUMBER_OUT_OF_RANGE),
        # orjson reads integers beyond 64 bits as floats: refused as the wrong type, never wrapped.
        (
            envelope(service("upgrade_progress_report", {"version": "1"}))[:-4]
            + b',"result_code":123456789012345678901234567890}}]}',
            Reason.WRONG_TYPE,
        ),
        (b"[" * 20 + b"]" * 20, Reason.NOT_AN_OBJECT),
        (b'{"a":' * 20 + b"1" + b"}" * 20, Reason.TOO_DEEP),
        (b'{"a":' * 2000 + b"1" + b"}" * 2000, Reason.TOO_DEEP),
        (b"[]", Reason.NOT_AN_OBJECT),
        (b"{}", Reason.MISSING_FIELD),
        (b'{"services": {}}', Reason.WRONG_TYPE),
        (b'{"services": []}', Reason.MISSING_FIELD),
        (b'{"services": [1]}', Reason.WRONG_TYPE),
        (envelope(*[UPLINK_EVENTS[0]] * 17), Reason.TOO_MANY_EVENTS),
        (envelope({"service_id": "$ota", "paras": {}}), Reason.MISSING_FIELD),
        (envelope({"event_type": "version_report", "paras": {}}), Reason.MISSING_FIELD),
        (envelope(service("reboot", {})), Reason.UNKNOWN_EVENT),
        (envelope(service("version_report", {}, "$other")), Reason.UNKNOWN_EVENT),
        # Only the named system events are accepted: not another event of their services,
        # not their event types under another service, not another system service.
        (envelope(service("log_config", {}, "$log")), Reason.UNKNOWN_EVENT),
        (envelope(service("time_sync_response", {}, "$time_sync")), Reason.UNKNOWN_EVENT),
        (envelope(service("log_report", {})), Reason.UNKNOWN_EVENT),
        (
            envelope(service("sub_device_update_status", {}, "$sub_device_manager")),
            Reason.UNKNOWN_EVENT,
        ),
        (envelope(LOG_REPORT, service("reboot", {})), Reason.UNKNOWN_EVENT),
        (
            envelope({"service_id": "$ota", "event_type": "version_report", "paras": []}),
            Reason.WRONG_TYPE,
        ),
        (envelope(service("version_report", {"fw_version": 1})), Reason.WRONG_TYPE),
        (envelope(service("version_report", {"fw_version": "x" * 500})), Reason.BAD_VALUE),
        (envelope(service("upgrade_progress_report", {"version": "1"})), Reason.MISSING_FIELD),
        (envelope(service("upgrade_progress_report", {"result_code": 0})), Reason.MISSING_FIELD),
        (
            envelope(service("upgrade_progress_report", {"result_code": "0", "version": "1"})),
            Reason.WRONG_TYPE,
        ),
        (
            envelope(service("upgrade_progress_report", {"result_code": True, "version": "1"})),
            Reason.WRONG_TYPE,
        ),
        (
            envelope(service("upgrade_progress_report", {"result_code": -1, "version": "1"})),
            Reason.BAD_VALUE,
        ),
        (
            envelope(
                service(
                    "upgrade_progress_report", {"result_code": 0, "version": "1", "progress": 101}
                )
            ),
            Reason.BAD_VALUE,
        ),
        (
            envelope(
                service(
                    "upgrade_progress_report", {"result_code": 0, "version": "1", "progress": 1.5}
                )
            ),
            Reason.WRONG_TYPE,
        ),
        (envelope(UPLINK_EVENTS[0], object_device_id="dev-2"), Reason.DEVICE_MISMATCH),
        (envelope(UPLINK_EVENTS[0], object_device_id=7), Reason.WRONG_TYPE),
    ],
)
def test_bad_uplinks_get_their_specific_reason(payload: bytes, reason: Reason) -> None:
    error = refused(payload)
    assert error.reason is reason, error.message
    assert error.message


@pytest.mark.parametrize(
    "topic",
    [
        "$oc/devices/dev-1/sys/events/down",
        "oc/devices/dev-1/sys/events/up",
        "$oc/devices//sys/events/up",
        "$oc/devices/a/b/sys/events/up",
        "$oc/devices/bad id/sys/events/up",
        "$oc/devices/" + "x" * 129 + "/sys/events/up",
    ],
)
def test_topics_that_are_not_a_device_up_topic_are_refused(topic: str) -> None:
    assert refused(envelope(UPLINK_EVENTS[0]), topic).reason in (
        Reason.BAD_TOPIC,
        Reason.BAD_DEVICE_ID,
    )


def test_object_device_id_may_repeat_the_topic_device_or_name_a_known_child() -> None:
    assert parse_uplink(TOPIC, envelope(UPLINK_EVENTS[0], object_device_id=DEV)).device_id == DEV
    child = parse_uplink(
        TOPIC, envelope(UPLINK_EVENTS[0], object_device_id="child-7"), known_children={"child-7"}
    )
    assert child.device_id == "child-7"


def test_unknown_paras_fields_are_dropped_not_passed_on() -> None:
    message = parse_uplink(
        TOPIC, envelope(service("version_report", {"fw_version": "1", "evil": {"x": 1}}))
    )
    assert dict(message.events[0].paras) == {"fw_version": "1"}


def test_both_event_time_formats_parse_and_bad_ones_fall_back_to_none() -> None:
    assert (
        parse_event_time("20261127T120000Z")
        == parse_event_time("2026-11-27T12:00:00Z")
        == 1795780800000
    )
    for bad in (
        "",
        "20261327T120000Z",
        "20260230T000000Z",
        "2026-11-27 12:00:00",
        "\uff12\uff10\uff12\uff161127T120000Z",
        5,
        None,
    ):
        assert parse_event_time(bad) is None
    assert format_event_time(1795780800000) == "20261127T120000Z"


def test_downlink_command_paras_are_checked_before_sending() -> None:
    with pytest.raises(ProtocolError) as caught:
        check_downlink_paras(
            "firmware_upgrade", {**DOWNLINK_PARAS["firmware_upgrade"], "sign": "XYZ"}
        )
    assert caught.value.reason is Reason.BAD_VALUE
    with pytest.raises(ProtocolError) as unknown:
        check_downlink_paras("reboot", {})
    assert unknown.value.reason is Reason.UNKNOWN_EVENT


def test_topic_helpers_are_inverse() -> None:
    assert device_id_from_topic(up_topic(DEV)) == DEV
    assert device_id_from_topic(down_topic(DEV), "down") == DEV


versions = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@given(
    fw=st.none() | versions,
    sw=st.none() | versions,
    code=st.integers(0, 2**31 - 1),
    progress=st.none() | st.integers(0, 100),
    event_id=st.none() | st.text(max_size=20),
)
def test_uplink_round_trip_property(
    fw: str | None, sw: str | None, code: int, progress: int | None, event_id: str | None
) -> None:
    report = {k: v for k, v in (("fw_version", fw), ("sw_version", sw)) if v is not None}
    result: dict[str, Any] = {"result_code": code, "version": fw or "v"}
    if progress is not None:
        result["progress"] = progress
    events = (
        Event("version_report", report, event_id),
        Event("upgrade_progress_report", result, event_id),
    )
    message = parse_uplink(TOPIC, encode_envelope(DEV, events, NOW_MS))
    assert [dict(e.paras) for e in message.events] == [report, result]


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(payload: bytes) -> None:
    try:
        parse_uplink(TOPIC, payload)
    except ProtocolError as error:
        assert isinstance(error.reason, Reason)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@given(
    st.dictionaries(st.sampled_from(["services", "object_device_id", "x"]), json_values, max_size=3)
)
def test_arbitrary_json_objects_never_raise_anything_but_protocol_error(
    document: dict[str, Any],
) -> None:
    try:
        parse_uplink(TOPIC, orjson.dumps(document))
    except ProtocolError as error:
        assert error.message
