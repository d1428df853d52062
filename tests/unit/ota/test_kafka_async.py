"""The asyncio producer's cached key -> partition mapping is the one every other producer uses
(kafka-python's default partitioner, the Java client's murmur2), so a device's records
from the gateway and from the other services share a partition."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from ota.kafka_async import AsyncProducer
from ota.kafka_errors import KafkaClientError


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


class _RecordingProducer(_Producer):
    """Keeps each record's partition and completion; settles nothing by itself."""

    def __init__(self, partitions: int, partitions_keys: bool) -> None:
        super().__init__(partitions)
        self.partitions_keys = partitions_keys
        self.sent: list[int | None] = []
        self.completions: list[Callable[[Any], object]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        on_done: Callable[[Any], object],
    ) -> None:
        self.sent.append(partition)
        self.completions.append(on_done)

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


async def test_answers_from_the_client_thread_reach_the_loop_each_once_in_order() -> None:
    """The client's thread settles records while the loop drains earlier answers: every
    answer runs once, on the loop, in the order the client gave them."""
    loop = asyncio.get_running_loop()
    producer = _RecordingProducer(12, partitions_keys=True)
    bridge = AsyncProducer(producer, loop)  # type: ignore[arg-type]
    records = 20_000
    seen: list[tuple[int, str | None]] = []
    all_in = asyncio.Event()

    def on_done(index: int, error: BaseException | None) -> None:
        assert threading.current_thread() is threading.main_thread()
        seen.append((index, None if error is None else type(error).__name__))
        if len(seen) == records:
            all_in.set()

    for index in range(records):
        bridge.produce("t", b"dev", b"v", lambda error, index=index: on_done(index, error))

    def settle() -> None:  # as the client's delivery thread does
        for index, complete in enumerate(producer.completions):
            complete(KafkaClientError("refused", retriable=True) if index % 7 == 0 else None)

    client = threading.Thread(target=settle)
    client.start()
    await asyncio.wait_for(all_in.wait(), 30)
    client.join()
    # Every drain the client scheduled is queued on the loop before this marker: once it
    # runs, a late drain has run too, and it must have found nothing to run twice.
    drained = asyncio.Event()
    loop.call_soon_threadsafe(drained.set)
    await asyncio.wait_for(drained.wait(), 30)
    assert seen == [(n, "KafkaClientError" if n % 7 == 0 else None) for n in range(records)]
