"""Fixtures for device tests: a package server, and a platform-side MQTT client that sends
commands to devices and collects their reports."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from gmqtt import Client, Message
from gmqtt.mqtt.constants import MQTTv50

from devices.http import HttpClient
from ota.protocol import Message as Envelope
from ota.protocol import down_topic, parse_uplink
from tests.integration.devices.package_server import PackageServer


@pytest.fixture
async def packages() -> AsyncIterator[PackageServer]:
    server = PackageServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> HttpClient:
    return HttpClient(connect_timeout_s=10, read_timeout_s=10)


class Platform:
    """Publishes commands on devices' down topics and collects their uplink."""

    def __init__(self, mqtt_platform: Any) -> None:
        self._config = mqtt_platform
        self.client = Client(f"ota-tests-platform-{uuid.uuid4().hex[:8]}")
        self.client.set_auth_credentials(mqtt_platform.user, mqtt_platform.password)
        self.reports: dict[str, list[Envelope]] = {}
        self.client.on_message = self._on_message

    def _on_message(self, _c: Client, topic: str, payload: bytes, _qos: int, _p: Any) -> int:
        message = parse_uplink(topic, payload)
        self.reports.setdefault(message.device_id, []).append(message)
        return 0

    async def start(self) -> None:
        await self.client.connect(self._config.host, self._config.port, version=MQTTv50)
        self.client.subscribe("$oc/devices/+/sys/events/up", qos=1)
        await asyncio.sleep(0.2)  # SUBACK; reports sent before it would be missed

    def command(
        self, device_id: str, event_type: str, paras: dict[str, Any], event_id: str
    ) -> None:
        payload = orjson.dumps(
            {
                "object_device_id": device_id,
                "services": [
                    {
                        "service_id": "$ota",
                        "event_type": event_type,
                        "event_id": event_id,
                        "event_time": "20261127T000000Z",
                        "paras": paras,
                    }
                ],
            }
        )
        self.client.publish(Message(down_topic(device_id), payload, qos=1))

    def events(self, device_id: str, event_type: str | None = None) -> list[Any]:
        return [
            event
            for message in self.reports.get(device_id, [])
            for event in message.events
            if event_type is None or event.event_type == event_type
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; reports: {self.reports}")
            await asyncio.sleep(0.02)


@pytest.fixture
async def platform(mqtt_platform: Any, mqtt_device_port: int) -> AsyncIterator[Platform]:
    client = Platform(mqtt_platform)
    await client.start()
    yield client
    await client.client.disconnect()


def new_device(prefix: str = "agent") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
