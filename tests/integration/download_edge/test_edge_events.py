"""Download records on the inbox topic, across resumed requests and edge replicas.

Uses the real Kafka and Redis: each test runs on the shared Redis (the edge's test db, 12)
and on a private three-master Redis Cluster.
"""

from __future__ import annotations

import http.client
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from kafka import TopicPartition

from download_edge.progress import ProgressRecorder, hash_key, outbox_key, shard_of
from ota.kafka_clients import make_consumer, make_producer
from ota.kafka_producer import RecordProducer
from ota.records import DownloadPhase, DownloadRecord, decode_inbox
from ota.redis_clients import make_redis
from ota.settings import CommonSettings, Topics
from tests.redis_cluster_kit import PrivateRedisCluster, running_cluster

from .edge_support import EdgeFactory, Package, RunningEdge, get

EDGE_TEST_DB = 12


@pytest.fixture(params=["standalone", "cluster"])
def store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[redis.Redis[bytes]]:
    # A URL's db path wins over a `db=` argument in redis-py, so the path is replaced.
    url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{EDGE_TEST_DB}"))
    if request.param == "cluster":
        cluster: PrivateRedisCluster = request.getfixturevalue("redis_cluster")
        url = cluster.url
    client = make_redis(CommonSettings.from_env({}), url)
    client.flushdb()  # on a cluster: every master
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
def sink(kafka_settings: CommonSettings) -> Iterator[RecordProducer]:
    producer = make_producer(kafka_settings, client_id="edge-test", max_block_ms=10_000)
    yield producer
    producer.close(timeout=10)


@pytest.fixture
def event_edge_factory(
    edge_factory: EdgeFactory,
    kafka_settings: CommonSettings,
    store: redis.Redis[bytes],
    sink: RecordProducer,
) -> Callable[[], RunningEdge]:
    return lambda: edge_factory(
        store=store, sink=sink, events=True, common=kafka_settings, progress_flush_ms=20
    )


def records(settings: CommonSettings, want: int, device_id: str) -> list[DownloadRecord]:
    """The device's download records, waiting (bounded) until `want` arrived."""
    consumer = make_consumer(settings, group_id=None)
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


def test_finished_by_small_ranges_on_one_connection(
    event_edge_factory: Callable[[], RunningEdge],
    package: Package,
    token_for: Callable[..., str],
    kafka_settings: CommonSettings,
) -> None:
    """A device with little RAM: 16 KiB ranges on one keep-alive connection (the edge's
    small-range shortcut after the first) still make one started and one finished."""
    device = f"dev-{uuid.uuid4().hex[:8]}"
    edge = event_edge_factory()
    auth = {"Authorization": f"Bearer {token_for(package.sha256, device_id=device)}"}
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    body = b""
    span = 16 * 1024
    for start in range(0, len(package.data), span):
        conn.request(
            "GET", package.path, headers={**auth, "Range": f"bytes={start}-{start + span - 1}"}
        )
        reply = conn.getresponse()
        assert reply.status == 206
        body += reply.read()
    conn.close()
    assert body == package.data
    seen = records(kafka_settings, 2, device)
    assert [(r.phase, r.package_sha256) for r in seen] == [
        (DownloadPhase.STARTED, package.sha256),
        (DownloadPhase.FINISHED, package.sha256),
    ]
    assert seen[1].bytes_served == len(package.data)


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


def test_a_finished_download_is_forgotten_once_kafka_has_its_records(
    store: redis.Redis[bytes], sink: RecordProducer, kafka_settings: CommonSettings
) -> None:
    device, sha = f"dev-{uuid.uuid4().hex[:8]}", "bc" * 32
    recorder = ProgressRecorder(store, sink, kafka_settings.topics.inbox, flush_ms=20, ttl_s=600)
    recorder.note(device, sha, 100, 0, 100)
    recorder.flush_once()
    assert store.hget(hash_key(device, sha), "fin") == b"1"  # kept while its records are owed
    sink.flush(timeout=10)
    recorder.flush_once()  # takes in Kafka's acknowledgements
    assert store.exists(hash_key(device, sha)) == 0
    assert store.zcard(outbox_key(shard_of(device))) == 0
    recorder.note(device, sha, 100, 60, 100)  # fetched again from the middle: a new cycle
    recorder.flush_once()
    sink.flush(timeout=10)
    recorder.flush_once()
    phases = [r.phase for r in records(kafka_settings, 3, device)]
    assert phases == [DownloadPhase.STARTED, DownloadPhase.FINISHED, DownloadPhase.STARTED]
    assert store.hget(hash_key(device, sha), "iv") == b"60:100"  # unfinished: kept


class DiedBeforeProducing:
    """An edge that updated Redis, then died before its records reached Kafka."""

    def send(self, topic: str, *, key: bytes, value: bytes) -> None:
        return None

    def flush(self, timeout: float | None = None) -> None:
        return None


def test_records_lost_in_a_crash_are_produced_again_by_the_next_edge(
    store: redis.Redis[bytes],
    sink: RecordProducer,
    kafka_settings: CommonSettings,
) -> None:
    device, sha = f"dev-{uuid.uuid4().hex[:8]}", "ab" * 32
    crashed = ProgressRecorder(
        store, DiedBeforeProducing(), kafka_settings.topics.inbox, flush_ms=20, ttl_s=600
    )
    crashed.note(device, sha, 100, 0, 100)
    crashed.flush_once()  # the Redis update happened; the produce never did
    outbox = outbox_key(shard_of(device))
    assert store.zcard(outbox) == 1
    stamped = [int(at) for at in store.hmget(hash_key(device, sha), ["ps", "pf"])]

    successor = ProgressRecorder(
        store, sink, kafka_settings.topics.inbox, flush_ms=20, ttl_s=600, resend_after_ms=0
    )
    assert successor.resend_unacknowledged() == 2
    sink.flush(timeout=10)
    successor.flush_once()  # takes in Kafka's acknowledgements
    seen = records(kafka_settings, 2, device)
    assert [r.phase for r in seen] == [DownloadPhase.STARTED, DownloadPhase.FINISHED]
    assert [r.at_ms for r in seen] == stamped  # the very records the dead edge owed
    assert store.zcard(outbox) == 0
    assert successor.resend_unacknowledged() == 0


def test_acknowledged_records_leave_the_outbox(
    store: redis.Redis[bytes], sink: RecordProducer, kafka_settings: CommonSettings
) -> None:
    device, sha = f"dev-{uuid.uuid4().hex[:8]}", "cd" * 32
    recorder = ProgressRecorder(store, sink, kafka_settings.topics.inbox, flush_ms=20, ttl_s=600)
    recorder.note(device, sha, 100, 0, 40)
    recorder.flush_once()
    recorder.note(device, sha, 100, 40, 100)
    recorder.flush_once()
    sink.flush(timeout=10)
    recorder.flush_once()
    assert store.zcard(outbox_key(shard_of(device))) == 0
    assert store.exists(hash_key(device, sha)) == 0  # finished and acknowledged: forgotten
    assert len(records(kafka_settings, 2, device)) == 2


def test_an_unreachable_cluster_is_waited_out_like_a_down_redis(tmp_path: Path) -> None:
    # RedisCluster raises its own errors, no RedisErrors, once no node answers: the
    # recorder's thread must survive them and keep the merged notes for the next flush.
    device, sha = f"dev-{uuid.uuid4().hex[:8]}", "ef" * 32
    with running_cluster(tmp_path) as cluster:
        store = make_redis(CommonSettings.from_env({}), cluster.url)
        recorder = ProgressRecorder(store, DiedBeforeProducing(), "unused", flush_ms=20, ttl_s=600)
        recorder.note(device, sha, 100, 0, 40)
        recorder.flush_once()
        assert store.hget(hash_key(device, sha), "iv") == b"0:40"
        cluster.stop()
        recorder.note(device, sha, 100, 40, 100)
        recorder.flush_once()  # raised RedisClusterUnreachableError out of the thread before
        assert recorder.pending() == 1


def test_progress_survives_a_killed_cluster_master(tmp_path: Path) -> None:
    # Every master killed with -9 in turn, each replaced by its replica: the merged notes
    # wait in the recorder until the new masters answer, and the download still finishes.
    device, sha = f"dev-{uuid.uuid4().hex[:8]}", "fa" * 32
    with running_cluster(tmp_path, replicas=True) as cluster:
        store = make_redis(CommonSettings.from_env({}), cluster.url)
        recorder = ProgressRecorder(store, DiedBeforeProducing(), "unused", flush_ms=20, ttl_s=600)
        recorder.note(device, sha, 100, 0, 40)
        recorder.flush_once()
        for master in range(cluster.masters):
            cluster.kill_master(master)
        recorder.note(device, sha, 100, 40, 100)
        deadline = time.monotonic() + 30
        recorder.flush_once()
        while recorder.pending():  # the client finds the new masters within a few tries
            assert time.monotonic() < deadline, "the notes never reached the new masters"
            recorder.flush_once()
        assert store.hmget(hash_key(device, sha), ["iv", "fin"]) == [b"0:100", b"1"]
        assert store.zcard(outbox_key(shard_of(device))) == 1  # owed records still listed
