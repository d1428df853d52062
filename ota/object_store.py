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

Blocking (httpx.Client): the edge calls it on its fill thread, the scheduler through
asyncio.to_thread. Errors: `ObjectStoreError`, with `missing` for a 404; the caller
decides what a failure means (a 502 at the edge, a 503 for an upload).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx

from ota.dev_secrets import SecretUse
from ota.env import Env, SettingsError
from ota.sigv4 import EMPTY_SHA256, Credentials, amz_date, sign

CHUNK = 1 << 20
MAX_PUT_BYTES = 5 * 1024**3  # S3's limit for one PUT (larger needs a multipart upload)
STORES = ("volume", "s3")
# S3's rule for bucket names: 3-63 of lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class ObjectStoreError(Exception):
    """A request to the object store failed; `missing`: the object does not exist."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class ObjectStoreSettings:
    endpoint: str  # scheme://host[:port], no trailing slash
    bucket: str
    region: str
    credentials: Credentials
    timeout_s: float = 30.0


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
    """PUT (streamed from a file), GET (whole or a byte range, streamed), HEAD, DELETE."""

    def __init__(self, settings: ObjectStoreSettings) -> None:
        self._settings = settings
        self._host = urlsplit(settings.endpoint).netloc
        # identity: the bytes hashed must be the object's bytes, never a decoded transfer.
        self._client = httpx.Client(
            timeout=httpx.Timeout(settings.timeout_s), headers={"accept-encoding": "identity"}
        )

    def close(self) -> None:
        self._client.close()

    def create_bucket(self) -> None:
        """Create the bucket (operators and tests; the services expect it to exist)."""
        self._send(self._request("PUT", "", EMPTY_SHA256)).close()

    def _request(
        self, method: str, key: str, payload_sha256: str, extra: dict[str, str] | None = None
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
        )
        return self._client.build_request(method, self._settings.endpoint + path, headers=headers)

    def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            reply = self._client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise ObjectStoreError(f"{request.method} {request.url}: {exc}") from exc
        if reply.status_code == 404:
            reply.close()
            raise ObjectStoreError(f"{request.url.path} is not in the bucket", missing=True)
        if reply.status_code >= 300:
            detail = reply.read()[:300].decode(errors="replace")
            reply.close()
            raise ObjectStoreError(
                f"{request.method} {request.url.path} answered {reply.status_code}: {detail}"
            )
        return reply

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        """Upload a file whose SHA-256 is known: the store rejects bytes that differ."""
        size = path.stat().st_size
        request = self._request(
            "PUT",
            key,
            sha256,
            {"content-length": str(size), "content-type": "application/octet-stream"},
        )
        with path.open("rb") as source:
            request.stream = _FileStream(source)
            self._send(request).close()

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


class _FileStream(httpx.SyncByteStream):
    """The request body read from an open file a chunk at a time."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self._source.read(CHUNK):
            yield chunk
