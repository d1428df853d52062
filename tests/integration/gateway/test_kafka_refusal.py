"""A record Kafka refuses for good is dead-lettered with the reason and acknowledged; the
messages around it flow on. The test's own inbox topic gets a small max.message.bytes, so
Kafka answers a large (but valid) uplink's record with MessageSizeTooLarge.

The test's gateway shares the broker with whatever else runs on the machine (the local
stack, a benchmark's fleet): it runs as one slot of many and its devices are chosen in that
slot, so other devices' uplinks are acknowledged, not forwarded into the small inbox where
their batches would be refused too and queue the test's reports behind their recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.admin._configs import ConfigResource, ConfigResourceType
from kafka.errors import MessageSizeTooLargeError

from gateway.inbound import Inbound
from gateway.slots import slot_of
from ota.protocol import up_topic
from ota.records import DeadLetterRecord, DeviceEventRecord, encode
from tests.integration.gateway.conftest import (
    Device,
    KafkaReader,
    Stack,
    new_device,
    running_gateway,
)

LIMIT = 1000  # bytes per record batch on the inbox topic
PROBE_TIMEOUT_S = 30.0
SLOTS = 1024  # the test's gateway forwards the devices of one slot in 1,024
OWN_SLOT = {"OTA_GATEWAY_REPLICAS": str(SLOTS), "OTA_GATEWAY_INDEX": "0"}


def _own_device(prefix: str) -> str:
    """A new device id in the test gateway's slot."""
    while slot_of(device_id := new_device(prefix), SLOTS) != 0:
        pass
    return device_id


def _limit_inbox(stack: Stack) -> None:
    """Sets the inbox's record limit and returns once Kafka enforces it: the broker applies
    a topic's new configuration after answering the change, so until a probe larger than
    the limit is refused an uplink could still be accepted."""
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap, client_id="ota-tests-gateway")
    try:
        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    stack.topics.inbox,
                    configs={"max.message.bytes": str(LIMIT)},
                )
            ]
        )
    finally:
        admin.close()
    # A valid record of a device no test reads, so a probe Kafka still took is harmless.
    probe = encode(DeviceEventRecord(new_device("probe"), "probe", {"pad": "x" * 2 * LIMIT}))
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, retries=0)
    try:
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                producer.send(stack.topics.inbox, value=probe).get(timeout=10)
            except MessageSizeTooLargeError:
                return
        raise AssertionError(f"the inbox took {len(probe)}-byte records for {PROBE_TIMEOUT_S} s")
    finally:
        producer.close()


def _report(event_id: str, description: str = "") -> bytes:
    paras = {"result_code": 0, "progress": 50, "version": "2.0", "description": description}
    return orjson.dumps(
        {
            "services": [
                {
                    "service_id": "$ota",
                    "event_type": "upgrade_progress_report",
                    "event_id": event_id,
                    "paras": paras,
                }
            ]
        }
    )


def _event_ids(records: list[Any], device_id: str) -> list[str | None]:
    return [
        r.device_event_id
        for r in records
        if isinstance(r, DeviceEventRecord) and r.device_id == device_id
    ]


async def test_record_too_large_for_kafka_is_dead_lettered_and_acknowledged(
    stack: Stack, readers: Callable[[str], KafkaReader], devices: Callable[[str], Device]
) -> None:
    _limit_inbox(stack)
    inbox, letters = readers(stack.topics.inbox), readers(stack.topics.dead_letters)
    device_id = _own_device("big")
    big = _report("big", "x" * 2000)  # valid (<= 2048 chars), too large for Kafka
    async with running_gateway(stack, OTA_GATEWAY_PRESENCE_SOURCE="none", **OWN_SLOT):
        device = devices(device_id)
        await device.connect()
        device.publish(up_topic(device_id), _report("before"))
        await inbox.wait_for(lambda rs: _event_ids(rs, device_id) == ["before"])
        device.publish(up_topic(device_id), big)
        dead = await letters.wait_for(lambda rs: _letters_of(rs, device_id) != [])
        device.publish(up_topic(device_id), _report("after"))
        records = await inbox.wait_for(lambda rs: "after" in _event_ids(rs, device_id))
        await device.close()
    assert _event_ids(records, device_id) == ["before", "after"]
    [letter] = _letters_of(dead, device_id)
    assert letter.reason == "kafka_refused"
    # kafka-python names it MessageSizeTooLargeError, librdkafka MSG_SIZE_TOO_LARGE.
    assert any(name in letter.message for name in ("MessageSizeTooLarge", "MSG_SIZE_TOO_LARGE"))
    assert letter.origin == up_topic(device_id)
    assert letter.key == device_id
    assert letter.raw_b64 == DeadLetterRecord.raw_bytes(big)


def _letters_of(records: list[Any], device_id: str) -> list[DeadLetterRecord]:
    return [r for r in records if isinstance(r, DeadLetterRecord) and r.key == device_id]


class _BrokenIsolation(Inbound):
    """A defect in the recovery: finding the refused record raises."""

    async def _isolate(self, pending: list[Any]) -> None:
        raise RuntimeError("isolation defect")


async def test_a_failing_uplink_recovery_stops_the_gateway(
    stack: Stack, readers: Callable[[str], KafkaReader], devices: Callable[[str], Device]
) -> None:
    """The recovery is a supervised task: its failure stops the gateway (exit 1 as a
    process), never leaves it up with intake paused and nothing saying so."""
    _limit_inbox(stack)
    with pytest.raises(RuntimeError, match="isolation defect"):
        await _send_too_large_until_stopped(stack, devices(_own_device("broken")))


async def _send_too_large_until_stopped(stack: Stack, device: Device) -> None:
    async with running_gateway(
        stack, inbound_type=_BrokenIsolation, OTA_GATEWAY_PRESENCE_SOURCE="none", **OWN_SLOT
    ) as stop:
        await device.connect()
        device.publish(up_topic(device.device_id), _report("big", "x" * 2000))
        await asyncio.wait_for(stop.wait(), 30)  # stopped by the runtime, not by the test
        await device.close()
