"""Presence events on $ota/presence/{device_id}, and kicks on $ota/kick/{device_id}."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .broker_support import BrokerProcess
from .conftest import DeviceCreds, Platform
from .rawmqtt import ACCEPTED, RawClient

Device = Callable[..., DeviceCreds]


def presence(creds: DeviceCreds, online: bool) -> Callable[[str, bytes], bool]:
    def matches(topic: str, payload: bytes) -> bool:
        return (
            topic == f"$ota/presence/{creds.device_id}" and json.loads(payload)["online"] is online
        )

    return matches


async def event(
    platform: Platform, creds: DeviceCreds, online: bool, timeout_s: float = 10.0
) -> Any:
    _, payload = await platform.inbox.wait_for(presence(creds, online), timeout_s)
    return json.loads(payload)


async def connected(broker: BrokerProcess, creds: DeviceCreds, keepalive_s: int = 60) -> RawClient:
    client = await RawClient.open("127.0.0.1", broker.plain_port)
    code = await client.connect(creds.client_id, creds.device_id, creds.password, keepalive_s)
    assert code == ACCEPTED
    return client


async def test_online_then_graceful_offline(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    creds = device()
    before_ms = int(time.time() * 1000)
    client = await connected(broker, creds)
    online = await event(platform, creds, True)
    assert online == {
        "device_id": creds.device_id,
        "client_id": creds.client_id,
        "online": True,
        "at_ms": online["at_ms"],
        "reason": "connect",
        "held": False,
    }
    assert before_ms - 1000 <= online["at_ms"] <= int(time.time() * 1000) + 1000
    await client.disconnect()
    assert (await event(platform, creds, False))["reason"] == "graceful"


async def test_a_dropped_socket_is_offline_with_connection_lost(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    creds = device()
    client = await connected(broker, creds)
    await event(platform, creds, True)
    client.abort()
    assert (await event(platform, creds, False))["reason"] == "connection_lost"


async def test_a_silent_device_is_offline_within_one_and_a_half_keepalives(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    creds = device()
    keepalive_s = 2
    client = await connected(broker, creds, keepalive_s)
    await event(platform, creds, True)
    started = time.monotonic()  # the raw client sends nothing more, not even PINGREQ
    offline = await event(platform, creds, False, timeout_s=keepalive_s * 1.5 + 3)
    elapsed = time.monotonic() - started
    client.abort()
    assert offline["reason"] == "keepalive_timeout", offline
    assert elapsed <= keepalive_s * 1.5 + 1.0, elapsed


async def test_presence_is_for_devices_only(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    """The platform account's own connections (this fixture's) publish no presence."""
    creds = device()
    client = await connected(broker, creds)
    await event(platform, creds, True)
    client.abort()
    assert all(
        topic.startswith("$ota/presence/dev-") or not topic.startswith("$ota/presence/")
        for topic in platform.inbox.topics()
    )


async def test_a_kick_disconnects_the_device_and_is_never_delivered(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    creds, bystander = device(), device()
    client = await connected(broker, creds)
    other = await connected(broker, bystander)
    await event(platform, creds, True)
    await event(platform, bystander, True)
    kicks = broker.metric("ota_broker_kicks_total")
    platform.client.publish(f"$ota/kick/{creds.device_id}", b"disabled", qos=1)
    await client.closed_by_broker(10)
    assert (await event(platform, creds, False))["reason"] == "kicked"
    assert broker.metric("ota_broker_kicks_total") == kicks + 1
    assert f"$ota/kick/{creds.device_id}" not in platform.inbox.topics()
    # The bystander is untouched: its downlink still arrives.
    platform.client.publish(bystander.topic("events/down"), b"still here", qos=1)
    assert await other.receive() == (bystander.topic("events/down"), b"still here")
    other.abort()


async def test_connected_devices_gauge(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    creds = device()
    gauge = 'ota_broker_connected_clients{kind="device"}'
    before = broker.metric(gauge)
    client = await connected(broker, creds)
    await event(platform, creds, True)
    assert broker.metric(gauge) == before + 1
    await client.disconnect()
    await event(platform, creds, False)
    assert broker.metric(gauge) == before


async def test_a_device_cannot_kick_another(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    attacker, victim = device(), device()
    client = await connected(broker, attacker)
    target = await connected(broker, victim)
    await event(platform, victim, True)
    await client.send_publish(f"$ota/kick/{victim.device_id}", b"", qos=1)
    await client.closed_by_broker(10)  # not its topic: HiveMQ disconnects the publisher
    assert (await event(platform, attacker, False))["reason"] != "kicked"
    platform.client.publish(victim.topic("events/down"), b"still connected", qos=1)
    assert await target.receive() == (victim.topic("events/down"), b"still connected")
    target.abort()


async def test_a_device_that_drops_at_once_is_online_then_offline_in_that_order(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    devices = [device() for _ in range(10)]
    for creds in devices:
        (await connected(broker, creds)).abort()  # right after CONNACK
    for creds in devices:
        await event(platform, creds, False)
        mine = [
            json.loads(payload)["online"]
            for topic, payload in platform.inbox.messages
            if topic == f"$ota/presence/{creds.device_id}"
        ]
        assert mine == [True, False], (creds.device_id, mine)
