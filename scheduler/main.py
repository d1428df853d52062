"""`python -m scheduler`: the API server, both consumers, the reconciler and the webhook
dispatcher in one asyncio TaskGroup on uvloop.

Shutdown: the first SIGTERM/SIGINT stops intake (uvicorn stops accepting, consumers
stop polling after their current batch, which they commit); the loops finish their
step, then clients close. A second signal forces exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Generator

import uvicorn
import uvloop

from ota import logs
from scheduler.api.app import build_app
from scheduler.bus import Consumer
from scheduler.consumers import InboxHandler, JobEventHandler
from scheduler.rebuild import restore
from scheduler.reconciler import Reconciler
from scheduler.services import Services
from scheduler.settings import SchedulerSettings
from scheduler.webhooks import Dispatcher

log = logging.getLogger("scheduler")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled by `serve` below, for every part of the process


async def serve(settings: SchedulerSettings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    services = Services.build(settings)
    topics = settings.common.topics
    server = _Server(
        uvicorn.Config(
            build_app(services),
            host=settings.http_host,
            port=settings.http_port,
            loop="none",
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        stop.set()
        server.should_exit = True
        if signals > 1:
            log.warning("second signal: forcing exit")
            os._exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)

    inbox = Consumer(
        settings.common,
        topics=[topics.inbox],
        group_id=f"{settings.consumer_group}-registry",
        handler=InboxHandler(services.registry, services.producer, topics),
        name="registry",
    )
    job_events = Consumer(
        settings.common,
        topics=[topics.job_events],
        group_id=f"{settings.consumer_group}-jobs",
        handler=JobEventHandler(
            services.redis,
            services.state,
            services.registry,
            services.notifier,
            services.producer,
            topics,
            services.wake,
        ),
        name="jobs",
    )
    reconciler = Reconciler(
        services.redis,
        services.producer,
        topics,
        services.tasks,
        services.state,
        settings,
        services.wake,
    )
    dispatcher = Dispatcher(
        services.redis,
        services.webhooks,
        consumer=settings.instance_id,
        attempts=settings.webhook_attempts,
        backoff_s=settings.webhook_backoff_s,
        timeout_s=settings.webhook_timeout_s,
    )
    await dispatcher.ensure_group()
    await restore(services.redis, settings.common)

    async def until_stopped() -> None:
        await stop.wait()
        server.should_exit = True

    log.info(
        "scheduler starting", extra={"port": settings.http_port, "instance": settings.instance_id}
    )
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(server.serve(), name="http")
            group.create_task(until_stopped(), name="stop")
            group.create_task(inbox.run(stop), name="registry")
            group.create_task(job_events.run(stop), name="jobs")
            group.create_task(reconciler.run(stop), name="reconciler")
            group.create_task(dispatcher.run(stop), name="webhooks")
    finally:
        stop.set()
        await services.close()
        log.info("scheduler stopped")


def main() -> None:
    settings = SchedulerSettings.from_env()
    logs.setup("scheduler", settings.common.log_level)
    uvloop.run(serve(settings))
