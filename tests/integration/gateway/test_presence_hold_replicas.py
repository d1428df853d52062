"""Presence held by the broker reaches Kafka with two gateway replicas split by slot.

A private broker (so no other test's platform client is subscribed) holds the events of
devices in both replicas' slots while no gateway is subscribed; the release goes to the
first replica to subscribe only, which forwards every held event whatever the device's
slot. Once both are subscribed, live events are written by the device's own replica only.
The inbox is read to its end after both replicas drained, so a lost or doubled event shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from gateway.inbound import Inbound
from gateway.slots import slot_of
from ota.records import PresenceRecord, decode
from tests.integration.broker.authserver import AuthServer
from tests.integration.broker.broker_support import BrokerProcess, start_broker
from tests.integration.broker.conftest import AUTH_KEY, DeviceCreds, _checked_lib
from tests.integration.broker.test_broker_presence import connected
from tests.integration.broker.test_broker_presence_hold import HELD, metric_becomes
from tests.integration.gateway.conftest import KafkaReader, Stack, running_gateway

REPLICAS = 2


@pytest.fixture(scope="module")
def holding_broker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[BrokerProcess, AuthServer]]:
    """A private broker and the control plane that authenticates its devices."""
    auth = AuthServer(AUTH_KEY)
    try:
        state = tmp_path_factory.mktemp("replicas-broker")
        process = start_broker(_checked_lib(), state, auth.url, AUTH_KEY)
        try:
            yield process, auth
        finally:
            process.stop()
    finally:
        auth.close()


def device_in_slot(auth: AuthServer, slot: int) -> DeviceCreds:
    while True:
        creds = DeviceCreds(f"dev-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex)
        if slot_of(creds.device_id, REPLICAS) == slot:
            auth.add_device(creds.device_id, creds.secret, False)
            return creds


def on_broker(stack: Stack, broker: BrokerProcess) -> Stack:
    return dataclasses.replace(
        stack,
        device_port=broker.plain_port,
        platform_port=broker.platform_port,
        env={
            **stack.env,
            "OTA_MQTT_HOST": "127.0.0.1",
            "OTA_MQTT_PORT": str(broker.plain_port),
            "OTA_MQTT_PLATFORM_PORT": str(broker.platform_port),
            "OTA_MQTT_PLATFORM_USER": broker.platform_user,
            "OTA_MQTT_PLATFORM_PASSWORD": broker.platform_password,
            "OTA_GATEWAY_REPLICAS": str(REPLICAS),
        },
    )


def replica(index: int) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {"OTA_GATEWAY_INDEX": str(index), "OTA_GATEWAY_CLIENT_ID": f"ota-gw-{index}-{tag}"}


def ours_in(records: list[Any], devices: set[str]) -> int:
    return sum(isinstance(r, PresenceRecord) and r.device_id in devices for r in records)


def presence_to_the_end(bootstrap: str, topic: str) -> list[tuple[str, bool]]:
    """Every broker presence record in `topic`, read up to its end offsets."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        found: list[tuple[str, bool]] = []
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for batch in consumer.poll(timeout_ms=500).values():
                for message in batch:
                    record = decode(message.value)
                    if isinstance(record, PresenceRecord) and record.source == "broker":
                        found.append((record.device_id, record.online))
        return found
    finally:
        consumer.close()


async def test_held_events_of_both_slots_reach_kafka_once(
    stack: Stack,
    readers: Callable[[str], KafkaReader],
    holding_broker: tuple[BrokerProcess, AuthServer],
) -> None:
    broker, auth_server = holding_broker
    here = on_broker(stack, broker)
    inbox = readers(stack.topics.inbox)
    mine, theirs = device_in_slot(auth_server, 0), device_in_slot(auth_server, 1)
    ours = {mine.device_id, theirs.device_id}
    # No gateway subscribed: all three events are held.
    mine_client = await connected(broker, mine)
    theirs_client = await connected(broker, theirs)
    await theirs_client.disconnect()
    await metric_becomes(broker, HELD, 3)
    try:
        async with running_gateway(here, Inbound, **replica(0)):
            await metric_becomes(broker, HELD, 0)  # released to replica 0 alone
            # The log is read from the broker's output by a thread of its own: awaited.
            await asyncio.to_thread(broker.wait_log, "releasing 3 held events")
            # In Kafka before the other replica writes live events of the same devices
            # (two producers' records are not ordered).
            await inbox.wait_for(lambda rs: ours_in(rs, ours) >= 3)
            async with running_gateway(here, Inbound, **replica(1)):
                # Both subscribed: live events, each written by its device's replica.
                await mine_client.disconnect()
                theirs_client = await connected(broker, theirs)
                await inbox.wait_for(lambda rs: ours_in(rs, ours) >= 5)
        # Both replicas drained: whatever they wrote is in the inbox now.
        records = presence_to_the_end(stack.bootstrap, stack.topics.inbox)
    finally:
        theirs_client.abort()
    assert [online for device, online in records if device == mine.device_id] == [True, False]
    assert [online for device, online in records if device == theirs.device_id] == [
        True,
        False,
        True,
    ]
