"""The mark that tells a running scheduler Redis was emptied under it.

Each start sets `keys.RESTORED` once it restored what Redis lacked (scheduler/rebuild.py).
Redis emptied while the scheduler runs (FLUSHALL, a restart without persistence) takes
the mark with everything else: the reconciler's periodic look and every job-event batch
find it gone and stop the service (`RedisFlushedError`) before anything is paced or
applied into the empty Redis, so the start that follows rebuilds it from Kafka, and the
job events after the consumer group's last commit are applied, and notified, then.
"""

from __future__ import annotations

import redis.asyncio

from ota.clock import now_ms
from scheduler import keys


class RedisFlushedError(RuntimeError):
    """Redis was emptied under a running scheduler: only a start rebuilds what it held."""


async def set_mark(r: redis.asyncio.Redis[bytes]) -> None:
    await r.set(keys.RESTORED, now_ms())


async def check_mark(r: redis.asyncio.Redis[bytes]) -> None:
    """Raise `RedisFlushedError` when the start's mark is gone."""
    if not await r.exists(keys.RESTORED):
        raise RedisFlushedError(
            "Redis lost the scheduler's state while it ran (the start-up's mark is gone); "
            "stopping, so that a start restores it from Kafka"
        )
