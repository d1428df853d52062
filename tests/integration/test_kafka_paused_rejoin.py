"""A group member that loses its partitions while they are paused (its session or poll
interval ran out while it was busy) reads them again once it gets them back.

librdkafka keeps a partition's pause across unassign and assign, while the consumer
wrapper forgets its paused set at a revocation, so `resume_all` after the busy spell
resumed nothing and the partitions stayed paused for good: the scheduler's consumers
polled nothing after a Kafka outage longer than their session (lag growing, group
stable). On the real Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kafka.structs import TopicPartition

from ota.kafka_clients import make_consumer, make_producer
from ota.kafka_consumer import RecordConsumer, poll_paused, resume_all
from ota.settings import CommonSettings
from tests.conftest import TopicFactory

SESSION_MS = 6_000  # the broker's smallest allowed session
POLL_INTERVAL_MS = SESSION_MS  # the member leaves once it has not polled for this long
WITHIN_S = 30.0  # a rejoin takes a few seconds; past this the partition stays unread


@pytest.fixture
def settings(kafka_bootstrap: str) -> CommonSettings:
    # confluent-kafka only: kafka-python revokes and rejoins inside one poll, so no poll
    # ever sees the member without its partitions (and it resets a pause at assignment).
    return CommonSettings.from_env(
        {"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, "OTA_KAFKA_CLIENT": "confluent-kafka"}
    )


@pytest.fixture
def member(settings: CommonSettings) -> Iterator[RecordConsumer]:
    consumer = make_consumer(
        settings,
        group_id=f"test-paused-rejoin-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=POLL_INTERVAL_MS,
    )
    yield consumer
    consumer.close()


def _until(done: object, step: object, what: str) -> None:
    deadline = time.monotonic() + WITHIN_S
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        step()  # type: ignore[operator]


class _Revocations:
    def __init__(self, seen: list[list[TopicPartition]]) -> None:
        self._seen = seen

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if revoked:
            self._seen.append(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        pass


def test_partitions_lost_while_paused_are_read_once_assigned_again(
    settings: CommonSettings, member: RecordConsumer, topic_factory: TopicFactory
) -> None:
    topic = topic_factory("paused-rejoin", 1)
    producer = make_producer(settings, client_id="paused-rejoin-test")
    try:
        producer.send(topic, value=b"waiting", key=b"k").get(timeout=30)
    finally:
        producer.close(timeout=10)
    revocations: list[list[TopicPartition]] = []
    member.subscribe([topic], listener=_Revocations(revocations))
    partition = TopicPartition(topic, 0)
    # Busy from the start: paused polls (what a paused poll read is sought back).
    _until(
        lambda: partition in member.assignment(),
        lambda: poll_paused(member, 200),
        "never assigned",
    )
    assert partition in member.paused()
    # The member stops polling past its poll interval: it leaves the group, and its next
    # poll revokes the paused partition.
    time.sleep(POLL_INTERVAL_MS / 1000 + 2)
    # Polls that return at once serve the revocation but cannot also see the rejoin,
    # which waits on Kafka's answers: the busy spell ends between the two, as it does
    # when Kafka answers again after an outage longer than the session.
    _until(lambda: revocations, lambda: poll_paused(member, 0), "never revoked")
    assert partition not in member.assignment()
    resume_all(member)  # the busy spell ends, as AsyncConsumer.while_busy ends it
    read: list[bytes | None] = []

    def poll() -> None:
        read.extend(r.value for batch in member.poll(timeout_ms=200).values() for r in batch)

    _until(lambda: read, poll, "the partition assigned again was never read")
    assert read == [b"waiting"]
