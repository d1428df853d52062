"""Packages in an S3-compatible bucket: the settings and a small blocking client.

The scheduler writes uploaded packages to the bucket and the download edge fills its
cache from it (OTA_PACKAGE_STORE=s3), so no ReadWriteMany volume is needed. Objects are
named like the volume's files, `sha256/<hex>`, so content stays deduplicated.

| variable | meaning |
|---|---|
| OTA_PACKAGE_STORE | `volume` (default: the shared directory) or `s3` |
| OTA_S3_ENDPOINT | http(s)://host[:port] of the store (path-style requests) |
| OTA_S3_BUCKET | the bucket (created beforehand; the services never create it) |
| OTA_S3_REGION | SigV4 region, `us-east-1` by default (MinIO accepts it) |
| OTA_S3_ACCESS_KEY_ID[_FILE], OTA_S3_SECRET_ACCESS_KEY[_FILE] | the credentials |
| OTA_S3_TIMEOUT_S | connect/read timeout of one request, 30 s by default |
| OTA_S3_PART_MIB | part size of a multipart upload, 64 MiB by default (5..5120, S3's limits) |

An object up to one part is written with one PUT; a larger one as a multipart upload
(ota/object_multipart.py) of parts read from the source one at a time, so one part is in
memory per upload. A part that fails with a connection error, a 5xx or a 429 is sent
again (`PART_RETRY`); any other failure aborts the upload, so no parts are left stored.
Objects up to 10,000 parts (625 GiB with 64 MiB parts; S3's limit is 5 TiB).

Blocking (httpx.Client): the edge calls it on its fill thread, the scheduler through
asyncio.to_thread, so a part's retry waits with time.sleep. Errors: `ObjectStoreError`,
with `missing` for a 404 and `retriable` for a failure worth repeating; the caller
decides what a failure means (a 502 at the edge, a 503 for an upload).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx

from ota.backoff import Backoff, count_retry
from ota.dev_secrets import SecretUse
from ota.env import Env, SettingsError
from ota.object_multipart import (
    DEFAULT_PART_MIB,
    MAX_PART_BYTES,
    MIB,
    MIN_PART_BYTES,
    ObjectTooLargeError,
    complete_body,
    error_in,
    plan_parts,
    retriable_status,
    upload_id_of,
)
from ota.sigv4 import EMPTY_SHA256, Credentials, amz_date, query_string, sign

log = logging.getLogger(__name__)
CHUNK = 1 << 20
STORES = ("volume", "s3")
_BINARY = {"content-type": "application/octet-stream"}
# A part is sent at most 5 times, waiting up to 0.5, 1, 2, 4 s (jittered) in between.
PART_RETRY = Backoff(base_s=0.5, cap_s=8.0, attempts=4)
# S3's rule for bucket names: 3-63 of lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class ObjectStoreError(Exception):
    """A request to the object store failed; `missing`: the object does not exist;
    `retriable`: the same request may succeed later (no connection, a 5xx or a 429)."""

    def __init__(self, message: str, *, missing: bool = False, retriable: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
        self.retriable = retriable


@dataclass(frozen=True)
class ObjectStoreSettings:
    endpoint: str  # scheme://host[:port], no trailing slash
    bucket: str
    region: str
    credentials: Credentials
    timeout_s: float = 30.0
    part_bytes: int = DEFAULT_PART_MIB * MIB  # larger objects go as a multipart upload

    def __post_init__(self) -> None:
        if not MIN_PART_BYTES <= self.part_bytes <= MAX_PART_BYTES:
            raise ValueError(f"part_bytes={self.part_bytes} is outside S3's 5 MiB..5 GiB")


def package_store(env: Env) -> ObjectStoreSettings | None:
    """The bucket when OTA_PACKAGE_STORE=s3, None for the volume; a bad value fails fast."""
    kind = env.text("PACKAGE_STORE", "volume")
    if kind not in STORES:
        raise SettingsError(f"OTA_PACKAGE_STORE={kind!r} must be one of {', '.join(STORES)}")
    if kind == "volume":
        return None
    endpoint = env.text("S3_ENDPOINT", "").rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise SettingsError(f"OTA_S3_ENDPOINT={endpoint!r} must be http(s)://host[:port]")
    bucket = env.text("S3_BUCKET", "")
    if not _BUCKET.fullmatch(bucket):
        raise SettingsError(f"OTA_S3_BUCKET={bucket!r} is not a valid bucket name")
    access_key = env.secret("S3_ACCESS_KEY_ID", "")
    secret_key = env.secret("S3_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key:
        raise SettingsError(
            "OTA_PACKAGE_STORE=s3 needs OTA_S3_ACCESS_KEY_ID and OTA_S3_SECRET_ACCESS_KEY "
            "(or their _FILE variants)"
        )
    return ObjectStoreSettings(
        endpoint=endpoint,
        bucket=bucket,
        region=env.text("S3_REGION", "us-east-1"),
        credentials=Credentials(access_key, secret_key),
        timeout_s=env.number("S3_TIMEOUT_S", 30.0, min_value=0.1, max_value=600),
        part_bytes=MIB
        * env.integer(
            "S3_PART_MIB",
            DEFAULT_PART_MIB,
            min_value=MIN_PART_BYTES // MIB,
            max_value=MAX_PART_BYTES // MIB,
        ),
    )


def store_secrets(settings: ObjectStoreSettings | None) -> list[SecretUse]:
    """The bucket's secret key for the placeholder check (ota/dev_secrets.py): there is no
    development value, but an env.example `change-me` is refused."""
    if settings is None:
        return []
    secret = settings.credentials.secret_key
    return [SecretUse.of("S3_SECRET_ACCESS_KEY", secret, development=False)]


def package_key(sha256: str) -> str:
    return f"sha256/{sha256}"


class ObjectStore:
    """PUT (streamed, in parts when large), GET (whole or a byte range, streamed), HEAD,
    DELETE. `transport` and `part_retry` are for tests (a fault between client and store,
    no waits)."""

    def __init__(
        self,
        settings: ObjectStoreSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        part_retry: Backoff = PART_RETRY,
    ) -> None:
        self._settings = settings
        self._host = urlsplit(settings.endpoint).netloc
        self._part_retry = part_retry
        # identity: the bytes hashed must be the object's bytes, never a decoded transfer.
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s),
            headers={"accept-encoding": "identity"},
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def create_bucket(self) -> None:
        """Create the bucket (operators and tests; the services expect it to exist)."""
        self._send(self._request("PUT", "", EMPTY_SHA256)).close()

    def _request(
        self,
        method: str,
        key: str,
        payload_sha256: str,
        extra: dict[str, str] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Request:
        path = f"/{self._settings.bucket}/{key}" if key else f"/{self._settings.bucket}"
        headers = {
            "host": self._host,
            # Wall-clock time by protocol: the store refuses a request 15 min off its clock.
            "x-amz-date": amz_date(datetime.now(UTC)),
            "x-amz-content-sha256": payload_sha256,
            **(extra or {}),
        }
        headers["authorization"] = sign(
            method,
            path,
            headers,
            credentials=self._settings.credentials,
            region=self._settings.region,
            query=query,
        )
        # The query exactly as signed (httpx keeps an encoded query as it is given).
        url = self._settings.endpoint + path + (f"?{query_string(query)}" if query else "")
        return self._client.build_request(method, url, headers=headers, content=content)

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            reply = self._client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise ObjectStoreError(
                f"{request.method} {request.url}: {exc}", retriable=True
            ) from exc
        if reply.status_code == 404:
            reply.close()
            raise ObjectStoreError(f"{request.url.path} is not in the bucket", missing=True)
        if reply.status_code >= 300:
            detail = reply.read()[:300].decode(errors="replace")
            reply.close()
            raise ObjectStoreError(
                f"{request.method} {request.url.path} answered {reply.status_code}: {detail}",
                retriable=retriable_status(reply.status_code),
            )
        return reply

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        """Upload a file whose SHA-256 is known (put_stream)."""
        with path.open("rb") as source:
            self.put_stream(key, source, path.stat().st_size, sha256)

    def put_stream(self, key: str, source: IO[bytes], size: int, sha256: str) -> None:
        """Upload `size` bytes read from `source`, whose SHA-256 is known: one PUT the store
        checks against it, or a multipart upload whose parts the store checks against
        their own hashes, completed only when the bytes read hash to `sha256`."""
        if size <= self._settings.part_bytes:
            request = self._request("PUT", key, sha256, {"content-length": str(size), **_BINARY})
            request.stream = _FileStream(source)
            self._send(request).close()
            return
        try:
            sizes = plan_parts(size, self._settings.part_bytes)
        except ObjectTooLargeError as exc:
            raise ObjectStoreError(f"{key}: {exc}") from exc
        self._put_parts(key, source, sizes, sha256)

    def _put_parts(self, key: str, source: IO[bytes], sizes: list[int], sha256: str) -> None:
        create = self._request("POST", key, EMPTY_SHA256, _BINARY, query={"uploads": ""})
        created = self._send(create)
        try:
            upload_id = upload_id_of(created.read())
        except ValueError as exc:
            raise ObjectStoreError(f"CreateMultipartUpload {key}: {exc}") from exc
        finally:
            created.close()
        try:
            digest = hashlib.sha256()
            etags = []
            for number, part_size in enumerate(sizes, start=1):
                data = _read_part(source, part_size)
                digest.update(data)
                etags.append(self._put_part(key, upload_id, number, data))
                del data  # before the next part is read: one part in memory, not two
            if digest.hexdigest() != sha256:
                raise ObjectStoreError(f"{key}: the bytes read hash to {digest.hexdigest()}")
            body = complete_body(etags)
            body_sha256 = hashlib.sha256(body).hexdigest()
            query = {"uploadId": upload_id}
            completed = self._send(
                self._request("POST", key, body_sha256, query=query, content=body)
            )
            error = error_in(completed.read())
            completed.close()
            if error is not None:
                raise ObjectStoreError(f"CompleteMultipartUpload {key}: {error}")
        except Exception as exc:
            self._abort(key, upload_id)
            if isinstance(exc, ObjectStoreError):
                raise
            raise ObjectStoreError(f"multipart upload of {key}: {exc!r}") from exc

    def _put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        """Send one part, again after a retriable failure; the ETag the store answered."""
        payload_sha256 = hashlib.sha256(data).hexdigest()
        query = {"partNumber": str(number), "uploadId": upload_id}
        attempt = 0
        while True:
            # Signed afresh on every attempt: x-amz-date is part of the signature. A
            # part sent again replaces one the store may have kept from a lost reply.
            size = {"content-length": str(len(data))}
            request = self._request("PUT", key, payload_sha256, size, query=query)
            request.stream = body = _PartStream(data)
            try:
                reply = self._send(request)
            except ObjectStoreError as exc:
                if not exc.retriable or self._part_retry.gives_up(attempt):
                    raise
                delay = self._part_retry.delay_s(attempt)
                attempt += 1
                count_retry("object_store.upload_part")
                log.warning(
                    "retrying",
                    extra={
                        "operation": "object_store.upload_part",
                        "key": key,
                        "part": number,
                        "error": str(exc),
                        "retry": attempt,
                        "retry_in_s": round(delay, 3),
                    },
                )
                time.sleep(delay)
                continue
            finally:
                body.release()
            reply.close()
            etag = reply.headers.get("etag")
            if not etag:
                raise ObjectStoreError(f"UploadPart {number} of {key} answered no ETag")
            return str(etag)

    def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: a failure is logged; the upload's own error is the one raised."""
        try:
            abort = self._request("DELETE", key, EMPTY_SHA256, query={"uploadId": upload_id})
            self._send(abort).close()
        except ObjectStoreError as exc:
            log.warning(
                "multipart upload not aborted",
                extra={"key": key, "upload_id": upload_id, "error": str(exc)},
            )
            return
        log.info("multipart upload aborted", extra={"key": key, "upload_id": upload_id})

    def size(self, key: str) -> int | None:
        """The object's size, None when it does not exist."""
        try:
            reply = self._send(self._request("HEAD", key, EMPTY_SHA256))
        except ObjectStoreError as exc:
            if exc.missing:
                return None
            raise
        reply.close()
        return int(reply.headers["content-length"])

    def read_into(self, key: str, sink: IO[bytes], first: int = 0, last: int | None = None) -> str:
        """Write the object (or bytes first..last, inclusive) to sink; the SHA-256 hex of
        what was written."""
        extra = {}
        if first or last is not None:
            extra["range"] = f"bytes={first}-{'' if last is None else last}"
        digest = hashlib.sha256()
        reply = self._send(self._request("GET", key, EMPTY_SHA256, extra), stream=True)
        try:
            for chunk in reply.iter_bytes(CHUNK):
                digest.update(chunk)
                sink.write(chunk)
        except httpx.HTTPError as exc:
            raise ObjectStoreError(f"GET {key}: {exc}") from exc
        finally:
            reply.close()
        return digest.hexdigest()

    def delete(self, key: str) -> None:
        """Remove the object; deleting one that is not there is not an error (as in S3)."""
        try:
            self._send(self._request("DELETE", key, EMPTY_SHA256)).close()
        except ObjectStoreError as exc:
            if not exc.missing:
                raise


def _read_part(source: IO[bytes], size: int) -> bytes:
    """Exactly `size` bytes from `source` (a file gives them in one read); an error if it
    ends sooner."""
    data = source.read(size)
    while len(data) < size:
        if not (more := source.read(size - len(data))):
            raise ObjectStoreError(f"the source ended {size - len(data)} bytes early")
        data += more
    return data


class _PartStream(httpx.SyncByteStream):
    """One part's bytes as the request body, a chunk at a time. `release` lets go of them:
    httpx leaves a sent request in a reference cycle, freed only when the collector runs,
    and every part would stay in memory until then."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __iter__(self) -> Iterator[bytes]:
        data = self._data
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]

    def release(self) -> None:
        self._data = b""


class _FileStream(httpx.SyncByteStream):
    """The request body read from an open file a chunk at a time."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._source.read(CHUNK):
            yield chunk
