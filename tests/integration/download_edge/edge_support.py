"""Helpers for the edge tests: an edge running in-process on a uvloop thread, packages on
disk, and small blocking HTTP clients (the edge runs on its own loop, so tests use real
blocking clients against it: http.client, raw sockets, curl and wget)."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from download_edge.progress import Sink
from download_edge.server import EdgeServer
from download_edge.settings import EdgeSettings
from tests.conftest import missing


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


def get(
    edge: RunningEdge, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        reply = conn.getresponse()
        return reply, reply.read()
    finally:
        conn.close()


def raw(edge: RunningEdge, request: bytes, timeout_s: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", edge.port), timeout=timeout_s) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


EdgeFactory = Callable[..., RunningEdge]


def require_tool(name: str) -> str:
    """The path of a Debian client the test needs; fails under CI, skips elsewhere."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (apt-get install {name})")
    return path
