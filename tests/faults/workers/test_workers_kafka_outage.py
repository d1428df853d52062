"""A deadline that passes while Kafka is down is a pause, not a timeout.

A worker (and its sweeper) on a private one-node Kafka asks a device its version, with a
short version window. Kafka is killed and stays down until that window has passed; once
it answers again the device's answer is written to the inbox. The sweeper must not have
fired the timeout into the dead Kafka, nor fire it as soon as Kafka returns: the job
ends SUCCEEDED on the device's answer, with no failure and no timeout.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from workerkit import (
    SHORT,
    TARGET,
    Inbox,
    Reader,
    ThreadWorker,
    make_settings,
    reached,
    transitions,
    worker_redis,
    worker_redis_url,
)

from ota.records import TimeoutRecord
from ota.redis_clients import make_redis
from ota.settings import Topics
from tests.kafka_kit import PrivateKafka, running_kafka
from tests.waiting import wait_until
from workers.settings import WorkerSettings
from workers.store import Store

VERSION_S = 4  # the version window: it ends while Kafka is down
GRACE_MS = 8_000  # what the worker adds to the outage before held deadlines fire
INBOX_PARTITIONS = 2


@pytest.fixture
def kafka_node(tmp_path: Path) -> Iterator[PrivateKafka]:
    with running_kafka(tmp_path / "kafka", partitions=2) as node:
        yield node


@pytest.fixture
def outage_redis_url(redis_url: str) -> Iterator[str]:
    url = worker_redis_url(redis_url)
    for _client in worker_redis(url):  # flushed before and after
        yield url


def _topics(bootstrap: str) -> Topics:
    run = uuid.uuid4().hex[:8]
    topics = replace(
        Topics(),
        inbox=f"outage.inbox.{run}",
        commands=f"outage.commands.{run}",
        job_events=f"outage.job-events.{run}",
        dead_letters=f"outage.dead-letters.{run}",
    )
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(topics.inbox, INBOX_PARTITIONS, 1),
                *(NewTopic(t, 1, 1) for t in (topics.commands, topics.job_events)),
                NewTopic(topics.dead_letters, 1, 1),
            ],
            timeout_ms=30_000,
        )
    finally:
        admin.close()
    return topics


def _stored_deadline(settings: WorkerSettings, device: str) -> int:
    """The device's deadline as the workers stored it (epoch ms)."""
    store = Store(make_redis(settings.common))
    try:
        scores = [
            store.client.zscore(store.keys(p).deadlines, device) for p in range(INBOX_PARTITIONS)
        ]
    finally:
        store.client.close()
    [deadline] = [int(score) for score in scores if score is not None]
    return deadline


def _whole_topic(bootstrap: str, topic: str) -> list[object]:
    """Every record of `topic`, up to its end offsets as they are now."""
    reader = Reader(bootstrap, topic)
    try:
        parts = list(reader.consumer.assignment())
        ends = reader.consumer.end_offsets(parts)
        consumer = reader.consumer
        return reader.wait(lambda _: all(consumer.position(p) >= ends[p] for p in parts), 30)
    finally:
        reader.close()


# kafka-python 3.0.12 leaves the socket of every refused connection to the garbage
# collector, and the worker's clients are refused while Kafka is down.
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python"])
def test_a_deadline_passed_while_kafka_was_down_waits_for_the_devices_answer(
    client: str, kafka_node: PrivateKafka, outage_redis_url: str
) -> None:
    settings = make_settings(
        kafka_node.bootstrap,
        outage_redis_url,
        _topics(kafka_node.bootstrap),
        outage_grace_ms=GRACE_MS,
    )
    settings = replace(settings, common=replace(settings.common, kafka_client=client))
    device = f"dev-{uuid.uuid4().hex[:10]}"
    worker = ThreadWorker(settings)
    try:
        inbox = Inbox(settings)
        inbox.online(device)
        inbox.start(device, "task-outage", windows=replace(SHORT, version_s=VERSION_S))
        inbox.close()
        events = Reader(settings.common.kafka_bootstrap, settings.common.topics.job_events)
        events.wait(lambda rs: reached(rs, device, "QUERYING_VERSION"))
        events.close()
        deadline_ms = _stored_deadline(settings, device)
        kafka_node.kill()
        # Down until the sweeper, finding Kafka silent, has probed past the job's deadline.
        wait_until(
            lambda: worker.sweeper.outages.down and (worker.sweeper.probed_ms or 0) > deadline_ms,
            VERSION_S + 30,
            "the sweeper probing a silent Kafka past the deadline",
        )
        kafka_node.start()
        inbox = Inbox(settings)
        inbox.version(device, TARGET)  # the device's answer, held up by the outage
        inbox.close()
        events = Reader(settings.common.kafka_bootstrap, settings.common.topics.job_events)
        got = events.wait(
            lambda rs: reached(rs, device, "SUCCEEDED") or reached(rs, device, "FAILED"), 120
        )
        events.close()
        # The job may end before the sweeper's next probe finds Kafka answering again.
        wait_until(lambda: not worker.sweeper.outages.down, 30, "the sweeper finding Kafka back")
        held = worker.sweeper.outages.pause
        written = _whole_topic(settings.common.kafka_bootstrap, settings.common.topics.inbox)
    finally:
        worker.stop()
    assert [(f, t) for _, f, t in transitions(got, device)] == [
        ("QUEUED", "QUERYING_VERSION"),
        ("QUERYING_VERSION", "SUCCEEDED"),
    ]
    assert held is not None
    assert held.by_ms >= VERSION_S * 1000 + GRACE_MS
    assert not [r for r in written if isinstance(r, TimeoutRecord) and r.device_id == device]
