"""Where cache misses are filled from: a shared package directory, an HTTP origin, or an
S3-compatible bucket (OTA_PACKAGE_STORE=s3, ota/object_store.py).

Each streams the package into an open temporary file while hashing it, and return the
SHA-256 they saw; the cache compares it before the file may be served. These run on a
worker thread (blocking I/O), never on the event loop.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Protocol

import httpx

from ota.object_store import ObjectStore, ObjectStoreError, package_key

CHUNK = 1 << 20


class OriginError(Exception):
    """The origin could not provide the package; `missing` when it does not have it."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class Origin(Protocol):
    def fetch(self, package_sha256: str, sink: IO[bytes]) -> str:
        """Write the package to `sink`; return the SHA-256 hex of what was written."""
        ...


class DirectoryOrigin:
    """A package store laid out as `<root>/sha256/<hex>` (the scheduler's layout)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def fetch(self, package_sha256: str, sink: IO[bytes]) -> str:
        digest = hashlib.sha256()
        try:
            fd = os.open(self._root / "sha256" / package_sha256, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise OriginError(f"origin has no package {package_sha256}", missing=True) from exc
        except OSError as exc:
            raise OriginError(f"origin package {package_sha256}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                sink.write(chunk)
        return digest.hexdigest()


class HttpOrigin:
    """An HTTP origin serving `<base_url>/sha256/<hex>`, optionally behind a bearer token."""

    def __init__(self, base_url: str, token: str | None, timeout_s: float) -> None:
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._timeout = httpx.Timeout(timeout_s)

    def fetch(self, package_sha256: str, sink: IO[bytes]) -> str:
        digest = hashlib.sha256()
        url = f"{self._base_url}/sha256/{package_sha256}"
        try:
            with httpx.stream("GET", url, headers=self._headers, timeout=self._timeout) as reply:
                if reply.status_code == 404:
                    raise OriginError(f"origin has no package {package_sha256}", missing=True)
                if reply.status_code != 200:
                    raise OriginError(f"origin answered {reply.status_code} for {url}")
                for chunk in reply.iter_bytes(CHUNK):
                    digest.update(chunk)
                    sink.write(chunk)
        except httpx.HTTPError as exc:
            raise OriginError(f"origin fetch of {url} failed: {exc}") from exc
        return digest.hexdigest()


class BucketOrigin:
    """The bucket the scheduler writes packages to, as `sha256/<hex>` objects."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def fetch(self, package_sha256: str, sink: IO[bytes]) -> str:
        try:
            return self._store.read_into(package_key(package_sha256), sink)
        except ObjectStoreError as exc:
            if exc.missing:
                raise OriginError(f"bucket has no package {package_sha256}", missing=True) from exc
            raise OriginError(f"bucket fetch of {package_sha256} failed: {exc}") from exc
