"""The asyncio producer's cached key -> partition mapping is the one every other producer uses
(kafka-python's default partitioner, the Java client's murmur2), so a device's records
from the gateway and from the other services share a partition."""

from __future__ import annotations

import asyncio

import pytest
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
    partitions_keys = False

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


class _Recorded:
    """A delivery that never settles: only the partition handed over matters here."""

    def add_callback(self, _fn: object) -> _Recorded:
        return self

    def add_errback(self, _fn: object) -> _Recorded:
        return self


class _RecordingProducer(_Producer):
    def __init__(self, partitions: int, partitions_keys: bool) -> None:
        super().__init__(partitions)
        self.partitions_keys = partitions_keys
        self.sent: list[int | None] = []

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> _Recorded:
        self.sent.append(partition)
        return _Recorded()

    def wakeups(self) -> _NoWakeups:
        return _NoWakeups()


class _NoWakeups:
    def hold(self) -> None: ...

    def release(self) -> None: ...


@pytest.mark.parametrize("partitions_keys", [True, False])
def test_a_keyed_record_carries_a_partition_only_for_a_client_that_does_not_compute_it(
    partitions_keys: bool,
) -> None:
    loop = asyncio.new_event_loop()
    try:
        producer = _RecordingProducer(12, partitions_keys)
        bridge = AsyncProducer(producer, loop)  # type: ignore[arg-type]
        bridge.produce("t", b"dev-1", b"v", lambda _error: None)
        expected = None if partitions_keys else bridge._partition("t", b"dev-1")
        assert producer.sent == [expected]
        assert partitions_keys or expected is not None
    finally:
        loop.close()
