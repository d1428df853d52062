"""The downlink consumer stays in its group while publishes wait on the MQTT broker far
longer than max_poll_interval_ms, and publishes (and commits) everything afterwards."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer

from gateway.outbound import Outbound
from ota.kafka_clients import make_consumer
from ota.protocol import down_topic
from ota.records import CommandRecord, encode
from ota.settings import CommonSettings

FAST_GROUP: dict[str, Any] = {
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 1_000,
    "max_poll_interval_ms": 6_000,  # librdkafka's least: the session timeout
}
IN_FLIGHT = 5
COMMANDS = 20
PARTITIONS = 4
WAIT_S = 60.0


class StalledLink:
    """An MQTT link whose broker acknowledges nothing until `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.published: list[str] = []

    async def publish_acked(self, topic: str, payload: bytes, qos: int = 1) -> None:
        await self.release.wait()
        self.published.append(topic)


class NoLetters:
    def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        raise AssertionError(f"unexpected dead letter to {topic}")


def _produce(bootstrap: str, topic: str, devices: range) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in devices:
        command = CommandRecord(device_id=f"d{i}", event_type="version_query", paras={}, at_ms=1)
        producer.send(topic, key=f"d{i}".encode(), value=encode(command))
    producer.flush(30)
    producer.close()


def _held_and_committed(bootstrap: str, group: str) -> tuple[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        info = admin.describe_groups([group])[group]
        held = sum(
            len(t["partitions"])
            for m in info.get("members") or []
            for t in (m.get("member_assignment") or {}).get("assigned_partitions") or []
        )
        offsets = admin.list_group_offsets(group).get(group, {})
        return held, sum(o.offset for o in offsets.values())
    finally:
        admin.close()


async def test_downlink_stays_in_its_group_while_publishes_stall(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory("gw-downlink-membership", PARTITIONS)
    group = f"test-gw-membership-{uuid.uuid4().hex[:8]}"
    settings = CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap})
    link = StalledLink()
    outbound = Outbound(
        lambda: make_consumer(
            settings, group_id=group, client_id="test-gw", max_poll_records=IN_FLIGHT, **FAST_GROUP
        ),
        topic,
        link,  # type: ignore[arg-type]
        NoLetters(),  # type: ignore[arg-type]
        "unused-dead-letters",
        IN_FLIGHT,
    )
    stop = asyncio.Event()
    running = asyncio.create_task(outbound.run(stop))
    try:
        await asyncio.to_thread(_produce, kafka_bootstrap, topic, range(COMMANDS))
        # Every slot taken by a publish the broker does not acknowledge, for twice the
        # longest time the client allows between polls.
        await asyncio.sleep(2 * FAST_GROUP["max_poll_interval_ms"] / 1000)
        held, committed = await asyncio.to_thread(_held_and_committed, kafka_bootstrap, group)
        assert held == PARTITIONS, "the stalled downlink consumer left its group"
        assert committed == 0
        assert link.published == []
        link.release.set()
        # A partition's commit point moves with its next acknowledged command (a
        # rebalance while stalled may leave the stalled ones uncounted): send more.
        await asyncio.to_thread(_produce, kafka_bootstrap, topic, range(COMMANDS, 2 * COMMANDS))
        deadline = time.monotonic() + WAIT_S
        while (held, committed) != (PARTITIONS, 2 * COMMANDS):
            assert time.monotonic() < deadline, f"held {held}, committed {committed}"
            await asyncio.sleep(0.5)
            held, committed = await asyncio.to_thread(_held_and_committed, kafka_bootstrap, group)
        assert set(link.published) == {down_topic(f"d{i}") for i in range(2 * COMMANDS)}
        assert not running.done(), "the downlink loop ended"
    finally:
        stop.set()
        link.release.set()
        await asyncio.wait_for(running, 30)
        await outbound.drain(5)
