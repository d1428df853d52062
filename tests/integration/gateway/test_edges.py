"""Presence, ACL, malformed payloads and the replica split, on the real broker and Kafka."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import orjson
from gmqtt import Client, Message
from gmqtt.mqtt.constants import MQTTv50

from ota.metrics import REGISTRY
from ota.protocol import up_topic
from ota.records import DeadLetterRecord, DeviceEventRecord, PresenceRecord
from tests.integration.gateway.conftest import (
    Device,
    KafkaReader,
    Stack,
    new_device,
    running_gateway,
)


def _report(version: str, event_id: str | None = None) -> bytes:
    service: dict[str, Any] = {
        "service_id": "$ota",
        "event_type": "version_report",
        "paras": {"fw_version": version},
    }
    if event_id:
        service["event_id"] = event_id
    return orjson.dumps({"services": [service]})


def _presence(records: list[Any], device_id: str) -> list[PresenceRecord]:
    return [
        r
        for r in records
        if isinstance(r, PresenceRecord) and r.device_id == device_id and r.source == "broker"
    ]


async def test_presence_from_a_real_connect_and_disconnect(
    stack: Stack, readers: Callable[[str], KafkaReader], devices: Callable[[str], Device]
) -> None:
    inbox = readers(stack.topics.inbox)
    device_id = new_device()
    async with running_gateway(stack):
        device = devices(device_id)
        await device.connect()
        await inbox.wait_for(lambda rs: len(_presence(rs, device_id)) == 1)
        await device.close()
        records = await inbox.wait_for(lambda rs: len(_presence(rs, device_id)) == 2)
    assert [p.online for p in _presence(records, device_id)] == [True, False]
    # The gateway's own connection is never a device.
    assert not any(
        isinstance(r, PresenceRecord) and r.device_id.startswith("ota-") for r in records
    )


async def test_presence_of_a_device_that_drops_without_disconnect(
    stack: Stack, readers: Callable[[str], KafkaReader], devices: Callable[[str], Device]
) -> None:
    inbox = readers(stack.topics.inbox)
    device_id = new_device()
    async with running_gateway(stack):
        device = devices(device_id)
        await device.connect()
        await inbox.wait_for(lambda rs: len(_presence(rs, device_id)) == 1)
        # Abort the socket: the broker logs "closed its connection", not "disconnected".
        device.client._connection._transport.abort()
        device.client.stop_reconnect()
        records = await inbox.wait_for(lambda rs: len(_presence(rs, device_id)) == 2)
        await device.close()
    assert [p.online for p in _presence(records, device_id)] == [True, False]


async def test_a_device_cannot_publish_on_another_devices_topic(
    stack: Stack, readers: Callable[[str], KafkaReader], devices: Callable[[str], Device]
) -> None:
    """The broker refuses the forged report and disconnects the offender; the victim's own
    report, sent after that, is the only one recorded for it."""
    inbox = readers(stack.topics.inbox)
    attacker, victim = new_device("attacker"), new_device("victim")
    async with running_gateway(stack):
        device, honest = devices(attacker), devices(victim)
        await device.connect()
        await honest.connect()
        device.publish(up_topic(attacker), _report("1.0"))  # its own topic works
        await inbox.wait_for(lambda rs: _events(rs, attacker) == ["1.0"])
        dropped = asyncio.Event()
        device.client.on_disconnect = lambda *_args: dropped.set()
        device.publish(up_topic(victim), _report("6.6.6"))
        await asyncio.wait_for(dropped.wait(), 20)
        honest.publish(up_topic(victim), _report("1.1"))
        records = await inbox.wait_for(lambda rs: "1.1" in _events(rs, victim))
        await honest.close()
    assert _events(records, victim) == ["1.1"]


def _events(records: list[Any], device_id: str) -> list[str]:
    """The fw_version of each device report recorded for the device."""
    return [
        r.paras.get("fw_version", "")
        for r in records
        if isinstance(r, DeviceEventRecord) and r.device_id == device_id
    ]


MALFORMED: list[tuple[bytes, str]] = [
    (b"this is not json", "invalid_json"),
    (orjson.dumps({"services": [{"service_id": "$ota", "event_type": 7}]}), "wrong_type"),
    # Over the gateway's 64 KiB, under the broker's packet limit (1 MiB: larger packets
    # never reach the gateway, the broker disconnects their sender).
    (b'{"services": [' + b"x" * (200 * 1024) + b"]}", "payload_too_large"),
    (b'{"a":' * 40 + b"1" + b"}" * 40, "too_deep"),
    (b'{"services": "\xff\xfe"}', "invalid_utf8"),
    (
        orjson.dumps(
            {
                "object_device_id": "someone-else",
                "services": [{"service_id": "$ota", "event_type": "version_report", "paras": {}}],
            }
        ),
        "device_mismatch",
    ),
    (orjson.dumps({"services": [{"service_id": "$ota", "event_type": "reboot"}]}), "unknown_event"),
]


async def test_malformed_payloads_are_dead_lettered_while_valid_ones_flow(
    stack: Stack, readers: Callable[[str], KafkaReader], devices: Callable[[str], Device]
) -> None:
    inbox = readers(stack.topics.inbox)
    letters = readers(stack.topics.dead_letters)
    device_id = new_device()
    async with running_gateway(stack):
        device = devices(device_id)
        await device.connect()
        device.publish(up_topic(device_id), _report("0", "before"))
        for payload, _reason in MALFORMED:
            device.publish(up_topic(device_id), payload)
            device.publish(up_topic(device_id), _report("1", f"after-{_reason}"))
        wanted = 1 + len(MALFORMED)

        def events(rs: list[Any]) -> list[DeviceEventRecord]:
            return [r for r in rs if isinstance(r, DeviceEventRecord) and r.device_id == device_id]

        good = await inbox.wait_for(lambda rs: len(events(rs)) == wanted)
        dead = await letters.wait_for(lambda rs: len(rs) == len(MALFORMED))
        await device.close()
    assert [e.device_event_id for e in events(good)] == ["before"] + [
        f"after-{r}" for _, r in MALFORMED
    ]
    assert all(isinstance(d, DeadLetterRecord) for d in dead)
    assert [d.reason for d in dead] == [reason for _, reason in MALFORMED]
    for letter, (payload, _) in zip(dead, MALFORMED, strict=True):
        assert letter.origin == up_topic(device_id)
        assert letter.source == "gateway"
        assert payload.startswith(base64.b64decode(letter.raw_b64))
        assert letter.message
    assert {key for key, _ in letters.raw} == {b"gateway"}


def _system_event(service_id: str, event_type: str, paras: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {"services": [{"service_id": service_id, "event_type": event_type, "paras": paras}]}
    )


async def test_sdk_system_events_are_counted_not_dead_lettered(
    stack: Stack, readers: Callable[[str], KafkaReader], devices: Callable[[str], Device]
) -> None:
    inbox = readers(stack.topics.inbox)
    letters = readers(stack.topics.dead_letters)
    device_id = new_device()
    logged = (
        "ota_gateway_system_events_ignored_total",
        {"service": "$log", "event_type": "log_report"},
    )
    before = REGISTRY.get_sample_value(*logged) or 0.0
    unknown = _system_event("$remote_login", "remote_login_request", {})
    async with running_gateway(stack):
        device = devices(device_id)
        await device.connect()
        topic = up_topic(device_id)
        device.publish(topic, _system_event("$log", "log_report", {"content": "connected"}))
        device.publish(
            topic, _system_event("$time_sync", "time_sync_request", {"device_send_time": 1})
        )
        # Published after them on the same topic: had they been dead-lettered, their letters
        # would come first (one partition for the gateway's dead letters).
        device.publish(topic, unknown)
        device.publish(topic, _report("1.0", "after"))
        dead = await letters.wait_for(lambda rs: len(rs) >= 1)
        await inbox.wait_for(
            lambda rs: any(
                isinstance(r, DeviceEventRecord) and r.device_event_id == "after" for r in rs
            )
        )
        await device.close()
    assert [(d.reason, base64.b64decode(d.raw_b64)) for d in dead] == [("unknown_event", unknown)]
    assert not any(
        isinstance(r, DeviceEventRecord) and r.event_type != "version_report"
        for r in inbox.snapshot()
    )
    assert REGISTRY.get_sample_value(*logged) == before + 1


async def test_two_replicas_split_the_devices_by_slot(
    stack: Stack, readers: Callable[[str], KafkaReader]
) -> None:
    inbox = readers(stack.topics.inbox)
    devices = [new_device("split") for _ in range(12)]
    env = stack.env
    base = env["OTA_GATEWAY_CLIENT_ID"]
    async with (
        running_gateway(
            stack,
            OTA_GATEWAY_REPLICAS="2",
            OTA_GATEWAY_INDEX="0",
            OTA_GATEWAY_CLIENT_ID=base + "-0",
        ),
        running_gateway(
            stack,
            OTA_GATEWAY_REPLICAS="2",
            OTA_GATEWAY_INDEX="1",
            OTA_GATEWAY_CLIENT_ID=base + "-1",
        ),
    ):
        client = Client(base + "-publisher")
        client.set_auth_credentials(
            env["OTA_MQTT_PLATFORM_USER"], env["OTA_MQTT_PLATFORM_PASSWORD"]
        )
        await client.connect(stack.mqtt_host, stack.platform_port, version=MQTTv50)
        for device_id in devices:
            client.publish(Message(up_topic(device_id), _report("1.0", "once"), qos=1))

        def events(rs: list[Any]) -> list[DeviceEventRecord]:
            return [r for r in rs if isinstance(r, DeviceEventRecord) and r.device_id in devices]

        await inbox.wait_for(lambda rs: len(events(rs)) >= len(devices))
        await asyncio.sleep(0.5)  # a duplicate from the other replica would have landed by now
        await client.disconnect()
    got = events(inbox.snapshot())
    assert sorted(r.device_id for r in got) == sorted(devices)
