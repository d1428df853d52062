from __future__ import annotations

import base64
from collections.abc import Mapping

import orjson
import pytest

from gateway.uplink import MAX_RAW_BYTES, dead_letter, translate
from ota.protocol import ProtocolError, Reason, up_topic
from ota.records import DeviceEventRecord

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
