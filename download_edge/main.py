"""The edge's entry point: settings, logs, metrics, one or several serving processes.

With OTA_EDGE_PROCESSES=N > 1 the parent forks N children that each bind the port with
SO_REUSEPORT (the kernel spreads connections) and serve metrics on metrics_port + i; the
parent forwards SIGTERM/SIGINT and exits non-zero if a child dies unasked, so the
supervisor restarts the whole edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys

import uvloop

from download_edge.server import EdgeServer
from download_edge.settings import EdgeSettings
from ota import logs
from ota.kafka_clients import make_producer
from ota.metrics import serve_metrics
from ota.redis_clients import make_redis
from ota.settings import SettingsError

log = logging.getLogger("download_edge")
WANTED_FILES = 65_536


def _raise_file_limit() -> None:
    """One descriptor per connection: 10,000 slow downloads need more than the usual 1024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(hard, WANTED_FILES)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, PermissionError):  # not privileged: the hard limit is the ceiling
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(settings: EdgeSettings, index: int) -> None:
    if settings.metrics_port:
        serve_metrics(settings.metrics_port + index, settings.common.metrics_host)
    store = sink = None
    if settings.events:
        store = make_redis(settings.common)
        sink = make_producer(settings.common, client_id="ota-edge", max_block_ms=5000)
    server = EdgeServer(settings, store=store, sink=sink)
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stopping.is_set():
            os._exit(1)  # a second signal forces exit
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await stopping.wait()
    log.info("edge stopping")
    await server.stop()
    if sink is not None:
        sink.close(timeout=settings.drain_s)
    if store is not None:
        store.close()


def _run_one(settings: EdgeSettings, index: int) -> None:
    uvloop.run(serve(settings, index))


def _run_many(settings: EdgeSettings) -> int:
    children: list[int] = []
    for index in range(settings.processes):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _run_one(settings, index)
            except BaseException:
                log.exception("edge process failed", extra={"index": index})
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    while children:
        pid, code = os.wait()
        children.remove(pid)
        if code != 0 and status == 0:
            status = 1
            forward(signal.SIGTERM, None)
    return status


def main() -> None:
    try:
        settings = EdgeSettings.from_env()
    except SettingsError as exc:
        print(f"download_edge: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    logs.setup("edge", settings.common.log_level)
    _raise_file_limit()
    if settings.processes == 1:
        _run_one(settings, 0)
    else:
        raise SystemExit(_run_many(settings))
