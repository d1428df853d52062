"""Reading a topic from a time on the real Kafka, on both clients (ota/kafka_consumer.py
`read_to_end(since_ms=...)` and `offsets_for_times`): the read starts at each partition's
first record stamped at or after the time, and a partition with none that late reads
nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kafka import KafkaProducer, TopicPartition

from ota.kafka_clients import make_consumer
from ota.kafka_consumer import read_to_end
from ota.settings import KAFKA_CLIENTS, CommonSettings

T0 = 1_700_000_000_000  # record timestamps as producers set them (CreateTime)


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_a_read_since_a_time_starts_at_the_first_record_that_late(
    client: str, kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("since", partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for n in range(6):  # partition 0: stamped T0 .. T0 + 5 s; partition 1: only T0
        producer.send(topic, value=b"p0-%d" % n, partition=0, timestamp_ms=T0 + n * 1000)
    producer.send(topic, value=b"p1-0", partition=1, timestamp_ms=T0)
    producer.flush()
    producer.close()
    settings = CommonSettings.from_env(
        {"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, "OTA_KAFKA_CLIENT": client}
    )
    consumer = make_consumer(settings, group_id=None, client_id=f"since-{client}")
    parts = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    try:
        found = consumer.offsets_for_times(dict.fromkeys(parts, T0 + 2500))
        firsts = consumer.offsets_for_times(dict.fromkeys(parts, 0))
        offsets = {
            (name, tp.partition): None if at is None else at.offset
            for name, answer in (("found", found), ("firsts", firsts))
            for tp, at in answer.items()
        }
        assert offsets == {("found", 0): 3, ("found", 1): None, ("firsts", 0): 0, ("firsts", 1): 0}
        read = [
            r.value
            for _, records in read_to_end(consumer, parts, since_ms=T0 + 2500)
            for r in records
        ]
    finally:
        consumer.close()
    assert read == [b"p0-3", b"p0-4", b"p0-5"]
