"""The content-addressed package store on disk: `<root>/sha256/<hex>`.

Uploads stream into a temporary file under `<root>/tmp/`, hashed on the way in, then
are fsynced and renamed into place atomically; any failure or a cut-off upload
removes the temporary file, so a partial package never becomes visible. A file whose
content already exists is dropped (deduplication by content).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import PayloadTooLarge, ValidationError


@dataclass(frozen=True, slots=True)
class Stored:
    sha256: str
    size: int
    path: Path
    new: bool  # False when the content was already stored


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "sha256"
        self._tmp = root / "tmp"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self._blobs / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    async def ingest(self, chunks: AsyncIterator[bytes], max_bytes: int) -> Stored:
        tmp = self._tmp / uuid.uuid4().hex
        digest = hashlib.sha256()
        size = 0
        try:
            with tmp.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"package is larger than the limit of {max_bytes} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                await asyncio.get_running_loop().run_in_executor(None, os.fsync, out.fileno())
            if size == 0:
                raise ValidationError("package body is empty", code="empty_package")
            sha = digest.hexdigest()
            final = self.path(sha)
            if final.exists():
                tmp.unlink()
                return Stored(sha, size, final, new=False)
            os.replace(tmp, final)
            _fsync_dir(self._blobs)
            return Stored(sha, size, final, new=True)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
