"""Fixtures for the edge: a package on disk, and edges running in-process on a uvloop thread.

The edge runs on its own thread and event loop (as in production, uvloop), so tests use
real blocking clients against it: http.client, raw sockets, curl and wget.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvloop

from download_edge.progress import Sink
from download_edge.server import EdgeServer
from download_edge.settings import EdgeSettings
from ota.settings import CommonSettings
from ota.tokens import mint

PACKAGE_BYTES = 3 * 1024 * 1024 + 123


@dataclass(frozen=True)
class Package:
    sha256: str
    data: bytes

    @property
    def path(self) -> str:
        return f"/packages/sha256/{self.sha256}"


class RunningEdge:
    """An EdgeServer on a background thread with its own uvloop loop."""

    def __init__(self, settings: EdgeSettings, store: Any = None, sink: Sink | None = None) -> None:
        self.settings = settings
        self._store, self._sink = store, sink
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.server: EdgeServer | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError(f"edge did not start: {self._error!r}")

    def _run(self) -> None:
        try:
            uvloop.run(self._main())
        except BaseException as exc:  # surfaced to the test through start/stop
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.server = EdgeServer(self.settings, store=self._store, sink=self._sink)
        await self.server.start()
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    def connections(self) -> int:
        assert self.server is not None
        return len(self.server.connections)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self._error is not None:
            raise self._error


def write_package(cache_dir: Path, data: bytes) -> Package:
    sha = hashlib.sha256(data).hexdigest()
    target = cache_dir / "sha256"
    target.mkdir(parents=True, exist_ok=True)
    (target / sha).write_bytes(data)
    return Package(sha, data)


@pytest.fixture
def common() -> CommonSettings:
    return CommonSettings.from_env({})


@pytest.fixture
def base_settings(tmp_path: Path, common: CommonSettings) -> EdgeSettings:
    return EdgeSettings(
        common=common,
        host="127.0.0.1",
        port=0,
        cache_dir=tmp_path / "cache",
        events=False,
        metrics_port=0,
        drain_s=2.0,
        header_timeout_s=1.0,
        idle_timeout_s=1.5,
    )


@pytest.fixture
def package(base_settings: EdgeSettings) -> Package:
    return write_package(base_settings.cache_dir, os.urandom(PACKAGE_BYTES))


EdgeFactory = Callable[..., RunningEdge]


@pytest.fixture
def edge_factory(base_settings: EdgeSettings) -> Iterator[EdgeFactory]:
    started: list[RunningEdge] = []

    def start(store: Any = None, sink: Sink | None = None, **changes: Any) -> RunningEdge:
        running = RunningEdge(replace(base_settings, **changes), store, sink)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def edge(edge_factory: EdgeFactory, package: Package) -> RunningEdge:
    return edge_factory()


@pytest.fixture
def token_for(common: CommonSettings) -> Callable[..., str]:
    def make(package_sha256: str, device_id: str = "dev-1", expires_in_s: int = 3600) -> str:
        return mint(
            common.token_keys,
            device_id=device_id,
            package_sha256=package_sha256,
            expires_s=int(time.time()) + expires_in_s,
        )

    return make


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)
