"""Fixtures of the worker's integration tests (Redis db 14 is the worker tests' own)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from workers.settings import WorkerSettings

# The kit sits next to this file; this folder is no package (it would shadow `workers`).
sys.path.insert(0, str(Path(__file__).parent))
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
