"""Fixtures of the worker's fault tests: the integration kit, on Redis db 14."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from workers.settings import WorkerSettings

# The kit lives with the integration tests; these folders are no packages (they would
# shadow `workers`).
sys.path.insert(0, str(Path(__file__).parents[2] / "integration" / "workers"))
from workerkit import Inbox, make_settings, make_topics, worker_redis, worker_redis_url


@pytest.fixture
def wredis(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    yield from worker_redis(worker_redis_url(redis_url))


@pytest.fixture
def wsettings(
    kafka_bootstrap: str,
    redis_url: str,
    topic_factory: Callable[..., str],
    wredis: redis.Redis[bytes],
) -> WorkerSettings:
    return make_settings(
        kafka_bootstrap, worker_redis_url(redis_url), make_topics(topic_factory, 4)
    )


@pytest.fixture
def inbox(wsettings: WorkerSettings) -> Iterator[Inbox]:
    writer = Inbox(wsettings)
    yield writer
    writer.close()
