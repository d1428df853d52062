"""The worker process on the shared runtime (ota/runtime.py): the consumer loop and the
sweeper each on a supervised thread; a graceful stop on SIGTERM/SIGINT (finish the batch,
commit, leave the group); a second signal exits at once (130)."""

from __future__ import annotations

import asyncio
import gc
import logging

from ota.kafka_clients import make_consumer, make_producer
from ota.redis_clients import make_redis
from ota.runtime import Runtime, Service
from workers.consumer import Worker
from workers.outages import OutageClock
from workers.settings import WorkerSettings
from workers.store import Store
from workers.sweeper import Sweeper

log = logging.getLogger(__name__)
GC_THRESHOLD = 50_000  # allocations between young-generation collections (default 700)


def build(settings: WorkerSettings, client_id: str = "ota-worker") -> tuple[Worker, Sweeper]:
    common = settings.common
    consumer = make_consumer(
        common,
        group_id=settings.group_id,
        client_id=client_id,
        max_poll_records=settings.max_poll_records,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(300, settings.session_timeout_ms // 3),
        group_instance_id=settings.instance_id or None,
    )
    producer = make_producer(common, client_id=client_id)
    worker = Worker(settings, consumer, producer, Store(make_redis(common)))
    sweeper = Sweeper(
        Store(make_redis(common)),
        producer,
        common.topics.inbox,
        worker.owned,
        batch=settings.sweep_batch,
        idle_ms=settings.sweep_idle_ms,
        lease_ms=settings.sweep_lease_ms,
        outages=OutageClock(settings.outage_grace_ms, settings.outage_memory_ms),
        broker_hold_ms=settings.broker_hold_ms,
    )
    return worker, sweeper


async def main(settings: WorkerSettings, rt: Runtime) -> None:
    """The consumer loop and the sweeper on threads, supervised: either failing stops
    the other and the process (exit 1); a stop finishes the batch, commits and leaves
    the group, then the clients close."""
    worker, sweeper = build(settings)
    tune_gc()
    rt.on_stop(worker.stopping.set)
    rt.on_stop(sweeper.stop)
    sweeper.beat = rt.health.beat("sweeper")  # the consumer's beat is its polls'
    rt.started()
    sweeping = rt.spawn_thread(sweeper.run, "sweeper")
    consuming = rt.spawn_thread(worker.run, "consumer")
    try:
        await asyncio.wait({sweeping, consuming})
    finally:
        await asyncio.to_thread(_close, worker, settings.drain_timeout_s)
        log.info("stopped")


def _close(worker: Worker, drain_timeout_s: float) -> None:
    worker.consumer.close()
    worker.producer.flush(drain_timeout_s)
    worker.producer.close(drain_timeout_s)


SERVICE = Service(
    prog="workers",
    name="worker",
    load=WorkerSettings.from_env,
    common=lambda s: s.common,
    metrics_port=lambda s: s.metrics_port,
    stop_timeout_s=lambda s: 3 * s.drain_timeout_s,
    main=main,
)


def tune_gc() -> None:
    """Every record allocates a few dozen short-lived objects (records, events, states)
    that reference counting frees; with the default thresholds the cycle collector runs
    every 700 allocations and rescans the long-lived heap (clients, caches) each time,
    about a tenth of the loop's CPU. Collect rarely, and never scan what startup made."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 100)
