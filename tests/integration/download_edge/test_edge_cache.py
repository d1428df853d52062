"""Cache fills from a directory or HTTP origin, hash verification, single-flight."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from download_edge.cache import FillError, PackageCache
from download_edge.origin import DirectoryOrigin

from .edge_support import EdgeFactory, get, write_package


@pytest.fixture
def origin_dir(tmp_path: Path) -> Path:
    return tmp_path / "origin"


def test_miss_fills_from_origin_directory(
    edge_factory: EdgeFactory, origin_dir: Path, token_for: Callable[..., str]
) -> None:
    package = write_package(origin_dir, os.urandom(200_000))
    edge = edge_factory(origin_dir=origin_dir)
    auth = {"Authorization": f"Bearer {token_for(package.sha256)}"}
    reply, body = get(edge, package.path, {**auth, "Range": "bytes=100-"})
    assert reply.status == 206
    assert body == package.data[100:]
    cached = edge.settings.cache_dir / "sha256" / package.sha256
    assert cached.read_bytes() == package.data
    missing = "e" * 64
    reply, _ = get(
        edge, f"/packages/sha256/{missing}", {"Authorization": f"Bearer {token_for(missing)}"}
    )
    assert reply.status == 404


def test_corrupt_origin_is_never_served(
    edge_factory: EdgeFactory, origin_dir: Path, token_for: Callable[..., str]
) -> None:
    claimed = hashlib.sha256(b"the real package").hexdigest()
    (origin_dir / "sha256").mkdir(parents=True)
    (origin_dir / "sha256" / claimed).write_bytes(b"tampered bytes")
    edge = edge_factory(origin_dir=origin_dir)
    reply, body = get(
        edge, f"/packages/sha256/{claimed}", {"Authorization": f"Bearer {token_for(claimed)}"}
    )
    assert reply.status == 502
    assert b"tampered" not in body
    assert not (edge.settings.cache_dir / "sha256" / claimed).exists()
    assert list((edge.settings.cache_dir / "tmp").iterdir()) == []


class _Handler(http.server.BaseHTTPRequestHandler):
    root: Path
    seen_auth: list[str | None]

    def do_GET(self) -> None:
        self.seen_auth.append(self.headers.get("Authorization"))
        name = self.path.removeprefix("/store/sha256/")
        target = self.root / "sha256" / name
        if "/" in name or not target.is_file():
            self.send_error(404)
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def http_origin(origin_dir: Path) -> Iterator[tuple[str, list[str | None]]]:
    seen: list[str | None] = []
    handler = type("Handler", (_Handler,), {"root": origin_dir, "seen_auth": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/store", seen
    server.shutdown()
    server.server_close()


def test_miss_fills_from_http_origin_with_bearer(
    edge_factory: EdgeFactory,
    origin_dir: Path,
    http_origin: tuple[str, list[str | None]],
    token_for: Callable[..., str],
) -> None:
    base_url, seen = http_origin
    package = write_package(origin_dir, os.urandom(300_000))
    edge = edge_factory(origin_url=base_url, origin_token="origin-secret")
    reply, body = get(edge, package.path, {"Authorization": f"Bearer {token_for(package.sha256)}"})
    assert reply.status == 200
    assert body == package.data
    assert seen == ["Bearer origin-secret"]
    missing = "d" * 64
    reply, _ = get(
        edge, f"/packages/sha256/{missing}", {"Authorization": f"Bearer {token_for(missing)}"}
    )
    assert reply.status == 404


class _CountingOrigin(DirectoryOrigin):
    def __init__(self, root: Path, gate: threading.Event) -> None:
        super().__init__(root)
        self.calls = 0
        self._gate = gate

    def fetch(self, package_sha256: str, sink: IO[bytes]) -> str:
        self.calls += 1
        self._gate.wait(10)
        return super().fetch(package_sha256, sink)


async def test_concurrent_misses_share_one_fill(tmp_path: Path, origin_dir: Path) -> None:
    package = write_package(origin_dir, os.urandom(100_000))
    gate = threading.Event()
    origin = _CountingOrigin(origin_dir, gate)
    cache = PackageCache(tmp_path / "cache", origin, open_files=4)
    waiters = [asyncio.create_task(cache.get(package.sha256)) for _ in range(20)]
    await asyncio.sleep(0.05)
    gate.set()
    opened = await asyncio.gather(*waiters)
    assert origin.calls == 1
    assert {p.size for p in opened} == {len(package.data)}
    cache.close()


async def test_failed_fill_reaches_every_waiter(tmp_path: Path, origin_dir: Path) -> None:
    claimed = "c" * 64
    (origin_dir / "sha256").mkdir(parents=True)
    (origin_dir / "sha256" / claimed).write_bytes(b"wrong")
    cache = PackageCache(tmp_path / "cache", DirectoryOrigin(origin_dir), open_files=4)
    results = await asyncio.gather(*(cache.get(claimed) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, FillError) for r in results)
    cache.close()


async def test_size_cap_evicts_the_least_recently_used(tmp_path: Path, origin_dir: Path) -> None:
    first, second, third = (write_package(origin_dir, os.urandom(1000)) for _ in range(3))
    cache = PackageCache(tmp_path / "cache", DirectoryOrigin(origin_dir), 1, max_bytes=2500)
    await cache.get(first.sha256)
    in_use = await cache.get(second.sha256)
    in_use.acquire()  # a send is reading the second package
    await cache.get(first.sha256)  # reopened from disk: now the most recently used
    await cache.get(third.sha256)  # 3000 bytes > 2500: the second one goes
    on_disk = {p.name for p in (tmp_path / "cache" / "sha256").iterdir()}
    assert on_disk == {first.sha256, third.sha256}
    assert os.pread(in_use.fd, 1000, 0) == second.data  # the running send still reads it
    in_use.release()
    again = await cache.get(second.sha256)  # refilled from the origin
    assert os.pread(again.fd, 1000, 0) == second.data
    cache.close()


async def test_unbounded_cache_keeps_everything(tmp_path: Path, origin_dir: Path) -> None:
    packages = [write_package(origin_dir, os.urandom(1000)) for _ in range(3)]
    cache = PackageCache(tmp_path / "cache", DirectoryOrigin(origin_dir), 1)
    for package in packages:
        await cache.get(package.sha256)
    assert len(list((tmp_path / "cache" / "sha256").iterdir())) == 3
    cache.close()
