"""Download records on the inbox topic, across resumed requests and edge replicas.

Uses the real Kafka and Redis (the edge's test db, 12).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from kafka import KafkaProducer, TopicPartition

from ota.kafka_clients import make_consumer, make_producer
from ota.records import DownloadPhase, DownloadRecord, decode_inbox
from ota.settings import CommonSettings, Topics

from .edge_support import EdgeFactory, Package, RunningEdge, get

EDGE_TEST_DB = 12


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis[bytes]]:
    # A URL's db path wins over a `db=` argument in redis-py, so the path is replaced.
    url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{EDGE_TEST_DB}"))
    client: redis.Redis[bytes] = redis.Redis.from_url(url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def inbox(topic_factory: Callable[..., str]) -> str:
    return topic_factory("edge-inbox", partitions=1)


@pytest.fixture
def kafka_settings(common: CommonSettings, kafka_bootstrap: str, inbox: str) -> CommonSettings:
    return replace(common, kafka_bootstrap=kafka_bootstrap, topics=replace(Topics(), inbox=inbox))


@pytest.fixture
def sink(kafka_settings: CommonSettings) -> Iterator[KafkaProducer]:
    producer = make_producer(kafka_settings, client_id="edge-test", max_block_ms=10_000)
    yield producer
    producer.close(timeout=10)


@pytest.fixture
def event_edge_factory(
    edge_factory: EdgeFactory,
    kafka_settings: CommonSettings,
    store: redis.Redis[bytes],
    sink: KafkaProducer,
) -> Callable[[], RunningEdge]:
    return lambda: edge_factory(
        store=store, sink=sink, events=True, common=kafka_settings, progress_flush_ms=20
    )


def records(settings: CommonSettings, want: int, device_id: str) -> list[DownloadRecord]:
    """The device's download records, waiting (bounded) until `want` arrived."""
    consumer = make_consumer(settings, group_id=None, consumer_timeout_ms=500)
    consumer.assign([TopicPartition(settings.topics.inbox, 0)])
    consumer.seek_to_beginning()
    found: list[DownloadRecord] = []
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            for message in consumer.poll(timeout_ms=200).get(
                TopicPartition(settings.topics.inbox, 0), []
            ):
                record = decode_inbox(message.value)
                assert message.key == record.device_id.encode()
                if isinstance(record, DownloadRecord) and record.device_id == device_id:
                    found.append(record)
            if len(found) >= want:
                time.sleep(0.3)  # long enough to catch an unexpected extra record
                found += [
                    r
                    for r in (
                        decode_inbox(m.value)
                        for batch in consumer.poll(timeout_ms=300).values()
                        for m in batch
                    )
                    if isinstance(r, DownloadRecord) and r.device_id == device_id
                ]
                break
    finally:
        consumer.close()
    return found


def fetch(edge: RunningEdge, package: Package, token: str, range_header: str | None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"}
    if range_header:
        headers["Range"] = range_header
    reply, body = get(edge, package.path, headers)
    assert reply.status in (200, 206)
    return body


def test_started_then_finished_across_resumed_requests(
    event_edge_factory: Callable[[], RunningEdge],
    package: Package,
    token_for: Callable[..., str],
    kafka_settings: CommonSettings,
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    edge = event_edge_factory()
    token = token_for(package.sha256, device_id=device)
    body = fetch(edge, package, token, "bytes=0-999999")
    body += fetch(edge, package, token, "bytes=1000000-1999999")
    body += fetch(edge, package, token, "bytes=1000000-")[1000000:]  # overlap is fine
    assert body == package.data
    seen = records(kafka_settings, 2, device)
    assert [(r.phase, r.package_sha256) for r in seen] == [
        (DownloadPhase.STARTED, package.sha256),
        (DownloadPhase.FINISHED, package.sha256),
    ]


def test_partial_download_only_starts(
    event_edge_factory: Callable[[], RunningEdge],
    package: Package,
    token_for: Callable[..., str],
    kafka_settings: CommonSettings,
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    edge = event_edge_factory()
    token = token_for(package.sha256, device_id=device)
    fetch(edge, package, token, "bytes=0-99")
    fetch(edge, package, token, "bytes=-100")
    get(edge, package.path, {"Authorization": f"Bearer {token}"}, method="HEAD")
    assert [r.phase for r in records(kafka_settings, 1, device)] == [DownloadPhase.STARTED]


def test_finished_on_another_replica(
    event_edge_factory: Callable[[], RunningEdge],
    package: Package,
    token_for: Callable[..., str],
    kafka_settings: CommonSettings,
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    first, second = event_edge_factory(), event_edge_factory()
    token = token_for(package.sha256, device_id=device)
    fetch(first, package, token, "bytes=0-1499999")
    fetch(second, package, token, "bytes=1500000-")
    # Each replica produces what its own Redis update decided, so across replicas the
    # two records may reach the topic in either order; each appears exactly once.
    phases = sorted(r.phase for r in records(kafka_settings, 2, device))
    assert phases == [DownloadPhase.FINISHED, DownloadPhase.STARTED]


def test_download_again_after_finishing_is_a_new_cycle(
    event_edge_factory: Callable[[], RunningEdge],
    package: Package,
    token_for: Callable[..., str],
    kafka_settings: CommonSettings,
    store: redis.Redis[bytes],
) -> None:
    device = f"dev-{uuid.uuid4().hex[:8]}"
    edge = event_edge_factory()
    token = token_for(package.sha256, device_id=device)
    fetch(edge, package, token, None)
    records(kafka_settings, 2, device)
    fetch(edge, package, token, None)
    phases = [r.phase for r in records(kafka_settings, 4, device)]
    assert phases == [DownloadPhase.STARTED, DownloadPhase.FINISHED] * 2
    assert store.ttl(f"ota:edge:dl:{package.sha256}:{device}") > 0
