"""Where package bytes live, content-addressed as `sha256/<hex>`: the `Blobs` protocol, its
shared volume implementation (`BlobStore`, `<root>/sha256/<hex>`) and the upload spool.

Uploads stream into a temporary file under `<root>/tmp/`, hashed on the way in, then
are fsynced and renamed into place atomically; any failure or a cut-off upload
removes the temporary file, so a partial package never becomes visible. A file whose
content already exists is dropped (deduplication by content). The bucket store
(scheduler/object_blobs.py) spools the same way, then uploads the finished file.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from scheduler.errors import PayloadTooLarge, ValidationError


@dataclass(frozen=True, slots=True)
class Stored:
    sha256: str
    size: int
    new: bool  # False when the content was already stored


class Blobs(Protocol):
    async def ingest(self, chunks: AsyncIterator[bytes], max_bytes: int) -> Stored:
        """Store an upload (bounded by max_bytes); a failure leaves nothing behind."""
        ...

    async def remove(self, sha256: str) -> None: ...

    def local_path(self, sha256: str) -> Path | None:
        """The content's file when it is on this process's disk (the volume store)."""
        ...

    def close(self) -> None: ...


async def spool(chunks: AsyncIterator[bytes], path: Path, max_bytes: int) -> tuple[str, int]:
    """Write the upload to `path` (fsynced), hashing it; (SHA-256 hex, size). The caller
    removes `path` on failure."""
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"package is larger than the limit of {max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        await asyncio.get_running_loop().run_in_executor(None, os.fsync, out.fileno())
    if size == 0:
        raise ValidationError("package body is empty", code="empty_package")
    return digest.hexdigest(), size


class BlobStore:
    """The shared volume: `<root>/sha256/<hex>`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self._blobs / sha256

    def local_path(self, sha256: str) -> Path | None:
        path = self.path(sha256)
        return path if path.is_file() else None

    async def ingest(self, chunks: AsyncIterator[bytes], max_bytes: int) -> Stored:
        tmp = self._tmp / uuid.uuid4().hex
        try:
            sha, size = await spool(chunks, tmp, max_bytes)
            final = self.path(sha)
            if final.exists():
                tmp.unlink()
                return Stored(sha, size, new=False)
            os.replace(tmp, final)
            _fsync_dir(self._blobs)
            return Stored(sha, size, new=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def close(self) -> None:
        pass  # nothing held open


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
