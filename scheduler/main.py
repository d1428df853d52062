"""`python -m scheduler`: the API server, the three consumers, the reconciler and the webhook
dispatcher as supervised tasks of the shared runtime (ota/runtime.py) on uvloop.

Shutdown: the first SIGTERM/SIGINT stops intake (uvicorn stops accepting, consumers
stop polling after their current batch, which they commit); the loops finish their
step, then clients close. A second signal exits at once (130). A loop that fails stops
the others the same way and the process exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn

from ota.env import PREFIX, SettingsError
from ota.redis_clients import is_cluster_url
from ota.runtime import Runtime, Service
from scheduler import keys
from scheduler.api.app import build_app
from scheduler.bus import Consumer
from scheduler.consumers import InboxHandler, JobEventHandler
from scheduler.deadletters import DeadLetterCounts
from scheduler.key_layout import move_old_keys
from scheduler.rebuild import restore, stop_lost
from scheduler.reconciler import Reconciler
from scheduler.registry_replay import replay_registry
from scheduler.services import Services
from scheduler.settings import SchedulerSettings
from scheduler.webhooks import Dispatcher

log = logging.getLogger("scheduler")


def stop_timeout_s(settings: SchedulerSettings) -> float:
    """How long the loops get to finish their step once stopping (a webhook call in
    flight included)."""
    return max(30.0, settings.webhook_timeout_s + 5.0)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled by the shared runtime, for every part of the process


async def serve(settings: SchedulerSettings, rt: Runtime) -> None:
    """Serve until `rt.stop` is set; raises the failure of a loop that failed."""
    services = Services.build(settings)
    await move_old_keys(services.redis)
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

    inbox = Consumer(
        settings.common,
        topics=[topics.inbox],
        group_id=settings.registry_group,
        handler=InboxHandler(services.registry, services.producer, topics),
        name="registry",
    )
    job_events = Consumer(
        settings.common,
        topics=[topics.job_events],
        group_id=settings.jobs_group,
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
    dead_letters = Consumer(
        settings.common,
        topics=[topics.dead_letters],
        group_id=f"{settings.consumer_group}-dead-letters",
        handler=DeadLetterCounts(services.redis),
        name="dead-letters",
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
    emptied = not await services.redis.exists(keys.RESTORED)  # or never restored yet
    jobs_ready = asyncio.Event()  # set once the registry has the job events back
    if not emptied:
        jobs_ready.set()
    await restore(services.redis, settings, services.webhooks)
    await stop_lost(services.redis, services.tasks)
    rt.started()

    log.info(
        "scheduler starting", extra={"port": settings.http_port, "instance": settings.instance_id}
    )
    try:
        rt.on_stop(lambda: setattr(server, "should_exit", True))
        rt.spawn(server.serve(), "http")
        rt.spawn(inbox.run(rt.stop), "registry")
        rt.spawn(job_events.run(rt.stop, jobs_ready), "jobs")
        rt.spawn(dead_letters.run(rt.stop), "dead-letters")
        rt.spawn(reconciler.run(rt.stop), "reconciler")
        rt.spawn(dispatcher.run(rt.stop), "webhooks")
        rt.spawn(services.credential_log.run(rt.stop), "credentials")
        if emptied:
            replay = replay_registry(
                settings.common,
                (settings.registry_group, settings.jobs_group),
                services.redis,
                services.registry,
                jobs_ready,
                rt.stop,
            )
            rt.spawn(replay, "registry-replay")
        await rt.stop.wait()
        await rt.join(stop_timeout_s(settings))
    finally:
        rt.stop.set()
        await services.close()
        log.info("scheduler stopped")
    rt.raise_failure()


def settings_from_env() -> SchedulerSettings:
    """The settings from the environment, refusing a credential store on Redis Cluster:
    the device broker reads it with a standalone client (docs/deploy.md, Redis Cluster)."""
    settings = SchedulerSettings.from_env()
    if is_cluster_url(settings.credentials_redis_url):
        raise SettingsError(
            f"{PREFIX}CREDENTIALS_REDIS_URL: the device credential store must be a "
            "standalone Redis (redis:// or rediss://), which the device broker reads too; "
            f"it defaults to the scheduler's Redis, so set it when {PREFIX}SCHEDULER_REDIS_URL "
            f"or {PREFIX}REDIS_URL names a Redis Cluster"
        )
    return settings


SERVICE = Service(
    prog="scheduler",
    name="scheduler",
    load=settings_from_env,
    common=lambda s: s.common,
    metrics_port=lambda s: 0,  # /metrics is served on the API port
    stop_timeout_s=stop_timeout_s,
    main=serve,
)
