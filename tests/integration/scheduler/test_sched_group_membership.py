"""The scheduler's consumers stay in (or get back into) their group on the real Kafka:
a batch slower than max_poll_interval_ms, and a member of the group going away."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewPartitions

from ota.kafka_clients import make_consumer
from ota.settings import CommonSettings
from scheduler.bus import Consumer

# Small bounds so the slow batch below outlasts max_poll_interval_ms twice over.
FAST_GROUP: dict[str, Any] = {
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 1_000,
    "max_poll_interval_ms": 6_000,  # librdkafka's least: the session timeout
}
WAIT_S = 60.0


def _produce(bootstrap: str, topic: str, values: Sequence[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for value in values:
        producer.send(topic, key=value.encode(), value=value.encode())
    producer.flush(30)
    producer.close()


def _committed(bootstrap: str, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return sum(o.offset for o in offsets.values())
    finally:
        admin.close()


async def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_a_batch_slower_than_the_poll_interval_keeps_the_member(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory("sched-membership-slow", 2)
    group = f"test-sched-slow-{uuid.uuid4().hex[:8]}"
    settings = CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap})
    seen: list[str] = []
    slow_once = asyncio.Event()

    async def handler(records: Sequence[Any]) -> None:
        if not slow_once.is_set():
            slow_once.set()
            await asyncio.sleep(2 * FAST_GROUP["max_poll_interval_ms"] / 1000)
        seen.extend(r.value.decode() for r in records)

    consumer = Consumer(
        settings,
        topics=[topic],
        group_id=group,
        handler=handler,
        name="slow",
        group_config=FAST_GROUP,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    first = [f"a{i}" for i in range(10)]
    later = [f"b{i}" for i in range(10)]
    try:
        await asyncio.to_thread(_produce, kafka_bootstrap, topic, first)
        await _until(lambda: set(first) <= set(seen), "the slow batch")
        await asyncio.to_thread(_produce, kafka_bootstrap, topic, later)
        await _until(lambda: set(later) <= set(seen), "records after the slow batch")
        # Every batch was committed: the member never lost its partitions.
        await _until(lambda: _committed(kafka_bootstrap, group) == 20, "commits of all 20")
        assert not running.done(), "the consumer loop ended"
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    assert sorted(seen) == sorted(first + later)  # the slow batch was not applied twice


async def test_a_member_leaving_hands_its_partitions_to_the_other(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory("sched-membership-failover", 4)
    group = f"test-sched-failover-{uuid.uuid4().hex[:8]}"
    settings = CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap})
    seen: dict[str, list[str]] = {"a": [], "b": []}

    def member(name: str) -> Consumer:
        async def handler(records: Sequence[Any]) -> None:
            seen[name].extend(r.value.decode() for r in records)

        return Consumer(
            settings,
            topics=[topic],
            group_id=group,
            handler=handler,
            name=name,
            group_config=FAST_GROUP,
        )

    stops = {"a": asyncio.Event(), "b": asyncio.Event()}
    runs = {name: asyncio.create_task(member(name).run(stops[name])) for name in stops}
    first = [f"a{i}" for i in range(40)]
    later = [f"b{i}" for i in range(40)]
    try:
        await asyncio.to_thread(_produce, kafka_bootstrap, topic, first)
        await _until(lambda: set(first) <= set(seen["a"] + seen["b"]), "the first records")
        stops["a"].set()  # member a goes away mid-run
        await asyncio.wait_for(runs["a"], 30)
        b_before = len(seen["b"])
        await asyncio.to_thread(_produce, kafka_bootstrap, topic, later)
        await _until(lambda: set(later) <= set(seen["b"]), "member b taking every partition")
        assert len(seen["b"]) > b_before
        assert not runs["b"].done(), "member b's loop ended"
    finally:
        for stop in stops.values():
            stop.set()
        for task in runs.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task, 30)


def test_a_join_a_short_poll_left_half_done_completes(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    """The leader rejoins when its topic gains partitions; polls too short to see that join
    through must not leave the member out of the group for good (kafka-python 3.0.12)."""
    topic = topic_factory("sched-membership-join", 1)
    settings = CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap})
    consumer = make_consumer(
        settings,
        group_id=f"test-sched-join-{uuid.uuid4().hex[:8]}",
        metadata_max_age_ms=500,  # notice the new partitions at once
        **FAST_GROUP,
    )
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        consumer.partitions_for_topic(topic)
        consumer.subscribe([topic])
        deadline = time.monotonic() + WAIT_S
        while not consumer.assignment():
            assert time.monotonic() < deadline, "never assigned"
            consumer.poll(timeout_ms=200)
        admin.create_partitions({topic: NewPartitions(total_count=3)})
        # Polls that return at once start the leader's rejoin and never wait for it.
        for _ in range(20):
            consumer.poll(timeout_ms=0)
            time.sleep(0.2)
        while {tp.partition for tp in consumer.assignment()} != {0, 1, 2}:
            assert time.monotonic() < deadline, f"stuck with {consumer.assignment()}"
            consumer.poll(timeout_ms=1_000)
        consumer.commit()  # raises if the member is not in the group
    finally:
        consumer.close()
        admin.close()
