"""Downlink offsets are committed after PUBACK: a restarted gateway does not replay what was
delivered, and bad command records are dead-lettered without stopping the others."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kafka import KafkaProducer

from ota.protocol import down_topic, parse_downlink
from ota.records import CommandRecord, DeadLetterRecord, encode
from tests.integration.gateway.conftest import (
    Device,
    KafkaReader,
    Stack,
    new_device,
    running_gateway,
)


async def _until(predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_restart_resumes_after_the_acknowledged_commands(
    stack: Stack,
    kafka_producer: KafkaProducer,
    readers: Callable[[str], KafkaReader],
    devices: Callable[[str], Device],
) -> None:
    letters = readers(stack.topics.dead_letters)
    device_id = new_device("down")
    device = devices(device_id)
    await device.connect()
    await device.subscribe(down_topic(device_id))

    def send(value: bytes) -> None:
        kafka_producer.send(stack.topics.commands, key=device_id.encode(), value=value)
        kafka_producer.flush()

    query = CommandRecord(device_id=device_id, event_type="version_query", paras={}, at_ms=1)
    bad_paras = CommandRecord(device_id=device_id, event_type="firmware_upgrade", paras={}, at_ms=1)
    for value in (encode(query), b"not a record", encode(bad_paras)):
        send(value)
    async with running_gateway(stack):
        await _until(lambda: len(device.received) == 1)
        dead = await letters.wait_for(lambda rs: len(rs) == 2)
    assert sorted(d.reason for d in dead if isinstance(d, DeadLetterRecord)) == [
        "invalid_json",
        "missing_field",
    ]
    assert {d.origin.rsplit("/", 2)[0] for d in dead} == {stack.topics.commands}

    second = CommandRecord(device_id=device_id, event_type="version_query", paras={}, at_ms=2)
    send(encode(second))
    async with running_gateway(stack):
        await _until(lambda: len(device.received) >= 2)
        await asyncio.sleep(0.5)  # a replay of the first command would have arrived by now
    await device.close()
    ids = [parse_downlink(device_id, payload).events[0].event_id for _, payload in device.received]
    assert ids == [query.id, second.id]
    assert len(letters.snapshot()) == 2
