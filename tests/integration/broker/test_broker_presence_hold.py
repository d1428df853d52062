"""Presence events held while no platform client subscribes, released in order to the first
that does (a broker restart: devices reconnect before the gateway has subscribed again).

A private broker, so no other test's platform client is subscribed, with a bound of 3 held
events so the drop at the bound shows.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from gmqtt import Client

from .authserver import AuthServer
from .broker_support import BrokerProcess, start_broker
from .conftest import AUTH_KEY, DeviceCreds, Inbox, _checked_lib, connect_gmqtt, subscribe
from .rawmqtt import RawClient
from .test_broker_presence import connected

Device = Callable[..., DeviceCreds]
Subscriber = Callable[[str], Awaitable[Inbox]]
HOLD_MAX = 3
HELD = "ota_broker_presence_held"
RELEASING = "ota_broker_presence_releasing"
DROPPED = "ota_broker_presence_dropped_total"


@pytest.fixture(scope="module")
def holding_broker(
    auth_server: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    process = start_broker(
        _checked_lib(),
        tmp_path_factory.mktemp("holding-broker"),
        auth_server.url,
        AUTH_KEY,
        OTA_BROKER_PRESENCE_HOLD_MAX=str(HOLD_MAX),
    )
    yield process
    process.stop()


async def metric_becomes(broker: BrokerProcess, name: str, value: float) -> None:
    """The broker's metrics are not pushed anywhere: read until `value`, within 10 s."""
    async with asyncio.timeout(10):
        while broker.metric(name) != value:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.fixture
async def subscriber(holding_broker: BrokerProcess) -> AsyncIterator[Subscriber]:
    """Connects a platform client subscribed to `filter`; disconnected after the test."""
    clients: list[Client] = []

    async def connect(topic_filter: str) -> Inbox:
        client, inbox = await connect_gmqtt(
            f"ota-platform-test-{uuid.uuid4().hex[:8]}",
            holding_broker.platform_user,
            holding_broker.platform_password,
            holding_broker.platform_port,
        )
        clients.append(client)
        assert await subscribe(client, topic_filter) == [1]
        return inbox

    yield connect
    for client in clients:
        await client.disconnect()


def states(inbox: Inbox, creds: DeviceCreds) -> list[tuple[bool, str]]:
    mine = [json.loads(p) for t, p in inbox.messages if t == f"$ota/presence/{creds.device_id}"]
    return [(event["online"], event["reason"]) for event in mine]


async def received(inbox: Inbox, creds: DeviceCreds, count: int) -> list[tuple[bool, str]]:
    """The device's first `count` presence events, awaited as messages arrive."""
    await inbox.wait_for(lambda *_: len(states(inbox, creds)) >= count)
    return states(inbox, creds)


async def test_events_before_any_subscriber_reach_the_first_one_in_order(
    holding_broker: BrokerProcess, device: Device, subscriber: Subscriber
) -> None:
    creds = device()
    first = await connected(holding_broker, creds)
    await first.disconnect()
    # Its offline is held before the same client id connects again (else a take-over).
    await metric_becomes(holding_broker, HELD, 2)
    second = await connected(holding_broker, creds)
    await metric_becomes(holding_broker, HELD, 3)

    inbox = await subscriber("$ota/presence/+")
    assert await received(inbox, creds, 3) == [
        (True, "connect"),
        (False, "graceful"),
        (True, "connect"),
    ]
    assert holding_broker.metric(HELD) == 0
    # Subscribed now: the next event goes out at once.
    await second.disconnect()
    assert (await received(inbox, creds, 4))[3] == (False, "graceful")
    assert holding_broker.metric(DROPPED) == 0
    # The log is read from the broker's output by a thread of its own: awaited.
    await asyncio.to_thread(holding_broker.wait_log, "releasing 3 held events")


async def test_a_shared_subscription_counts_and_the_oldest_go_beyond_the_bound(
    holding_broker: BrokerProcess, device: Device, subscriber: Subscriber
) -> None:
    creds = device()
    client = await connected(holding_broker, creds)
    await client.disconnect()
    await metric_becomes(holding_broker, HELD, 2)  # before the same client id connects again
    client = await connected(holding_broker, creds)
    await client.disconnect()  # the fourth event, one more than the bound
    await metric_becomes(holding_broker, DROPPED, 1)
    assert holding_broker.metric(HELD) == HOLD_MAX
    holding_broker.wait_log("dropping the oldest")

    inbox = await subscriber("$share/ota-gateway/$ota/presence/+")
    assert await received(inbox, creds, 3) == [
        (False, "graceful"),
        (True, "connect"),
        (False, "graceful"),
    ]
    await metric_becomes(holding_broker, HELD, 0)


async def test_a_filter_for_one_device_does_not_release_the_others(
    holding_broker: BrokerProcess, device: Device, subscriber: Subscriber
) -> None:
    watched, other = device(), device()
    one = await subscriber(f"$ota/presence/{watched.device_id}")
    client = await connected(holding_broker, other)
    await metric_becomes(holding_broker, HELD, 1)
    everyone = await subscriber("$ota/presence/+")
    assert await received(everyone, other, 1) == [(True, "connect")]
    await client.disconnect()
    assert await received(everyone, other, 2) == [(True, "connect"), (False, "graceful")]
    assert states(one, other) == []


async def test_an_mqtt_3_platform_client_counts(
    holding_broker: BrokerProcess, device: Device
) -> None:
    creds = device()
    client = await connected(holding_broker, creds)
    await metric_becomes(holding_broker, HELD, 1)
    platform = await RawClient.open("127.0.0.1", holding_broker.platform_port)
    try:
        user, password = holding_broker.platform_user, holding_broker.platform_password
        assert await platform.connect(f"ota-platform-3-{uuid.uuid4().hex[:6]}", user, password) == 0
        # The released events may come before the SUBACK (MQTT allows it): read both.
        await platform.send_subscribe("$ota/presence/+")
        topic, payload = await platform.receive()
        assert topic == f"$ota/presence/{creds.device_id}"
        assert json.loads(payload)["online"] is True
        await metric_becomes(holding_broker, HELD, 0)
        # Received live before the platform client goes, so the next test finds none held.
        await client.disconnect()
        topic, payload = await platform.receive()
        assert json.loads(payload)["online"] is False
    finally:
        platform.abort()
        client.abort()


async def test_released_events_are_marked_held_and_live_ones_not(
    holding_broker: BrokerProcess, device: Device, subscriber: Subscriber
) -> None:
    creds = device()
    client = await connected(holding_broker, creds)
    await metric_becomes(holding_broker, HELD, 1)
    inbox = await subscriber("$ota/presence/+")
    await received(inbox, creds, 1)
    # The release ends once HiveMQ took its last batch, which may be after the subscriber
    # got it: an event offered before then queues behind the release and is marked held.
    await metric_becomes(holding_broker, RELEASING, 0)
    await client.disconnect()
    await received(inbox, creds, 2)
    marks = [json.loads(p)["held"] for t, p in inbox.messages if t.endswith(creds.device_id)]
    assert marks == [True, False]
