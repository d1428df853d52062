"""Package bytes in an S3-compatible bucket (OTA_PACKAGE_STORE=s3), as `sha256/<hex>`.

An upload is spooled to a local temporary file first (scheduler/blobs.py's `spool`):
its name is its SHA-256, known only at the end, and that hash is also the payload hash
SigV4 signs, so the store checks the bytes it receives. Content already in the bucket
is not uploaded again. The client blocks, so it runs on a worker thread. A failing store
is a 503 to the uploader: nothing was recorded, the upload can be repeated.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from ota.object_store import ObjectStore, ObjectStoreError, package_key
from scheduler.blobs import Stored, spool
from scheduler.errors import Unavailable


class ObjectBlobStore:
    def __init__(self, store: ObjectStore, spool_dir: Path) -> None:
        self._store = store
        self._tmp = spool_dir
        self._tmp.mkdir(parents=True, exist_ok=True)

    def local_path(self, sha256: str) -> Path | None:
        return None  # the edges read the bucket themselves

    def close(self) -> None:
        self._store.close()

    async def ingest(self, chunks: AsyncIterator[bytes], max_bytes: int) -> Stored:
        tmp = self._tmp / uuid.uuid4().hex
        try:
            sha, size = await spool(chunks, tmp, max_bytes)
            key = package_key(sha)
            try:
                if await asyncio.to_thread(self._store.size, key) is not None:
                    return Stored(sha, size, new=False)
                await asyncio.to_thread(self._store.put_file, key, tmp, sha)
            except ObjectStoreError as exc:
                raise Unavailable(
                    f"the package store did not take the package: {exc}", code="store_unavailable"
                ) from exc
            return Stored(sha, size, new=True)
        finally:
            tmp.unlink(missing_ok=True)

    async def remove(self, sha256: str) -> None:
        try:
            await asyncio.to_thread(self._store.delete, package_key(sha256))
        except ObjectStoreError as exc:
            raise Unavailable(
                f"the package store did not delete {sha256}: {exc}", code="store_unavailable"
            ) from exc
