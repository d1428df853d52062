"""The edge's entry point on the shared runtime (ota/runtime.py): one or several serving
processes.

With OTA_EDGE_PROCESSES=N > 1 the parent forks N children that each bind the port with
SO_REUSEPORT (the kernel spreads connections), run on the runtime and serve metrics on
metrics_port + i; the parent forwards SIGTERM/SIGINT (a second one: the parent exits 130
and so do the children) and exits 1 if a child dies unasked (the other children are
stopped), so the supervisor restarts the whole edge.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal

from download_edge.server import EdgeServer
from download_edge.settings import EdgeSettings
from ota import runtime
from ota.kafka_clients import make_producer
from ota.redis_clients import make_redis
from ota.runtime import Runtime

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


async def serve(settings: EdgeSettings, rt: Runtime) -> None:
    """Serve until `rt.stop` is set, then drain the connections and the producer."""
    store = sink = None
    if settings.events:
        store = make_redis(settings.common)
        sink = make_producer(settings.common, client_id="ota-edge", max_block_ms=5000)
    server = EdgeServer(settings, store=store, sink=sink)
    listening = rt.health.hold("listening")  # /readyz (ota/health.py)
    rt.started()
    await server.start()
    listening()
    for task in server.tasks:
        rt.watch(task)
    await rt.stop.wait()
    log.info("edge stopping")
    await server.stop()
    if sink is not None:
        sink.close(timeout=settings.drain_s)
    if store is not None:
        store.close()


def _run_one(settings: EdgeSettings, index: int) -> int:
    return runtime.serve(
        lambda rt: serve(settings, rt),
        metrics_port=settings.metrics_port + index if settings.metrics_port else 0,
        metrics_host=settings.common.metrics_host,
        stop_timeout_s=3 * settings.drain_s + 5.0,
        liveness_limit_s=settings.common.liveness_limit_s,
        liveness_group_limit_s=settings.common.liveness_group_limit_s,
    )


def _run_many(settings: EdgeSettings) -> int:
    children: list[int] = []
    for index in range(settings.processes):
        pid = os.fork()
        if pid == 0:
            code = runtime.EXIT_FAILED
            try:
                code = _run_one(settings, index)
            except BaseException:
                log.exception("edge process failed", extra={"index": index})
            os._exit(code)
        children.append(pid)

    signals = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal signals
        signals += 1
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)
        if signals > 1:  # the children exit at once too
            os._exit(runtime.EXIT_FORCED)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = runtime.EXIT_OK
    while children:
        pid, code = os.wait()
        children.remove(pid)
        if code != 0 and status == runtime.EXIT_OK:
            status = runtime.EXIT_FAILED
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)
    return status


def main() -> int:
    settings = runtime.load_settings("download_edge", EdgeSettings.from_env)
    runtime.start_logs("edge", settings, settings.common)
    _raise_file_limit()
    if settings.processes == 1:
        return _run_one(settings, 0)
    return _run_many(settings)
