"""Packages: upload (streamed, hashed, optionally signature-checked), list, get, delete.

The system of record of package metadata is the compacted topic `ota.packages`
(key = package id, a tombstone on delete); Redis holds the queryable copy. The bytes
live in the content-addressed `Blobs` (a shared volume or a bucket), shared by packages with equal content.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis.asyncio

from ota.clock import now_ms
from ota.protocol import MAX_VERSION_CHARS
from ota.records import PackageRef, TaskType, new_id
from ota.settings import Topics
from scheduler import keys
from scheduler.blobs import Blobs
from scheduler.bus import Out, Producer
from scheduler.errors import Conflict, NotFound, ValidationError
from scheduler.signing import PublicKey, verify

MAX_ALLOWED_SOURCES = 20  # IoTDA's limit
# A package version must fit in the version fields devices report.
_VERSION = re.compile(rf"[A-Za-z0-9._+\-:~]{{1,{MAX_VERSION_CHARS}}}")
_FILE_NAME = re.compile(r"[A-Za-z0-9._+\-]{1,255}")


@dataclass(frozen=True, slots=True)
class PackageMeta:
    type: TaskType
    version: str
    file_name: str
    product: str = ""
    allowed_sources: tuple[str, ...] = ()
    custom_info: str = ""
    description: str = ""


@dataclass(frozen=True, slots=True)
class Package:
    id: str
    sha256: str
    size: int
    type: TaskType
    version: str
    file_name: str
    product: str
    allowed_sources: tuple[str, ...]
    custom_info: str
    description: str
    signed: bool
    created_ms: int
    # The detached signature (base64) and the id of the configured key that verified it
    # (ota.package_signing); empty when unsigned. Upgrade commands carry both.
    signature: str = ""
    key_id: str = ""

    def json(self) -> dict[str, Any]:
        out = asdict(self)
        out["type"] = self.type.value
        out["allowed_sources"] = list(self.allowed_sources)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Package:
        return cls(
            **{
                **data,
                "type": TaskType(data["type"]),
                "allowed_sources": tuple(data["allowed_sources"]),
            }
        )

    def ref(self) -> PackageRef:
        return PackageRef(
            sha256=self.sha256,
            version=self.version,
            file_name=self.file_name,
            file_size=self.size,
            custom_info=self.custom_info,
            allowed_sources=self.allowed_sources,
            signature=self.signature,
            key_id=self.key_id,
        )


def _bad(field: str, message: str, code: str = "bad_value") -> ValidationError:
    return ValidationError(message, code=code, field=field)


def parse_meta(query: Mapping[str, str]) -> PackageMeta:
    """Validate upload metadata (query parameters) before a byte of the body is read."""
    known = {
        "type",
        "version",
        "file_name",
        "product",
        "allowed_sources",
        "custom_info",
        "description",
    }
    for name in query:
        if name not in known:
            raise _bad(
                name,
                f"unknown parameter {name!r}; allowed: {', '.join(sorted(known))}",
                "unknown_field",
            )
    raw_type = query.get("type", "")
    try:
        kind = TaskType(raw_type)
    except ValueError:
        raise _bad("type", f"type={raw_type!r} must be firmware or software") from None
    version = query.get("version", "")
    if not _VERSION.fullmatch(version):
        raise _bad(
            "version",
            f"version is required: 1-{MAX_VERSION_CHARS} of letters, digits and . _ + - : ~",
        )
    file_name = query.get("file_name", "")
    if not _FILE_NAME.fullmatch(file_name):
        raise _bad("file_name", "file_name is required: 1-255 of letters, digits and . _ + -")
    sources = tuple(
        dict.fromkeys(s.strip() for s in query.get("allowed_sources", "").split(",") if s.strip())
    )
    if len(sources) > MAX_ALLOWED_SOURCES:
        raise _bad(
            "allowed_sources",
            f"allowed_sources has {len(sources)} versions; the limit is {MAX_ALLOWED_SOURCES}",
            "too_many",
        )
    for source in sources:
        if not _VERSION.fullmatch(source):
            raise _bad(
                "allowed_sources", f"allowed_sources has a malformed version {source[:40]!r}"
            )
    limits = {"product": 128, "custom_info": 4096, "description": 1024}
    for name, limit in limits.items():
        if len(query.get(name, "")) > limit:
            raise _bad(name, f"{name} is longer than {limit} characters", "too_long")
    return PackageMeta(
        type=kind,
        version=version,
        file_name=file_name,
        product=query.get("product", ""),
        allowed_sources=sources,
        custom_info=query.get("custom_info", ""),
        description=query.get("description", ""),
    )


# Delete a package only if no unfinished task uses it.
# KEYS: package doc, users set, packages zset, blob refs set, dedupe key
# ARGV: package id. Returns 1 deleted, 0 in use, -1 unknown.
_DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
"""


class Packages:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        producer: Producer,
        topics: Topics,
        blobs: Blobs,
        *,
        public_keys: Mapping[str, PublicKey],
        require_signature: bool,
        max_bytes: int,
    ) -> None:
        self._r, self._producer, self._topics, self._blobs = r, producer, topics, blobs
        self._keys, self._require_sig, self._max_bytes = public_keys, require_signature, max_bytes
        self._delete = r.register_script(_DELETE)

    def check_signature_header(self, signature: bytes | None) -> None:
        """Refuse before reading the body when a signature is required or cannot be checked."""
        if signature is None and self._require_sig:
            raise _bad("X-OTA-Signature", "a detached signature is required", "signature_required")
        if signature is not None and not self._keys:
            raise _bad(
                "X-OTA-Signature",
                "a signature was sent but no public key is configured to check it",
                "signature_unverifiable",
            )

    async def upload(
        self, meta: PackageMeta, signature: bytes | None, chunks: AsyncIterator[bytes]
    ) -> tuple[Package, bool]:
        """Store the package; returns (package, created). Equal content and metadata dedupe."""
        self.check_signature_header(signature)
        stored = await self._blobs.ingest(chunks, self._max_bytes)
        try:
            key_id = "" if signature is None else verify(self._keys, signature, stored.sha256)
            dedupe = keys.package_dedupe(stored.sha256, meta.type, meta.version, meta.product)
            existing = await self._r.get(dedupe)
            if existing is not None:
                return await self.get(existing.decode()), False
            package = Package(
                id=new_id(),
                sha256=stored.sha256,
                size=stored.size,
                signed=signature is not None,
                created_ms=now_ms(),
                signature="" if signature is None else base64.b64encode(signature).decode(),
                key_id=key_id,
                **asdict(meta),
            )
            if not await self._r.set(dedupe, package.id, nx=True):
                # A concurrent upload of the same package won the race; it is the package.
                raw = await self._r.get(dedupe)
                return await self.get((raw or b"").decode()), False
            doc = orjson.dumps(package.json())
            try:
                await self._producer.send([Out(self._topics.packages, package.id, doc)])
            except BaseException:
                await self._r.delete(dedupe)
                raise
            pipe = self._r.pipeline(transaction=True)
            pipe.set(keys.package(package.id), doc)
            pipe.zadd(keys.PACKAGES, {package.id: package.created_ms})
            pipe.sadd(keys.package_blob_refs(package.sha256), package.id)
            await pipe.execute()
            return package, True
        except BaseException:
            if stored.new and not await self._r.scard(keys.package_blob_refs(stored.sha256)):
                await self._blobs.remove(stored.sha256)
            raise

    async def get(self, pid: str) -> Package:
        raw = await self._r.get(keys.package(pid))
        if raw is None:
            raise NotFound(
                f"package {pid!r} does not exist", code="unknown_package", field="package_id"
            )
        return Package.from_json(orjson.loads(raw))

    async def page(self, *, offset: int, limit: int) -> tuple[list[Package], int | None]:
        ids = await self._r.zrevrange(keys.PACKAGES, offset, offset + limit - 1)
        docs = await self._r.mget([keys.package(i.decode()) for i in ids]) if ids else []
        items = [Package.from_json(orjson.loads(d)) for d in docs if d is not None]
        return items, (offset + limit if len(ids) == limit else None)

    async def delete(self, pid: str) -> None:
        package = await self.get(pid)
        dedupe = keys.package_dedupe(package.sha256, package.type, package.version, package.product)
        result = await self._delete(
            keys=[
                keys.package(pid),
                keys.package_users(pid),
                keys.PACKAGES,
                keys.package_blob_refs(package.sha256),
                dedupe,
            ],
            args=[pid],
        )
        if result == -1:
            raise NotFound(f"package {pid!r} does not exist", code="unknown_package")
        if result == 0:
            users = sorted(u.decode() for u in await self._r.smembers(keys.package_users(pid)))
            raise Conflict(
                f"package {pid!r} is used by unfinished tasks: {', '.join(users[:10])}",
                code="package_in_use",
            )
        await self._producer.send([Out(self._topics.packages, pid, None)])
        if not await self._r.scard(keys.package_blob_refs(package.sha256)):
            await self._blobs.remove(package.sha256)
