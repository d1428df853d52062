"""The release encoder writes exactly what ota.records.encode writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ota.records import JobSpec, JobStartRecord, PackageRef, TaskType, decode_inbox, encode
from scheduler.startrecords import StartEncoder

SPEC = JobSpec(
    task_id="t1",
    task_type=TaskType.SOFTWARE,
    package=PackageRef(
        sha256="ab" * 32, version="2.0", file_name="sw.bin", file_size=9, allowed_sources=("1",)
    ),
    retry_count=2,
)
ENCODER = StartEncoder(SPEC)


@given(
    device=st.text(min_size=1, max_size=40),
    attempt=st.integers(1, 1000),
    record_id=st.text(min_size=1, max_size=40),
    at_ms=st.integers(0, 2**53),
)
def test_byte_identical_to_encode(device: str, attempt: int, record_id: str, at_ms: int) -> None:
    record = JobStartRecord(device_id=device, job=SPEC, attempt=attempt, id=record_id, at_ms=at_ms)
    raw = ENCODER.encode(device, attempt, record_id, at_ms)
    assert raw == encode(record)
    assert decode_inbox(raw) == record
