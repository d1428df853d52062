"""Run the edge in one process: listen, sweep timeouts, shut down gracefully.

`serve` owns the listening socket (SO_REUSEPORT when several processes share the port),
one sweeper for every connection's timeouts, and the shutdown sequence: stop accepting,
close idle connections, let responses in progress finish for up to `drain_s`, abort the
rest, then flush download progress.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

import redis

from download_edge import metrics as m
from download_edge.app import Edge
from download_edge.cache import PackageCache
from download_edge.connection import Connection
from download_edge.origin import BucketOrigin, DirectoryOrigin, HttpOrigin, Origin
from download_edge.progress import ProgressRecorder, Sink
from download_edge.settings import EdgeSettings
from ota.object_store import ObjectStore

log = logging.getLogger(__name__)
SWEEP_S = 0.5


def tls_context(settings: EdgeSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def origin_of(settings: EdgeSettings) -> Origin | None:
    if settings.origin_dir is not None:
        return DirectoryOrigin(settings.origin_dir)
    if settings.origin_url is not None:
        return HttpOrigin(settings.origin_url, settings.origin_token, settings.origin_timeout_s)
    if settings.origin_store is not None:
        return BucketOrigin(ObjectStore(settings.origin_store))
    return None


class EdgeServer:
    """A listening edge; `start`, then `stop` (graceful) — usable in-process by tests."""

    def __init__(
        self,
        settings: EdgeSettings,
        *,
        store: redis.Redis[bytes] | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.settings = settings
        self.cache = PackageCache(
            settings.cache_dir, origin_of(settings), settings.open_files, settings.cache_max_bytes
        )
        self.recorder: ProgressRecorder | None = None
        if settings.events and store is not None and sink is not None:
            self.recorder = ProgressRecorder(
                store,
                sink,
                settings.common.topics.inbox,
                flush_ms=settings.progress_flush_ms,
                ttl_s=settings.progress_ttl_s,
            )
        self.edge = Edge(settings, self.cache, self.recorder)
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port = settings.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        factory: Callable[[], Connection] = lambda: Connection(self.edge, self.connections)  # noqa: E731
        self._server = await loop.create_server(
            factory,
            self.settings.host,
            self.settings.port,
            ssl=tls_context(self.settings),
            reuse_port=self.settings.processes > 1,
            backlog=4096,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if self.recorder is not None:
            self.recorder.start()
        self._sweeper = loop.create_task(self._sweep(), name="edge-sweeper")
        log.info("edge listening", extra={"port": self.port, "tls": self.settings.tls})

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The server's background loops, for the runtime to supervise (stop() ends them)."""
        return [self._sweeper] if self._sweeper is not None else []

    async def _sweep(self) -> None:
        limiter = self.edge.limiter
        while True:
            await asyncio.sleep(SWEEP_S)
            now = time.monotonic()
            for connection in list(self.connections):
                connection.check_timeouts(now)
            m.tally.flush()
            if limiter is not None:
                limiter.forget_idle(now, 60.0)

    async def stop(self) -> None:
        assert self._server is not None
        assert self._sweeper is not None
        self._server.close()
        for connection in list(self.connections):
            connection.shutdown()
        deadline = time.monotonic() + self.settings.drain_s
        while self.connections and time.monotonic() < deadline:  # noqa: ASYNC110 - protocols change the set
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.abort()
        self._sweeper.cancel()
        await asyncio.gather(self._sweeper, return_exceptions=True)
        await self._server.wait_closed()
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.close, self.settings.drain_s)
        m.tally.flush()
        self.edge.close()
        self.cache.close()
        log.info("edge stopped")
