"""Device reports: decoded once into typed values, and the three readers agree on them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.fields import MAX_TEXT_CHARS, MAX_VERSION_CHARS, ProtocolError, Reason
from ota.protocol import encode_envelope, parse_uplink, up_topic, uplink_event
from ota.records import DeviceEventRecord
from ota.reports import (
    ProgressReport,
    Report,
    SdkInfoReport,
    UplinkType,
    VersionReport,
    decode_report,
)
from scheduler.devices import observation
from workers.events import InvalidEventError, Kind, event_from_record

DEV = "dev-1"
NOW_MS = 1_795_000_000_000

texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
versions = st.none() | texts
reports: st.SearchStrategy[Report] = st.one_of(
    st.builds(VersionReport, fw_version=versions, sw_version=versions),
    st.builds(SdkInfoReport, device_sdk_version=versions, sw_version=versions, fw_version=versions),
    st.builds(
        ProgressReport,
        result_code=st.integers(0, 2**31 - 1),
        version=texts,
        progress=st.none() | st.integers(0, 100),
        description=st.none() | st.text(max_size=60),
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=10,
)
FIELDS = ("fw_version", "sw_version", "device_sdk_version", "result_code", "version")
fields = st.sampled_from([*FIELDS, "progress", "description", "other"])
paras_st = st.dictionaries(fields, json_values, max_size=6)
event_types = st.sampled_from([*UplinkType, "heartbeat"])


@given(reports)
def test_a_report_decodes_from_its_own_paras(report: Report) -> None:
    assert decode_report(report.event_type, report.paras()) == report


@given(reports, st.none() | st.text(max_size=20))
def test_a_report_sent_by_a_device_reaches_the_gateway_unchanged(
    report: Report, event_id: str | None
) -> None:
    payload = encode_envelope(DEV, (uplink_event(report, event_id),), NOW_MS)
    (event,) = parse_uplink(up_topic(DEV), payload).events
    assert event.event_type == report.event_type
    assert decode_report(event.event_type, event.paras) == report


@given(event_types, paras_st)
def test_any_paras_decode_or_raise_a_protocol_error_with_a_reason(
    event_type: str, paras: dict[str, Any]
) -> None:
    try:
        report = decode_report(event_type, paras)
    except ProtocolError as error:
        assert isinstance(error.reason, Reason)
        assert error.message
    else:
        assert report.event_type == event_type
        assert set(report.paras()) <= set(paras)


@given(event_types, paras_st)
def test_the_workers_and_the_registry_read_what_the_decoder_reads(
    event_type: str, paras: dict[str, Any]
) -> None:
    record = DeviceEventRecord(device_id=DEV, event_type=event_type, paras=paras)
    try:
        report = decode_report(event_type, paras)
    except ProtocolError as error:
        with pytest.raises(InvalidEventError) as refused:
            event_from_record(record)
        assert refused.value.message == error.message
        assert observation(record) == ("", "", "", "")
        return
    if isinstance(report, ProgressReport):
        assert observation(record) == ("", "", "", report.version)
        if not report.version:
            with pytest.raises(InvalidEventError):
                event_from_record(record)
            return
        event = event_from_record(record)
        assert event.kind is Kind.PROGRESS
        assert (event.result_code, event.progress, event.version) == (
            report.result_code,
            report.progress,
            report.version,
        )
        return
    assert observation(record) == (report.fw_version or "", report.sw_version or "", "", "")
    if "" in (report.fw_version, report.sw_version):
        with pytest.raises(InvalidEventError):
            event_from_record(record)
        return
    event = event_from_record(record)
    assert event.kind is (Kind.VERSION if isinstance(report, VersionReport) else Kind.SDK_INFO)
    assert (event.fw_version, event.sw_version) == (report.fw_version, report.sw_version)


@pytest.mark.parametrize(
    ("event_type", "paras", "reason", "message"),
    [
        ("heartbeat", {}, Reason.UNKNOWN_EVENT, "event type 'heartbeat' is not a device report"),
        (
            "upgrade_progress_report",
            {"version": "1"},
            Reason.MISSING_FIELD,
            "paras.result_code is required",
        ),
        (
            "upgrade_progress_report",
            {"result_code": "zero", "version": "1"},
            Reason.WRONG_TYPE,
            "paras.result_code must be an integer, got string",
        ),
        (
            "upgrade_progress_report",
            {"result_code": 0, "version": "1", "progress": 101},
            Reason.BAD_VALUE,
            "paras.progress=101 is outside 0..100",
        ),
        (
            "version_report",
            {"fw_version": "v" * (MAX_VERSION_CHARS + 1)},
            Reason.BAD_VALUE,
            f"paras.fw_version is {MAX_VERSION_CHARS + 1} chars, the limit is {MAX_VERSION_CHARS}",
        ),
        (
            "upgrade_progress_report",
            {"result_code": 0, "version": "1", "description": "d" * (MAX_TEXT_CHARS + 1)},
            Reason.BAD_VALUE,
            f"paras.description is {MAX_TEXT_CHARS + 1} chars, the limit is {MAX_TEXT_CHARS}",
        ),
    ],
)
def test_bad_paras_get_their_specific_reason(
    event_type: str, paras: dict[str, Any], reason: Reason, message: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_report(event_type, paras)
    assert (caught.value.reason, caught.value.message) == (reason, message)


def test_the_inbox_names_a_wrong_type_a_bad_value_and_refuses_empty_versions() -> None:
    wrong = DeviceEventRecord(device_id=DEV, event_type="version_report", paras={"fw_version": 1})
    empty = DeviceEventRecord(device_id=DEV, event_type="version_report", paras={"fw_version": ""})
    with pytest.raises(InvalidEventError) as caught:
        event_from_record(wrong)
    assert caught.value.reason == "bad_value"
    with pytest.raises(InvalidEventError) as caught:
        event_from_record(empty)
    assert caught.value.reason == "bad_value"
    assert caught.value.message == "paras.fw_version must be a string of 1..128 characters"


def test_unknown_fields_are_dropped_and_the_paras_keep_the_protocol_order() -> None:
    report = decode_report(
        "upgrade_progress_report",
        {"description": "ok", "progress": 100, "extra": 1, "version": "2", "result_code": 0},
    )
    assert report == ProgressReport(result_code=0, version="2", progress=100, description="ok")
    assert orjson.dumps(report.paras()) == (
        b'{"result_code":0,"version":"2","progress":100,"description":"ok"}'
    )


def test_each_report_travels_on_its_service() -> None:
    assert uplink_event(VersionReport("1")).service_id == "$ota"
    assert uplink_event(ProgressReport(0, "1")).service_id == "$ota"
    assert uplink_event(SdkInfoReport("C_v0.5")).service_id == "$sdk_info"
