"""The content-addressed package cache: `<cache_dir>/sha256/<hex>`, filled from an origin.

A package is immutable (its name is its SHA-256), so an open descriptor can be shared by
every request for it: descriptors stay open in a bounded LRU and close once no send uses
them. Files are opened relative to the cache's `sha256` directory with O_NOFOLLOW, so a
symlink planted in the cache is refused, and the descriptor's real path is checked to be
inside the cache. A miss is filled once however many requests wait for it (single-flight):
the origin streams into a temporary file, the hash is checked, then an atomic rename
publishes it. A fill whose hash differs is discarded and the requests get a 502.

With a size cap, each fill makes room by deleting the least recently used packages
(opening a file from disk stamps its mtime). Deleting is safe while a send reads the
file: the open descriptor keeps the bytes until it closes; the next request refills.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import stat
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

from download_edge.origin import Origin, OriginError

log = logging.getLogger(__name__)


class PackageMissingError(Exception):
    """Neither the cache nor the origin has the package."""


class FillError(Exception):
    """The origin failed or sent bytes that do not hash to the package's name."""


class Package:
    """An open package file; `acquire`/`release` around every send that reads it."""

    __slots__ = ("_evicted", "fd", "refs", "sha256", "size")

    def __init__(self, sha256: str, fd: int, size: int) -> None:
        self.sha256 = sha256
        self.fd = fd
        self.size = size
        self.refs = 0
        self._evicted = False

    def acquire(self) -> None:
        self.refs += 1

    def release(self) -> None:
        self.refs -= 1
        if self._evicted and self.refs == 0:
            os.close(self.fd)

    def evict(self) -> None:
        self._evicted = True
        if self.refs == 0:
            os.close(self.fd)


class PackageCache:
    def __init__(
        self, cache_dir: Path, origin: Origin | None, open_files: int, max_bytes: int = 0
    ) -> None:
        self._root = cache_dir.resolve()
        self._dir = self._root / "sha256"
        self._tmp = self._root / "tmp"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY)
        self._origin = origin
        self._open_files = open_files
        self._max_bytes = max_bytes  # 0: unbounded
        self._open: OrderedDict[str, Package] = OrderedDict()
        self._fills: dict[str, asyncio.Future[list[str]]] = {}

    def close(self) -> None:
        for package in self._open.values():
            package.evict()
        self._open.clear()
        os.close(self._dir_fd)

    def cached(self, sha256: str) -> Package | None:
        """The package if it is open already: the hot path, no system call."""
        package = self._open.get(sha256)
        if package is not None:
            self._open.move_to_end(sha256)
        return package

    async def get(self, sha256: str) -> Package:
        """The package, opening it from disk or filling it from the origin as needed."""
        package = self.cached(sha256) or self._open_file(sha256)
        if package is not None:
            return package
        fill = self._fills.get(sha256)
        if fill is None:
            # A task of its own: a cancelled request must not cancel the others' fill.
            fill = asyncio.ensure_future(asyncio.to_thread(self._fill, sha256))
            self._fills[sha256] = fill
            fill.add_done_callback(functools.partial(self._fill_done, sha256))
        for evicted in await asyncio.shield(fill):
            stale = self._open.pop(evicted, None)
            if stale is not None:
                stale.evict()
        package = self._open_file(sha256)
        if package is None:
            raise FillError(f"package {sha256} vanished after its fill")
        return package

    def _fill_done(self, sha256: str, fill: asyncio.Future[list[str]]) -> None:
        del self._fills[sha256]
        if not fill.cancelled():
            fill.exception()  # waiters re-raise it; this keeps asyncio from logging it

    def _open_file(self, sha256: str) -> Package | None:
        try:
            fd = os.open(sha256, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return None
        try:
            info = os.fstat(fd)
            real = os.readlink(f"/proc/self/fd/{fd}")
            if not stat.S_ISREG(info.st_mode) or Path(real).parent != self._dir:
                raise PermissionError(f"cache entry {sha256} is not a regular file in the cache")
        except OSError:
            os.close(fd)
            raise
        if self._max_bytes:
            now = time.time_ns()  # precise: the kernel's own stamp is a coarse tick
            os.utime(fd, ns=(now, now))  # last use, for the size cap's eviction order
        package = Package(sha256, fd, info.st_size)
        self._open[sha256] = package
        if len(self._open) > self._open_files:
            _, oldest = self._open.popitem(last=False)
            oldest.evict()
        return package

    def _fill(self, sha256: str) -> list[str]:
        """Blocking: stream from the origin into a temp file, verify, rename into place;
        then make room under the size cap. Returns the packages deleted for room."""
        if self._origin is None:
            raise PackageMissingError(f"package {sha256} is not cached and no origin is set")
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept on success
            dir=self._tmp, prefix=sha256[:16], delete=False
        )
        temp = Path(handle.name)
        try:
            with handle:
                seen = self._origin.fetch(sha256, handle)
                handle.flush()
                os.fsync(handle.fileno())
            if seen != sha256:
                raise FillError(f"origin sent package {sha256} with SHA-256 {seen}")
            os.chmod(temp, 0o444)
            os.replace(temp, self._dir / sha256)
            log.info("package cached", extra={"package_sha256": sha256})
            return self._make_room(keep=sha256)
        except OriginError as exc:
            temp.unlink(missing_ok=True)
            if exc.missing:
                raise PackageMissingError(str(exc)) from exc
            raise FillError(str(exc)) from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def _make_room(self, keep: str) -> list[str]:
        """Delete least recently used packages until the cache fits its cap."""
        if not self._max_bytes:
            return []
        entries = []
        for entry in os.scandir(self._dir):
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # another edge process deleted it
            entries.append((info.st_mtime, entry.name, info.st_size))
        total = sum(size for _, _, size in entries)
        evicted = []
        for _, name, size in sorted(entries):
            if total <= self._max_bytes:
                break
            if name == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self._dir_fd)
            total -= size
            evicted.append(name)
        if evicted:
            log.info("packages evicted from the cache", extra={"count": len(evicted)})
        return evicted
