"""The services' record producer (ota/kafka_producer.py) against the real Kafka, on both
clients: every record delivered and read back where the other client would put it, a
record Kafka refuses for good failing its delivery (not retriable; on confluent-kafka
without stopping the records after it), flush and partition lookups, and the errors
callers branch on."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from ota.kafka_clients import make_producer
from ota.kafka_errors import KafkaClientError, worth_retrying
from ota.kafka_producer import KafkaPythonProducer, RecordProducer
from ota.settings import KAFKA_CLIENTS, CommonSettings

PARTITIONS = 6


@pytest.fixture(params=KAFKA_CLIENTS)
def producer(request: pytest.FixtureRequest, kafka_bootstrap: str) -> Iterator[RecordProducer]:
    settings = CommonSettings.from_env(
        {"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, "OTA_KAFKA_CLIENT": request.param}
    )
    client = make_producer(settings, client_id=f"producer-test-{request.param}", max_block_ms=5000)
    yield client
    client.close(timeout=10)


def _read_back(bootstrap: str, topic: str, count: int) -> list[tuple[int, bytes, bytes]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        seen: list[tuple[int, bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(seen) < count and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                seen += [(tp.partition, r.key, r.value) for r in records]
        return seen
    finally:
        consumer.close()


def test_every_record_is_delivered_on_the_partition_of_its_key(
    producer: RecordProducer, kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("producer", partitions=PARTITIONS)
    assert producer.partitions_for(topic) == set(range(PARTITIONS))
    settled: list[object] = []
    lock = threading.Lock()
    keys = [f"device-{n}".encode() for n in range(200)]
    deliveries = []
    for key in keys:
        delivery = producer.send(topic, value=b"v-" + key, key=key)
        delivery.add_callback(lambda _meta: settled.append(None))
        delivery.add_errback(lambda exc: settled.append(exc))
        deliveries.append(delivery)
    producer.flush(timeout=30)
    with lock:
        assert settled == [None] * len(keys)
    assert all(d.is_done and not d.failed() for d in deliveries)
    read = _read_back(kafka_bootstrap, topic, len(keys))
    assert sorted(v for _, _, v in read) == sorted(b"v-" + k for k in keys)
    # murmur2 on both clients: a device's records share a partition whichever client sent
    # them (kafka-python's partitioner is the reference; a fresh one computes it here).
    placed = {k: p for p, k, _ in read}
    reference = make_producer(
        CommonSettings.from_env(
            {"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, "OTA_KAFKA_CLIENT": "kafka-python"}
        ),
        client_id="producer-test-reference",
    )
    try:
        for key in keys[:20]:
            meta = reference.send(topic, value=b"ref", key=key).get(timeout=30)
            assert meta.partition == placed[key]
    finally:
        reference.close(timeout=10)


def test_a_record_refused_for_good_fails_alone_and_is_not_worth_retrying(
    producer: RecordProducer, kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("producer-small", partitions=1, configs={"max.message.bytes": "2000"})
    too_large = b"x" * 50_000
    try:
        refused = producer.send(topic, value=too_large, key=b"big")
    except KafkaClientError as exc:  # kafka-python refuses it before it is queued
        assert not worth_retrying(exc)
    else:
        with pytest.raises(KafkaError) as caught:  # KafkaClientError, or kafka-python's own
            refused.get(timeout=30)
        assert refused.failed()
        assert not worth_retrying(caught.value)
    after = producer.send(topic, value=b"fine", key=b"small")
    if isinstance(producer, KafkaPythonProducer):
        # kafka-python 3.0.12's idempotent producer turns such an error into a fatal state
        # that fails every later record (the gateway renews it: ota/kafka_async.py).
        with pytest.raises(KafkaError):
            after.get(timeout=30)
        return
    after.get(timeout=30)  # librdkafka refuses the one record and goes on
    assert not after.failed()
    assert [v for _, _, v in _read_back(kafka_bootstrap, topic, 1)] == [b"fine"]


def test_an_unknown_topic_has_no_partitions(producer: RecordProducer) -> None:
    # The local stack does not create topics on first use (docs/operations.md).
    missing = f"test.missing.{uuid.uuid4().hex[:12]}"
    try:
        assert producer.partitions_for(missing) is None
    except KafkaClientError as exc:  # kafka-python waits max_block_ms for it, then gives up
        assert exc.retriable
