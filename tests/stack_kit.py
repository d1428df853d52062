"""One way for a test suite to run the platform's four services as real processes.

`running_stack` starts them under `ota up` on the shared Kafka, Redis and broker with the
suite's own topic prefix, Redis db, consumer groups and free ports (so suites running at
the same time do not disturb each other), and fast loops (reconciler, sweeper, edge
flushes). On exit it stops them, deletes the suite's topics and flushes its Redis db.

A stack owns its Redis db while it runs: two sessions on one machine (two engineers, or
an engineer and CI) that start stacks on the same db take turns, because each flushes the
db at its start and end and would wipe the other's tasks and jobs mid-rollout.
"""

from __future__ import annotations

import fcntl
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

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
    replicas: int = 1,
    min_insync_replicas: int | None = None,
    ports: Ports | None = None,
    extra: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    run = uuid.uuid4().hex[:8]
    url = redis_url_with_db(redis_url, redis_db)
    plan = StackPlan(
        state_dir=state_dir,
        name=f"{name}-{run}",
        topic_prefix=f"{name}-{run}.",
        redis_db=redis_db,
        partitions=partitions,
        replicas=replicas,
        min_insync_replicas=min_insync_replicas,
        ports=ports or Ports.free(),
        extra={"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, **FAST_LOOPS, **(extra or {})},
    )
    with _owning(url):
        redis.Redis.from_url(url).flushdb()
        stack = Stack(
            plan, base_env={"OTA_REDIS_URL": url, "PATH": "/usr/bin:/bin"}, die_with_caller=True
        )
        stack.start()
        try:
            yield stack
        finally:
            stack.stop()
            stack.delete_topics()
            redis.Redis.from_url(url).flushdb()


@contextmanager
def _owning(redis_db_url: str) -> Iterator[None]:
    """Hold this Redis db for one stack at a time on this machine (a lock file per db)."""
    parts = urlsplit(redis_db_url)
    db = parts.path.strip("/")
    lock_path = Path(tempfile.gettempdir()) / f"ota-stack-{parts.hostname}-{parts.port}-db{db}.lock"
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[stack] waiting for the other stack on {redis_db_url}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when that session's stack stops
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
