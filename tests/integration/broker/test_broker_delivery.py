"""Messages: server-side downlink subscriptions over TLS, uplinks to the platform, and a
device confined to its own topics. Every wait is for an event, with a deadline."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import pytest

from .broker_support import BrokerProcess
from .conftest import DeviceCreds, Platform, connect_gmqtt
from .rawmqtt import ACCEPTED, SUBACK_FAILURE, RawClient

Device = Callable[..., DeviceCreds]


async def raw_device(broker: BrokerProcess, creds: DeviceCreds) -> RawClient:
    client = await RawClient.open("127.0.0.1", broker.plain_port)
    assert await client.connect(creds.client_id, creds.device_id, creds.password) == ACCEPTED
    return client


async def test_a_device_that_never_subscribes_gets_its_downlink_over_tls(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    creds = device()
    client, inbox = await connect_gmqtt(
        creds.client_id, creds.device_id, creds.password, broker.tls_port, broker.tls_context()
    )
    try:
        # Right after CONNACK, as the platform does when presence says the device is online.
        platform.client.publish(creds.topic("events/down"), b'{"services":[]}', qos=1)
        platform.client.publish(creds.topic("messages/down"), b"hello", qos=1)
        await inbox.wait_for(lambda t, _p: t == creds.topic("events/down"))
        await inbox.wait_for(lambda t, _p: t == creds.topic("messages/down"))
        assert dict(inbox.messages)[creds.topic("events/down")] == b'{"services":[]}'
    finally:
        await client.disconnect()


async def test_many_downlinks_right_after_connect_all_arrive(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    devices = [device() for _ in range(20)]
    clients = await asyncio.gather(*(raw_device(broker, creds) for creds in devices))
    try:
        for creds in devices:
            platform.client.publish(creds.topic("events/down"), creds.device_id.encode(), qos=1)
        received = await asyncio.gather(*(client.receive() for client in clients))
        assert received == [(c.topic("events/down"), c.device_id.encode()) for c in devices]
    finally:
        for client in clients:
            client.abort()


async def test_the_platform_receives_uplinks_on_dollar_topics(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    creds = device()
    client = await raw_device(broker, creds)
    try:
        await client.publish(creds.topic("events/up"), b'{"services":[1]}', qos=1)
        await client.publish(creds.topic("events/up"), b'{"services":[2]}', qos=0)
        await platform.inbox.wait_for(
            lambda t, p: t == creds.topic("events/up") and p.endswith(b"[2]}")
        )
        # Still connected: HiveMQ would have dropped a client publishing to a '$' topic.
        await client.publish(creds.topic("events/up"), b'{"services":[3]}', qos=1)
    finally:
        client.abort()


async def test_a_device_cannot_publish_on_another_devices_topic(
    broker: BrokerProcess, platform: Platform, device: Device
) -> None:
    mallory, victim = device(), device()
    client = await raw_device(broker, mallory)
    await client.send_publish(victim.topic("events/up"), b"forged", qos=1)
    await client.closed_by_broker(10)  # HiveMQ disconnects a client that breaks its permissions
    # The victim's own report arrives; the forged one, published before it, never does.
    honest = await raw_device(broker, victim)
    try:
        await honest.publish(victim.topic("events/up"), b"honest", qos=1)
        await platform.inbox.wait_for(lambda t, p: p == b"honest")
        assert (victim.topic("events/up"), b"forged") not in platform.inbox.messages
    finally:
        honest.abort()


async def test_a_device_cannot_subscribe_to_another_devices_topics(
    broker: BrokerProcess, device: Device
) -> None:
    creds, other = device(), device()
    client = await raw_device(broker, creds)
    try:
        assert await client.subscribe(other.topic("events/down")) == SUBACK_FAILURE
        assert await client.subscribe("$oc/devices/+/sys/events/down") == SUBACK_FAILURE
        assert await client.subscribe("#") == SUBACK_FAILURE
        assert await client.subscribe(creds.topic("events/down")) == 1
    finally:
        client.abort()


async def test_a_device_that_does_not_trust_the_local_ca_cannot_connect(
    broker: BrokerProcess,
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await RawClient.open("127.0.0.1", broker.tls_port, ssl.create_default_context())
