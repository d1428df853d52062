"""One way for a test suite to run the platform's four services as real processes.

`running_stack` starts them under `ota up` on the shared Kafka, Redis and broker with the
suite's own topic prefix, Redis db, consumer groups and free ports (so suites running at
the same time do not disturb each other), and fast loops (reconciler, sweeper, edge
flushes). On exit it stops them, deletes the suite's topics and flushes its Redis db.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import redis

from ops.demo_env import Ports, StackPlan, redis_url_with_db
from ops.demo_stack import Stack

FAST_LOOPS = {
    "OTA_RECONCILE_INTERVAL_S": "0.2",
    "OTA_WORKER_SWEEP_IDLE_MS": "100",
    "OTA_EDGE_PROGRESS_FLUSH_MS": "100",
}


@contextmanager
def running_stack(
    name: str,
    *,
    kafka_bootstrap: str,
    redis_url: str,
    redis_db: int,
    state_dir: Path,
    partitions: int = 4,
    ports: Ports | None = None,
    extra: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    run = uuid.uuid4().hex[:8]
    url = redis_url_with_db(redis_url, redis_db)
    redis.Redis.from_url(url).flushdb()
    plan = StackPlan(
        state_dir=state_dir,
        name=f"{name}-{run}",
        topic_prefix=f"{name}-{run}.",
        redis_db=redis_db,
        partitions=partitions,
        ports=ports or Ports.free(),
        extra={"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, **FAST_LOOPS, **(extra or {})},
    )
    stack = Stack(plan, base_env={"OTA_REDIS_URL": url, "PATH": "/usr/bin:/bin"})
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        stack.delete_topics()
        redis.Redis.from_url(url).flushdb()
