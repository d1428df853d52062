"""The health verdict of a version report (`health_check`, docs/protocol.md "Health
confirmation"): read by the one reading the gateway, workers and scheduler share, refused
specifically when it is not one of the values, absent from every report that has none."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ota.fields import ProtocolError, Reason
from ota.protocol import parse_uplink
from ota.records import DeviceEventRecord
from ota.reports import HealthCheck, VersionReport, decode_report
from workers.events import InvalidEventError, Kind, event_from_record

UP = "$oc/devices/dev-1/sys/events/up"


def _uplink(paras: dict[str, Any]) -> bytes:
    event = {"service_id": "$ota", "event_type": "version_report", "paras": paras}
    return orjson.dumps({"services": [event]})


@pytest.mark.parametrize("verdict", list(HealthCheck))
def test_a_verdict_travels_from_the_device_to_the_machine(verdict: HealthCheck) -> None:
    [event] = parse_uplink(UP, _uplink({"fw_version": "2.0", "health_check": verdict.value})).events
    assert event.paras == {"fw_version": "2.0", "health_check": verdict.value}
    record = DeviceEventRecord(device_id="dev-1", event_type=event.event_type, paras=event.paras)
    machine_event = event_from_record(record)
    assert (machine_event.kind, machine_event.fw_version) == (Kind.VERSION, "2.0")
    assert machine_event.health_check is verdict


def test_a_report_without_a_verdict_is_as_it_always_was() -> None:
    report = decode_report("version_report", {"fw_version": "1.0"})
    assert report == VersionReport(fw_version="1.0")
    assert report.paras() == {"fw_version": "1.0"}
    record = DeviceEventRecord(device_id="d", event_type="version_report", paras=report.paras())
    assert event_from_record(record).health_check is None


@pytest.mark.parametrize(
    ("value", "reason", "text"),
    [
        ("ok", Reason.BAD_VALUE, "paras.health_check 'ok' is not one of passed, failed"),
        ("PASSED", Reason.BAD_VALUE, "is not one of passed, failed"),
        (True, Reason.WRONG_TYPE, "paras.health_check must be a string, got boolean"),
        ("x" * 200, Reason.BAD_VALUE, "the limit is"),
    ],
)
def test_any_other_verdict_is_refused_specifically(value: Any, reason: Reason, text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_report("version_report", {"fw_version": "2.0", "health_check": value})
    assert caught.value.reason is reason
    assert text in caught.value.message
    with pytest.raises(ProtocolError):
        parse_uplink(UP, _uplink({"fw_version": "2.0", "health_check": value}))
    record = DeviceEventRecord(
        device_id="d", event_type="version_report", paras={"health_check": value}
    )
    with pytest.raises(InvalidEventError) as refused:
        event_from_record(record)
    assert refused.value.reason == "bad_value"


def test_an_sdk_report_carries_no_verdict() -> None:
    report = decode_report("sdk_info_report", {"fw_version": "2.0", "health_check": "passed"})
    assert "health_check" not in report.paras()
