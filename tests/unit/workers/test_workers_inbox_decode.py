"""The shortcuts on the worker's decode path read exactly what the plain reading does:
a job start's spec, decoded once per distinct JSON and then shared, is the spec a fresh
reading gives, and a bad one fails the same way every time."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ota import records
from ota.records import JobSpec, JobStartRecord, RecordError, decode_inbox

JOB: dict[str, Any] = {
    "task_id": "t1",
    "task_type": "firmware",
    "package": {
        "sha256": "ab" * 32,
        "version": "2.0",
        "file_name": "fw.bin",
        "file_size": 1024,
        "allowed_sources": ["1.0"],
    },
    "windows": {"online_s": 5},
    "retry_rules": [{"on": "offline", "count": 2, "factor": 1.5}],
}


def job_start(job: Any) -> bytes:
    return orjson.dumps(
        {"v": 1, "kind": "job_start", "id": "i", "device_id": "d", "at_ms": 1, "job": job}
    )


def plain(job: Any) -> JobSpec | tuple[str, str]:
    """The spec the uncached reading gives, or its error's (reason, message)."""
    try:
        return records._job(records._Reader(job, "record.job"))
    except RecordError as exc:
        return exc.reason, exc.message


def cached(job: Any) -> JobSpec | tuple[str, str]:
    try:
        record = decode_inbox(job_start(job))
    except RecordError as exc:
        return exc.reason, exc.message
    assert isinstance(record, JobStartRecord)
    return record.job


def test_a_task_s_job_starts_share_one_spec() -> None:
    first, second = cached(JOB), cached(dict(JOB))
    assert isinstance(first, JobSpec)
    assert first is second
    assert first == plain(JOB)


def test_a_bad_spec_fails_the_same_way_every_time() -> None:
    bad = {**JOB, "task_type": "bios"}
    assert (
        cached(bad)
        == cached(bad)
        == plain(bad)
        == ("bad_value", "record.job.task_type='bios' is not allowed")
    )


def test_nesting_too_deep_to_cache_still_decodes() -> None:
    # orjson reads deeper nesting than it writes; unknown fields are ignored.
    deep = b"[" * 300 + b"]" * 300
    raw = job_start(JOB).replace(b'"job":{', b'"job":{"extension":' + deep + b",")
    record = decode_inbox(raw)
    assert isinstance(record, JobStartRecord)
    assert record.job == plain(orjson.loads(raw)["job"])


# Fields of a job start, each with values of the right and of wrong types and ranges.
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.floats(0, 3), st.sampled_from(["", "x"])
)
FIELD = {
    "task_id": st.one_of(st.just("t1"), VALUES),
    "task_type": st.one_of(st.sampled_from(["firmware", "software", "bios"]), VALUES),
    "retry_count": st.one_of(st.integers(0, 3), VALUES),
    "on_conflict": st.one_of(st.sampled_from(["fail", "wait"]), VALUES),
    "success": st.one_of(st.sampled_from(["reported", "confirmed"]), VALUES),
    "presigned_url": VALUES,
    "windows": st.one_of(
        st.dictionaries(st.sampled_from(["online_s", "verify_s"]), VALUES), VALUES
    ),
    "retry_rules": st.one_of(
        st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {"on": st.just("offline"), "count": st.integers(-1, 2)},
                    optional={"factor": VALUES, "interval_s": VALUES},
                ),
                VALUES,
            ),
            max_size=2,
        ),
        VALUES,
    ),
    "package": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "sha256": st.one_of(st.just("ab" * 32), VALUES),
                "version": st.one_of(st.just("2.0"), VALUES),
                "file_name": st.one_of(st.just("fw.bin"), VALUES),
                "file_size": VALUES,
                "allowed_sources": st.one_of(st.lists(VALUES, max_size=2), VALUES),
            },
        ),
        VALUES,
    ),
}


@settings(max_examples=300)
@given(st.fixed_dictionaries({}, optional=FIELD), st.booleans())
def test_cached_specs_read_as_the_plain_reading_does(job: dict[str, Any], twice: bool) -> None:
    expected = plain(job)
    if twice:
        cached(job)
    assert cached(job) == expected


@pytest.mark.parametrize("job", [None, 5, "job", [JOB]])
def test_a_job_that_is_no_object_is_refused(job: Any) -> None:
    with pytest.raises(RecordError) as caught:
        decode_inbox(job_start(job))
    assert caught.value.reason in ("missing_field", "wrong_type")
