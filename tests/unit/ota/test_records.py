"""Kafka records round-trip exactly; bad records fail with a specific reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.records import (
    AnyRecord,
    CommandRecord,
    ConflictPolicy,
    DeadLetterRecord,
    DeviceEventRecord,
    DownloadPhase,
    DownloadRecord,
    JobCancelRecord,
    JobEventRecord,
    JobSpec,
    JobStartRecord,
    PackageRef,
    PresenceRecord,
    RecordError,
    RetryRule,
    TaskType,
    TimeoutRecord,
    Windows,
    decode,
    decode_inbox,
    encode,
)

PACKAGE = PackageRef(
    sha256="ab" * 32,
    version="2.0",
    file_name="fw.bin",
    file_size=1024,
    custom_info="note",
    allowed_sources=("1.0", "1.1"),
)
JOB = JobSpec(
    task_id="t1",
    task_type=TaskType.SOFTWARE,
    package=PACKAGE,
    windows=Windows(online_s=5),
    retry_count=2,
    retry_interval_s=60,
    require_online=True,
    on_conflict=ConflictPolicy.WAIT,
    presigned_url=True,
    retry_rules=(RetryRule("offline", 5, 60, 2.0, 600), RetryRule("device_busy", 0)),
)

RECORDS: list[AnyRecord] = [
    DeviceEventRecord(
        device_id="d",
        event_type="version_report",
        paras={"fw_version": "1"},
        device_event_id="e",
        device_time_ms=5,
        at_ms=7,
    ),
    PresenceRecord(device_id="d", online=False, source="uplink", at_ms=1),
    JobStartRecord(device_id="d", job=JOB, attempt=3, at_ms=2),
    JobCancelRecord(device_id="d", task_id="t1"),
    DownloadRecord(device_id="d", package_sha256="ab" * 32, phase=DownloadPhase.FINISHED),
    TimeoutRecord(device_id="d", task_id="t1", job_version=9),
    CommandRecord(device_id="d", event_type="version_query", paras={}, task_id="t1"),
    JobEventRecord(
        device_id="d",
        task_id="t1",
        attempt=1,
        job_version=2,
        from_state="A",
        to_state="B",
        cause=3,
        detail={"x": 1},
    ),
    DeadLetterRecord(
        source="gateway",
        reason="invalid_json",
        message="m",
        raw_b64=DeadLetterRecord.raw_bytes(b"\x00\xff"),
        origin="topic",
        key="d",
    ),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r.kind)
def test_every_record_round_trips(record: AnyRecord) -> None:
    raw = encode(record)
    assert orjson.loads(raw)["v"] == 1
    assert decode(raw) == record


def test_inbox_decoding_refuses_records_of_other_topics() -> None:
    with pytest.raises(RecordError) as caught:
        decode_inbox(encode(RECORDS[6]))
    assert caught.value.reason == "unknown_kind"


def body(**changes: Any) -> bytes:
    data = orjson.loads(encode(RECORDS[2]))
    data.update(changes)
    return orjson.dumps(data)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "invalid_json"),
        (b"[]", "not_an_object"),
        (body(v=2), "unsupported_version"),
        (body(v="1"), "wrong_type"),
        (body(kind="reboot"), "unknown_kind"),
        (body(device_id=None), "missing_field"),
        (body(device_id=5), "wrong_type"),
        (body(attempt=-1), "bad_value"),
        (body(attempt=True), "wrong_type"),
        (body(job={"task_id": "t"}), "missing_field"),
        (body(job={**orjson.loads(encode(RECORDS[2]))["job"], "task_type": "bios"}), "bad_value"),
        (body(job={**orjson.loads(encode(RECORDS[2]))["job"], "on_conflict": 1}), "wrong_type"),
        (body(job={**orjson.loads(encode(RECORDS[2]))["job"], "retry_rules": {}}), "wrong_type"),
        (body(job={**orjson.loads(encode(RECORDS[2]))["job"], "retry_rules": [1]}), "wrong_type"),
        (
            body(job={**orjson.loads(encode(RECORDS[2]))["job"], "retry_rules": [{}]}),
            "missing_field",
        ),
        (
            body(
                job={
                    **orjson.loads(encode(RECORDS[2]))["job"],
                    "retry_rules": [{"on": "offline", "count": -1}],
                }
            ),
            "bad_value",
        ),
        (
            body(
                job={
                    **orjson.loads(encode(RECORDS[2]))["job"],
                    "retry_rules": [{"on": "offline", "count": 1, "factor": 0.5}],
                }
            ),
            "bad_value",
        ),
    ],
)
def test_bad_records_get_a_specific_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        decode_inbox(raw)
    assert caught.value.reason == reason, caught.value.message


def test_a_job_start_written_before_retry_rules_decodes_without_them() -> None:
    data = orjson.loads(encode(RECORDS[2]))
    del data["job"]["retry_rules"]
    record = decode_inbox(orjson.dumps(data))
    assert isinstance(record, JobStartRecord)
    assert record.job.retry_rules == ()
    assert record.job.retry_count == 2


def test_presence_connection_round_trips_and_is_bounded() -> None:
    record = PresenceRecord(device_id="d", online=True, at_ms=1, connection="1765000000123")
    assert decode_inbox(encode(record)) == record
    data = orjson.loads(encode(record))
    for bad, reason in (("", "bad_value"), ("x" * 65, "bad_value"), (17, "wrong_type")):
        with pytest.raises(RecordError) as caught:
            decode_inbox(orjson.dumps({**data, "connection": bad}))
        assert caught.value.reason == reason


def test_task_type_names_the_version_field_it_compares() -> None:
    assert TaskType.FIRMWARE.version_field == "fw_version"
    assert TaskType.SOFTWARE.version_field == "sw_version"


@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_record_error(raw: bytes) -> None:
    try:
        decode(raw)
    except RecordError as error:
        assert error.reason
