"""The worker process: the consumer loop in the main thread, the sweeper in a thread,
metrics, and a graceful stop on SIGTERM/SIGINT (finish the batch, commit, leave the group;
a second signal exits at once)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
from types import FrameType

from ota import logs
from ota.kafka_clients import make_consumer, make_producer
from ota.metrics import serve_metrics
from ota.redis_clients import make_redis
from workers.consumer import Worker
from workers.partitioner import KeyHashPartitioner
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
    )
    producer = make_producer(common, client_id=client_id, partitioner=KeyHashPartitioner())
    worker = Worker(settings, consumer, producer, Store(make_redis(common)))
    sweeper = Sweeper(
        Store(make_redis(common)),
        producer,
        common.topics.inbox,
        worker.owned,
        batch=settings.sweep_batch,
        idle_ms=settings.sweep_idle_ms,
        lease_ms=settings.sweep_lease_ms,
    )
    return worker, sweeper


def run(settings: WorkerSettings) -> None:
    worker, sweeper = build(settings)
    tune_gc()
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            os._exit(1)
        log.info("stopping", extra={"signal": signum})
        worker.stopping.set()
        sweeper.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sweeping = threading.Thread(target=sweeper.run, name="sweeper", daemon=True)
    sweeping.start()
    try:
        worker.run()
    finally:
        sweeper.stop()
        sweeping.join(settings.drain_timeout_s)
        worker.consumer.close()
        worker.producer.flush(settings.drain_timeout_s)
        worker.producer.close(settings.drain_timeout_s)
        log.info("stopped")


def main() -> None:
    settings = WorkerSettings.from_env()
    logs.setup("worker", settings.common.log_level)
    serve_metrics(settings.metrics_port, settings.common.metrics_host)
    run(settings)


def tune_gc() -> None:
    """Every record allocates a few dozen short-lived objects (records, events, states)
    that reference counting frees; with the default thresholds the cycle collector runs
    every 700 allocations and rescans the long-lived heap (clients, caches) each time,
    about a tenth of the loop's CPU. Collect rarely, and never scan what startup made."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 100)
