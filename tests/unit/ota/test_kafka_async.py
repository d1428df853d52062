"""The asyncio producer's cached key -> partition mapping is the one every other producer uses
(kafka-python's default partitioner, the Java client's murmur2), so a device's records
from the gateway and from the other services share a partition."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from ota.kafka_async import AsyncProducer


class _Cluster:
    def __init__(self, partitions: int) -> None:
        self._partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, _topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, _topic: str) -> set[int]:
        return self._partitions


class _Producer:
    def __init__(self, partitions: int) -> None:
        self.partitions = partitions

    def partitions_for(self, _topic: str) -> set[int]:
        return set(range(self.partitions))

    def knows(self, _topic: str) -> bool:
        return True


@given(st.text(min_size=1, max_size=64), st.sampled_from([1, 3, 12, 50]))
def test_partition_matches_the_default_partitioner(device_id: str, partitions: int) -> None:
    loop = asyncio.new_event_loop()
    try:
        bridge = AsyncProducer(_Producer(partitions), loop)
        key = device_id.encode()
        expected = DefaultPartitioner().partition("t", None, key, None, None, _Cluster(partitions))
        assert bridge._partition("t", key) == expected
        assert bridge._partition("t", key) == expected  # cached
    finally:
        loop.close()


def test_keys_map_anew_when_the_topic_gains_partitions() -> None:
    loop = asyncio.new_event_loop()
    try:
        producer = _Producer(3)
        bridge = AsyncProducer(producer, loop)
        keys = [f"dev-{n}".encode() for n in range(50)]
        before = [bridge._partition("t", key) for key in keys]
        producer.partitions = 12
        bridge._refresh()
        after = [bridge._partition("t", key) for key in keys]
        cluster = _Cluster(12)
        assert after == [
            DefaultPartitioner().partition("t", None, key, None, None, cluster) for key in keys
        ]
        assert after != before
    finally:
        loop.close()
