"""Uplink to Kafka and downlink to MQTT for every event type, through a real gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from kafka import KafkaProducer

from ota.protocol import DownlinkType, down_topic, parse_downlink, up_topic
from ota.records import CommandRecord, DeviceEventRecord, PresenceRecord, encode
from tests.integration.gateway.conftest import (
    Device,
    KafkaReader,
    Stack,
    new_device,
    running_gateway,
)

SHA = "ab" * 32
UPGRADE: dict[str, Any] = {
    "version": "2.0",
    "url": "https://edge/packages/sha256/" + SHA,
    "file_size": 10,
    "file_name": "fw.bin",
    "sign": SHA,
    "access_token": "tok",
    "expires": 86400,
}

UPLINKS: list[dict[str, Any]] = [
    {
        "service_id": "$ota",
        "event_type": "version_report",
        "event_id": "e1",
        "paras": {"fw_version": "1.0", "sw_version": "s1"},
    },
    {
        "service_id": "$ota",
        "event_type": "upgrade_progress_report",
        "event_id": "e2",
        "paras": {"result_code": 0, "progress": 100, "version": "2.0", "description": "ok"},
    },
    {
        "service_id": "$sdk_info",
        "event_type": "sdk_info_report",
        "paras": {"device_sdk_version": "C_v1", "fw_version": "1.0"},
    },
]


async def test_every_uplink_event_reaches_the_inbox(
    stack: Stack, readers: Callable[[str], KafkaReader], devices: Callable[[str], Device]
) -> None:
    inbox = readers(stack.topics.inbox)
    device_id = new_device()
    async with running_gateway(stack):
        device = devices(device_id)
        await device.connect()
        for service in UPLINKS:
            device.publish(up_topic(device_id), orjson.dumps({"services": [service]}))

        def events(records: list[Any]) -> list[DeviceEventRecord]:
            return [
                r for r in records if isinstance(r, DeviceEventRecord) and r.device_id == device_id
            ]

        records = await inbox.wait_for(lambda rs: len(events(rs)) == 3)
        await device.close()
    got = events(records)
    assert [r.event_type for r in got] == [
        "version_report",
        "upgrade_progress_report",
        "sdk_info_report",
    ]
    assert got[0].paras == {"fw_version": "1.0", "sw_version": "s1"}
    assert got[1].paras["result_code"] == 0
    assert got[1].device_event_id == "e2"
    assert all(r.at_ms > 0 for r in got)
    keys = {key for key, _ in inbox.raw}
    assert device_id.encode() in keys
    # The first uplink also proved the device online.
    assert any(
        isinstance(r, PresenceRecord) and r.device_id == device_id and r.source == "uplink"
        for r in records
    )


async def test_every_command_type_reaches_the_device(
    stack: Stack, kafka_producer: KafkaProducer, devices: Callable[[str], Device]
) -> None:
    device_id = new_device()
    device = devices(device_id)
    await device.connect()
    await device.subscribe(down_topic(device_id))
    commands = []
    for kind in DownlinkType:
        paras = {} if kind is DownlinkType.VERSION_QUERY else dict(UPGRADE)
        if kind.presigned:
            paras.pop("access_token")
            paras["url"] += "?token=tok"
        commands.append(
            CommandRecord(device_id=device_id, event_type=kind.value, paras=paras, at_ms=1)
        )
    for command in commands:
        kafka_producer.send(stack.topics.commands, key=device_id.encode(), value=encode(command))
    kafka_producer.flush()
    async with running_gateway(stack):
        for _ in range(400):
            if len(device.received) >= len(commands):
                break
            await asyncio.sleep(0.05)
    await device.close()
    assert len(device.received) == len(commands)
    topics = {topic for topic, _ in device.received}
    assert topics == {down_topic(device_id)}
    messages = [parse_downlink(device_id, payload) for _, payload in device.received]
    assert [m.events[0].event_type for m in messages] == [c.event_type for c in commands]
    assert [m.events[0].event_id for m in messages] == [c.id for c in commands]
    assert messages[1].events[0].paras["access_token"] == "tok"
