"""Objects larger than a part go to the bucket as a multipart upload (moto's server,
tests/s3_kit.py, with 5 MiB parts: S3's and moto's smallest but the last). Faults are
put between the client and the real server by a transport that passes every other
request through."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ota.backoff import Backoff
from ota.metrics import REGISTRY
from ota.object_multipart import MIB, max_object_bytes
from ota.object_store import ObjectStore, ObjectStoreError, ObjectStoreSettings, package_key
from ota.sigv4 import EMPTY_SHA256, amz_date, query_string, sign
from tests.s3_kit import running_s3

PART = 5 * MIB
DATA = os.urandom(2 * PART + MIB + 3)  # two whole parts and a short last one
SHA = hashlib.sha256(DATA).hexdigest()
KEY = package_key(SHA)
NO_WAITS = Backoff(attempts=4, rand=lambda: 0.0)


class FaultyTransport(httpx.BaseTransport):
    """Records (method, query) of every request; answers UploadPart `part`'s first
    `times` attempts itself with `fault` (a status, or "connect" for a connection error),
    and every DELETE with a 503 if `refuse_deletes`."""

    def __init__(
        self, part: int = 0, fault: int | str = 503, times: int = 1, refuse_deletes: bool = False
    ) -> None:
        self._real = httpx.HTTPTransport()
        self._part, self._fault, self._times = str(part), fault, times
        self._refuse_deletes = refuse_deletes
        self.sent: list[tuple[str, dict[str, str]]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        self.sent.append((request.method, query))
        if request.method == "DELETE" and self._refuse_deletes:
            return httpx.Response(503, content=b"<Error><Code>Injected</Code></Error>")
        if query.get("partNumber") == self._part and self._times > 0:
            self._times -= 1
            if self._fault == "connect":
                raise httpx.ConnectError("injected: connection refused", request=request)
            body = b"<Error><Code>Injected</Code></Error>"
            return httpx.Response(int(self._fault), content=body, request=request)
        return self._real.handle_request(request)

    def close(self) -> None:
        self._real.close()

    def parts_sent(self) -> list[str]:
        return [query["partNumber"] for _, query in self.sent if "partNumber" in query]

    def aborted(self) -> bool:
        """An AbortMultipartUpload of the upload the parts went to was sent."""
        ids = {query["uploadId"] for _, query in self.sent if "partNumber" in query}
        return len(ids) == 1 and ("DELETE", {"uploadId": ids.pop()}) in self.sent


class FailingSource(io.BytesIO):
    """The package's bytes, with a read error once `fail_at` bytes have been read."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        super().__init__(data)
        self._size, self._fail_at = len(data), fail_at

    def read(self, size: int | None = -1, /) -> bytes:
        end = self._size if size is None or size < 0 else self.tell() + size
        if end > self._fail_at:
            raise OSError("injected: the spool file could not be read")
        return super().read(size)


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[ObjectStoreSettings]:
    with running_s3(tmp_path) as settings:
        yield dataclasses.replace(settings, part_bytes=PART)


def _store(bucket: ObjectStoreSettings, transport: FaultyTransport) -> ObjectStore:
    return ObjectStore(bucket, transport=transport, part_retry=NO_WAITS)


def _read_back(bucket: ObjectStoreSettings) -> bytes:
    store = ObjectStore(bucket)
    try:
        sink = io.BytesIO()
        assert store.read_into(KEY, sink) == SHA
        return sink.getvalue()
    finally:
        store.close()


def _pending_uploads(bucket: ObjectStoreSettings) -> list[str]:
    """The UploadIds ListMultipartUploads (GET ?uploads) names: started, neither completed
    nor aborted."""
    path, query = f"/{bucket.bucket}", {"uploads": ""}
    headers = {
        "host": bucket.endpoint.split("://", 1)[1],
        "x-amz-date": amz_date(datetime.now(UTC)),
        "x-amz-content-sha256": EMPTY_SHA256,
    }
    headers["authorization"] = sign(
        "GET", path, headers, credentials=bucket.credentials, region=bucket.region, query=query
    )
    reply = httpx.get(f"{bucket.endpoint}{path}?{query_string(query)}", headers=headers)
    assert reply.status_code == 200, reply.text
    return re.findall(r"<UploadId>([^<]+)</UploadId>", reply.text)


def _retries() -> float:
    labels = {"operation": "object_store.upload_part"}
    return REGISTRY.get_sample_value("ota_retries_total", labels) or 0.0


def test_a_large_file_goes_in_parts_and_reads_back_byte_equal(
    bucket: ObjectStoreSettings, tmp_path: Path
) -> None:
    spooled = tmp_path / "spooled"
    spooled.write_bytes(DATA)
    transport = FaultyTransport()
    store = _store(bucket, transport)
    try:
        store.put_file(KEY, spooled, SHA)
        assert store.size(KEY) == len(DATA)
    finally:
        store.close()
    assert [(method, sorted(query)) for method, query in transport.sent] == [
        ("POST", ["uploads"]),
        ("PUT", ["partNumber", "uploadId"]),
        ("PUT", ["partNumber", "uploadId"]),
        ("PUT", ["partNumber", "uploadId"]),
        ("POST", ["uploadId"]),
        ("HEAD", []),
    ]
    assert transport.parts_sent() == ["1", "2", "3"]
    assert _read_back(bucket) == DATA
    assert _pending_uploads(bucket) == []


def test_one_part_is_in_memory_at_a_time(bucket: ObjectStoreSettings, tmp_path: Path) -> None:
    spooled = tmp_path / "spooled"
    spooled.write_bytes(DATA * 3)  # 7 parts
    sha = hashlib.sha256(DATA * 3).hexdigest()
    store = ObjectStore(bucket)
    tracemalloc.start()
    try:
        store.put_file(package_key(sha), spooled, sha)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        store.close()
    # The part read, plus chunks on their way to the socket; never a second part.
    assert peak < 1.6 * PART


def test_an_object_of_one_part_keeps_the_single_put(bucket: ObjectStoreSettings) -> None:
    data = DATA[:PART]
    transport = FaultyTransport()
    store = _store(bucket, transport)
    try:
        store.put_stream("one-part", io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())
        assert store.size("one-part") == PART
    finally:
        store.close()
    assert transport.sent[0] == ("PUT", {})


@pytest.mark.parametrize("fault", ["connect", 503, 429])
def test_a_part_failing_with_a_retriable_error_is_sent_again_alone(
    bucket: ObjectStoreSettings, fault: int | str
) -> None:
    transport = FaultyTransport(part=2, fault=fault, times=2)
    retries = _retries()
    store = _store(bucket, transport)
    try:
        store.put_stream(KEY, io.BytesIO(DATA), len(DATA), SHA)
    finally:
        store.close()
    assert transport.parts_sent() == ["1", "2", "2", "2", "3"]
    assert _retries() == retries + 2
    assert _read_back(bucket) == DATA


def _upload_fails(
    bucket: ObjectStoreSettings,
    transport: FaultyTransport,
    source: io.BytesIO,
    match: str,
    size: int = len(DATA),
) -> ObjectStoreError:
    """The error put_stream raised; it left no object behind."""
    store = _store(bucket, transport)
    try:
        with pytest.raises(ObjectStoreError, match=match) as failure:
            store.put_stream(KEY, source, size, SHA)
        assert store.size(KEY) is None
    finally:
        store.close()
    return failure.value


def _assert_aborted(bucket: ObjectStoreSettings, transport: FaultyTransport) -> None:
    """The upload was aborted: no parts are left stored (ListMultipartUploads is empty)."""
    assert transport.aborted()
    assert _pending_uploads(bucket) == []


def test_a_part_failing_beyond_the_retries_aborts_the_upload(bucket: ObjectStoreSettings) -> None:
    transport = FaultyTransport(part=2, fault=500, times=99)
    error = _upload_fails(bucket, transport, io.BytesIO(DATA), "answered 500")
    assert error.retriable
    assert transport.parts_sent() == ["1"] + ["2"] * 5
    _assert_aborted(bucket, transport)


def test_a_part_refused_with_a_4xx_is_not_sent_again_and_the_upload_is_aborted(
    bucket: ObjectStoreSettings,
) -> None:
    transport = FaultyTransport(part=2, fault=403)
    error = _upload_fails(bucket, transport, io.BytesIO(DATA), "answered 403")
    assert not error.retriable
    assert transport.parts_sent() == ["1", "2"]
    _assert_aborted(bucket, transport)


def test_a_source_failing_mid_way_leaves_no_object_and_no_upload(
    bucket: ObjectStoreSettings,
) -> None:
    transport = FaultyTransport()
    source = FailingSource(DATA, fail_at=PART + MIB)
    _upload_fails(bucket, transport, source, "the spool file could not be read")
    assert transport.parts_sent() == ["1"]
    _assert_aborted(bucket, transport)


def test_bytes_that_do_not_hash_to_the_name_are_never_completed(
    bucket: ObjectStoreSettings,
) -> None:
    transport = FaultyTransport()
    _upload_fails(bucket, transport, io.BytesIO(bytes(len(DATA))), "the bytes read hash to")
    completes = [q for method, q in transport.sent if method == "POST" and "uploadId" in q]
    assert completes == []
    _assert_aborted(bucket, transport)


def test_an_object_beyond_ten_thousand_parts_is_refused_before_anything_is_sent(
    bucket: ObjectStoreSettings,
) -> None:
    transport = FaultyTransport()
    size = max_object_bytes(PART) + 1
    _upload_fails(bucket, transport, FailingSource(b"", 0), f"{size} bytes is over", size)
    assert transport.sent == [("HEAD", {})]  # the check that no object is there


def test_an_abort_that_fails_is_logged_and_the_uploads_own_error_raised(
    bucket: ObjectStoreSettings, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FaultyTransport(part=2, fault=403, refuse_deletes=True)
    _upload_fails(bucket, transport, io.BytesIO(DATA), "answered 403")
    assert transport.aborted()
    assert "multipart upload not aborted" in caplog.messages
    # Left for the bucket's lifecycle rule; ListMultipartUploads shows it.
    (upload_id,) = {query["uploadId"] for _, query in transport.sent if "partNumber" in query}
    assert _pending_uploads(bucket) == [upload_id]
