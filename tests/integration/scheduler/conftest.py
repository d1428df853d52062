"""Fixtures of the scheduler's integration tests: a live scheduler per test (see sched_harness),
and for tests of the scheduler's Redis code without one: `aredis`, an asyncio client on the
scheduler's flushed db, `registry`, the device registry on it (its producer unused), and
`webhooks`, the webhook registrations on it (recorded on a topic of their own)."""

from __future__ import annotations

import dataclasses
import fcntl
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from ota.redis_clients import make_async_redis, make_redis
from ota.settings import CommonSettings, Topics
from scheduler.bus import Producer
from scheduler.devices import Registry
from scheduler.secretbox import DEV_CREDENTIAL_KEYS, WEBHOOK_SECRETS, CredentialKeys, SecretBox
from scheduler.webhooks import Webhooks
from tests.integration.scheduler.sched_harness import REDIS_DB, Harness, db_url, make_settings
from tests.redis_cluster_kit import PrivateRedisCluster


@pytest.fixture
def sched_topics(topic_factory: Any) -> Topics:
    names = {}
    for field in dataclasses.fields(Topics):
        partitions = 3 if field.name in ("inbox", "job_events") else 1
        names[field.name] = topic_factory(f"sched-{field.name}", partitions)
    return Topics(**names)


LOCK_PATH = Path(tempfile.gettempdir()) / f"ota-scheduler-tests-db{REDIS_DB}.lock"
LOCK_WAIT_S = 240.0


@pytest.fixture
def sched_redis_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The scheduler's Redis: this suite's db of the stack's Redis, or with the parameter
    "cluster" (`pytest.mark.parametrize("sched_redis_url", ..., indirect=True)`) the
    session's private Redis Cluster, the credential store staying on the db."""
    if getattr(request, "param", "standalone") == "cluster":
        cluster: PrivateRedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    return db_url(redis_url)


ON_BOTH = pytest.mark.parametrize("sched_redis_url", ["standalone", "cluster"], indirect=True)


@pytest.fixture
def sched_redis(redis_url: str, sched_redis_url: str) -> Iterator[redis.Redis[bytes]]:
    """The scheduler's Redis, flushed, held for this test only: concurrent runs of this
    suite on the same machine (a developer and CI) take turns per test instead of flushing
    each other. On a cluster, FLUSHDB empties every master; the credential store on db 11
    is flushed too."""
    with LOCK_PATH.open("a") as lock:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another run held {LOCK_PATH} for {LOCK_WAIT_S:.0f}s")
                time.sleep(0.2)
        stores = [redis.Redis.from_url(db_url(redis_url))]
        assert stores[0].connection_pool.connection_kwargs["db"] == REDIS_DB
        if sched_redis_url != db_url(redis_url):
            stores.insert(0, make_redis(CommonSettings.from_env({}), sched_redis_url))
        for store in stores:
            store.flushdb()
        try:
            yield stores[0]
        finally:
            for store in stores:
                store.flushdb()
                store.close()
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
async def aredis(
    sched_redis_url: str, sched_redis: redis.Redis[bytes]
) -> AsyncIterator[redis.asyncio.Redis[bytes]]:
    client = make_async_redis(CommonSettings.from_env({}), sched_redis_url)
    try:
        yield client
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


@pytest.fixture
def timeline_cap() -> int:
    return 50  # a test trims timelines by parametrizing a smaller one


@pytest.fixture
def timeline_retention_ms() -> int:
    return 0  # timelines never expire: tests stamp events long ago (a test parametrizes it)


@pytest.fixture
async def registry(
    aredis: redis.asyncio.Redis[bytes],
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    timeline_cap: int,
    timeline_retention_ms: int,
) -> AsyncIterator[Registry]:
    topics = Topics.with_prefix(f"t-{uuid.uuid4().hex[:8]}.")  # nothing is produced here
    producer = Producer(make_settings(kafka_bootstrap, redis_url, tmp_path, topics).common)
    try:
        yield Registry(aredis, producer, topics, timeline_cap, timeline_retention_ms)
    finally:
        await producer.close()


@pytest.fixture
async def webhooks(
    aredis: redis.asyncio.Redis[bytes],
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    topic_factory: Any,
) -> AsyncIterator[Webhooks]:
    topics = Topics(webhooks=topic_factory("sched-webhooks"))
    producer = Producer(make_settings(kafka_bootstrap, redis_url, tmp_path, topics).common)
    box = SecretBox(CredentialKeys.parse(DEV_CREDENTIAL_KEYS), WEBHOOK_SECRETS)
    try:
        yield Webhooks(aredis, producer, topics.webhooks, box)
    finally:
        await producer.close()


@pytest.fixture
async def harness(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    sched_topics: Topics,
    sched_redis_url: str,
    sched_redis: redis.Redis[bytes],
) -> AsyncIterator[Harness]:
    h = Harness(make_settings(kafka_bootstrap, redis_url, tmp_path, sched_topics, sched_redis_url))
    await h.start()
    try:
        yield h
    finally:
        await h.close()


StartHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def start_harness(
    kafka_bootstrap: str,
    redis_url: str,
    tmp_path: Path,
    sched_topics: Topics,
    sched_redis_url: str,
    sched_redis: redis.Redis[bytes],
) -> AsyncIterator[StartHarness]:
    """Start a scheduler with extra OTA_ environment settings (for limits, keys, restarts)."""
    started: list[Harness] = []

    async def start(**env: str) -> Harness:
        settings = make_settings(
            kafka_bootstrap, redis_url, tmp_path, sched_topics, sched_redis_url, **env
        )
        h = Harness(settings)
        started.append(h)
        await h.start()
        return h

    try:
        yield start
    finally:
        for h in started:
            await h.close()
