"""ota/object_multipart.py: the part plan, S3's limits, the XML written and read."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ota.object_multipart import (
    MAX_OBJECT_BYTES,
    MAX_PART_BYTES,
    MAX_PARTS,
    MIB,
    MIN_PART_BYTES,
    ObjectTooLargeError,
    complete_body,
    error_in,
    max_object_bytes,
    plan_parts,
    retriable_status,
    upload_id_of,
)


@given(
    part=st.integers(MIN_PART_BYTES, MAX_PART_BYTES),
    fraction=st.floats(0, 1),
)
def test_the_parts_cover_the_object_in_whole_parts_and_a_smaller_last(
    part: int, fraction: float
) -> None:
    size = int(max_object_bytes(part) * fraction)
    sizes = plan_parts(size, part)
    assert sum(sizes) == size
    assert len(sizes) <= MAX_PARTS
    assert all(s == part for s in sizes[:-1])
    assert not sizes or 0 < sizes[-1] <= part


def test_a_worked_plan() -> None:
    assert plan_parts(11 * MIB + 3, 5 * MIB) == [5 * MIB, 5 * MIB, MIB + 3]
    assert plan_parts(10 * MIB, 5 * MIB) == [5 * MIB, 5 * MIB]


def test_the_largest_object_is_ten_thousand_parts_or_five_tib() -> None:
    assert max_object_bytes(64 * MIB) == 10_000 * 64 * MIB
    assert len(plan_parts(10_000 * 64 * MIB, 64 * MIB)) == 10_000
    assert max_object_bytes(MAX_PART_BYTES) == MAX_OBJECT_BYTES == 5 * 1024**4


@pytest.mark.parametrize(
    ("size", "part"), [(10_000 * 64 * MIB + 1, 64 * MIB), (MAX_OBJECT_BYTES + 1, MAX_PART_BYTES)]
)
def test_an_object_beyond_the_limit_is_refused_naming_it(size: int, part: int) -> None:
    with pytest.raises(ObjectTooLargeError, match=f"{size} bytes is over"):
        plan_parts(size, part)


@pytest.mark.parametrize("part", [MIN_PART_BYTES - 1, MAX_PART_BYTES + 1])
def test_a_part_size_outside_s3s_limits_is_refused(part: int) -> None:
    with pytest.raises(ValueError, match=r"outside S3's 5 MiB\.\.5 GiB"):
        plan_parts(100 * MIB, part)


def test_the_complete_body_lists_each_part_with_its_etag_in_order() -> None:
    body = complete_body(['"a1"', '"b2&"'])
    assert body == (
        b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        b'<Part><PartNumber>1</PartNumber><ETag>"a1"</ETag></Part>'
        b'<Part><PartNumber>2</PartNumber><ETag>"b2&amp;"</ETag></Part>'
        b"</CompleteMultipartUpload>"
    )


def test_the_upload_id_is_read_from_the_create_reply() -> None:
    reply = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult>'
        b"<Bucket>b</Bucket><Key>sha256/ab</Key><UploadId>VXBs.b2Fk_-&amp;x</UploadId>"
        b"</InitiateMultipartUploadResult>"
    )
    assert upload_id_of(reply) == "VXBs.b2Fk_-&x"
    with pytest.raises(ValueError, match="no UploadId"):
        upload_id_of(b"<InitiateMultipartUploadResult></InitiateMultipartUploadResult>")


def test_an_error_document_in_a_200_reply_is_found() -> None:
    error = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
        b"<Message>We encountered an internal error. Please try again.</Message></Error>"
    )
    assert error_in(error) == "InternalError: We encountered an internal error. Please try again."
    assert error_in(b"<Error><Code>SlowDown</Code></Error>") == "SlowDown"
    done = b"<CompleteMultipartUploadResult><ETag>&quot;x-3&quot;</ETag></CompleteMultipartUploadResult>"
    assert error_in(done) is None


@pytest.mark.parametrize(
    ("status", "retriable"),
    [(500, True), (503, True), (429, True), (400, False), (403, False), (404, False)],
)
def test_only_the_stores_faults_and_throttling_are_retried(status: int, retriable: bool) -> None:
    assert retriable_status(status) is retriable
