from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.uplink import MAX_RAW_BYTES, dead_letter, record_id, translate
from ota.protocol import (
    Event,
    ProtocolError,
    Reason,
    UplinkType,
    _split_device_id,
    device_id_from_topic,
    up_topic,
)
from ota.records import DeviceEventRecord, encode, encode_device_event
from ota.reports import decode_report

TOPIC = up_topic("devA")


def device_records(topic: str, payload: bytes, received_ms: int) -> list[DeviceEventRecord]:
    return translate(topic, payload, received_ms).records


def _envelope(*services: Mapping[str, object]) -> bytes:
    return orjson.dumps({"services": list(services)})


REPORT = {
    "service_id": "$ota",
    "event_type": "upgrade_progress_report",
    "event_id": "cmd-1",
    "event_time": "20261127T120000Z",
    "paras": {"result_code": 0, "progress": 50, "version": "1.0"},
}


def test_one_record_per_event_keyed_by_the_topic_device() -> None:
    version = {"service_id": "$ota", "event_type": "version_report", "paras": {"fw_version": "1.0"}}
    records = device_records(TOPIC, _envelope(version, REPORT), received_ms=1234)
    assert [r.event_type for r in records] == ["version_report", "upgrade_progress_report"]
    assert all(r.device_id == "devA" and r.at_ms == 1234 for r in records)
    assert records[1].device_event_id == "cmd-1"
    assert records[1].device_time_ms == 1_795_780_800_000
    assert records[1].paras == {"result_code": 0, "progress": 50, "version": "1.0"}


def test_sdk_system_events_become_no_record_and_are_named() -> None:
    log = {"service_id": "$log", "event_type": "log_report", "paras": {"content": "connected"}}
    sync = {"service_id": "$time_sync", "event_type": "time_sync_request", "paras": {}}
    uplink = translate(TOPIC, _envelope(log, REPORT, sync), 1)
    assert [r.event_type for r in uplink.records] == ["upgrade_progress_report"]
    assert uplink.ignored == (("$log", "log_report"), ("$time_sync", "time_sync_request"))


def test_redelivered_message_gets_the_same_ids() -> None:
    first = device_records(TOPIC, _envelope(REPORT), 1)
    again = device_records(TOPIC, _envelope(REPORT), 999)
    assert first[0].id == again[0].id


def test_reports_echoing_one_event_id_keep_distinct_ids() -> None:
    done = dict(REPORT, paras={"result_code": 0, "progress": 100, "version": "2.0"})
    assert (
        device_records(TOPIC, _envelope(REPORT), 1)[0].id
        != device_records(TOPIC, _envelope(done), 1)[0].id
    )


def test_other_device_same_event_id_differs() -> None:
    mine = device_records(TOPIC, _envelope(REPORT), 1)[0].id
    theirs = device_records(up_topic("devB"), _envelope(REPORT), 1)[0].id
    assert mine != theirs


def test_events_without_event_id_get_fresh_ids() -> None:
    plain = {"service_id": "$ota", "event_type": "version_report", "paras": {}}
    assert (
        device_records(TOPIC, _envelope(plain), 1)[0].id
        != device_records(TOPIC, _envelope(plain), 1)[0].id
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", Reason.INVALID_JSON),
        (b"\xff\xfe{}", Reason.INVALID_UTF8),
        (b"[1]", Reason.NOT_AN_OBJECT),
        (orjson.dumps({"services": "x"}), Reason.WRONG_TYPE),
        (orjson.dumps({"object_device_id": "devB", "services": [REPORT]}), Reason.DEVICE_MISMATCH),
        (b'{"a":' * 100 + b"1" + b"}" * 100, Reason.TOO_DEEP),
        (b" " * (64 * 1024 + 1), Reason.PAYLOAD_TOO_LARGE),
    ],
)
def test_malformed_messages_become_dead_letters(payload: bytes, reason: Reason) -> None:
    with pytest.raises(ProtocolError) as caught:
        device_records(TOPIC, payload, 1)
    letter = dead_letter(TOPIC, payload, caught.value, 77)
    assert letter.reason == reason.value
    assert base64.b64decode(letter.raw_b64) == payload[:MAX_RAW_BYTES]
    assert letter.origin == TOPIC
    assert letter.key == "devA"
    assert letter.at_ms == 77
    assert letter.id == dead_letter(TOPIC, payload, caught.value, 78).id


def test_dead_letter_of_a_bad_topic() -> None:
    with pytest.raises(ProtocolError) as caught:
        device_records("$oc/devices", b"{}", 1)
    assert dead_letter("$oc/devices", b"{}", caught.value, 1).key is None


def test_dead_letter_of_a_huge_payload_keeps_its_head() -> None:
    payload = b"x" * (1024 * 1024)
    with pytest.raises(ProtocolError) as caught:
        device_records(TOPIC, payload, 1)
    letter = dead_letter(TOPIC, payload, caught.value, 1)
    assert letter.reason == "payload_too_large"
    assert len(base64.b64decode(letter.raw_b64)) == MAX_RAW_BYTES
    assert "cut to the first" in letter.message


def _outcome(read: Callable[[str, str], str], topic: str, direction: str) -> tuple[str, str]:
    try:
        return ("device", read(topic, direction))
    except ProtocolError as error:
        return (error.reason.value, error.message)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["$oc", "devices", "sys", "events", "up", "down", "", "d-1", "bad id", "x" * 129, "a/b"]
        ),
        max_size=8,
    ),
    st.sampled_from(["up", "down"]),
)
def test_topic_device_ids_read_as_the_split_reading_does(parts: list[str], direction: str) -> None:
    topic = "/".join(parts)
    assert _outcome(device_id_from_topic, topic, direction) == _outcome(
        _split_device_id, topic, direction
    )


@pytest.mark.parametrize(
    "topic",
    [
        up_topic("dev:A@1.b_c-d"),
        "$oc/devices/d-1/sys/events/down",
        "$oc/devices//sys/events/up",
        "$oc/devices/sys/events/up",
        "$oc/devices/sys/events/up/sys/events/up",
        "$oc/devices/a/b/sys/events/up",
        "$oc/devices/bad id/sys/events/up",
        "$oc/devices/" + "x" * 128 + "/sys/events/up",
        "$oc/devices/" + "x" * 129 + "/sys/events/up",
        "$oc/devices/d/sys/events/up/",
        "/$oc/devices/d/sys/events/up",
        "$oc/devices/d\n/sys/events/up",
    ],
)
def test_these_topics_read_as_the_split_reading_does(topic: str) -> None:
    for direction in ("up", "down"):
        assert _outcome(device_id_from_topic, topic, direction) == _outcome(
            _split_device_id, topic, direction
        )


def _incremental_id(device_id: str, index: int, event: Event) -> str:
    """record_id as it was computed before (one update per part): ids must not change."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (device_id, event.event_id or "", event.event_type, str(index)):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(orjson.dumps(event.paras, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def test_record_ids_are_those_of_before() -> None:
    events = [
        Event("upgrade_progress_report", {"version": "1.0", "result_code": 0}, "cmd-1"),
        Event("version_report", {"fw_version": "2.\u00e9"}, "\u00e9v\u00e9nement-7"),
        Event("sdk_info_report", {}, ""),
    ]
    for index, event in enumerate(events):
        assert record_id("dev:A@1", index, event) == _incremental_id("dev:A@1", index, event)


def test_reports_decode_by_their_type_text_or_member() -> None:
    paras = {"result_code": 0, "version": "1.0", "progress": 5}
    by_text = decode_report("upgrade_progress_report", paras)
    assert decode_report(UplinkType.UPGRADE_PROGRESS_REPORT, paras) == by_text
    assert by_text.paras() == paras
    for unknown in ("reboot", "UPGRADE_PROGRESS_REPORT", ""):
        with pytest.raises(ProtocolError) as caught:
            decode_report(unknown, paras)
        assert caught.value.reason is Reason.UNKNOWN_EVENT


def test_events_encode_as_the_general_codec_does() -> None:
    records = [
        DeviceEventRecord("d", "version_report", {"fw_version": "1"}, None, None, "i", 0),
        DeviceEventRecord("d\u00e9", "upgrade_progress_report", REPORT["paras"], "e", 7, "j", 9),  # type: ignore[arg-type]
        *translate(TOPIC, _envelope(REPORT, REPORT), 1234).records,
    ]
    for record in records:
        assert encode_device_event(record) == encode(record)
