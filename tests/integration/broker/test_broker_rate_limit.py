"""OTA_BROKER_CONNECT_RATE_PER_S: device CONNECTs over the rate are refused before the
control plane is asked (a broker of its own, since the setting is read at start), and a
device refused so on its first connect tries again until it is in."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest

from ota.backoff import Backoff
from ota.mqtt import LinkConfig, MqttLink

from .authserver import AuthServer
from .broker_support import BrokerProcess, broker_lib, start_broker
from .conftest import AUTH_KEY, DeviceCreds
from .rawmqtt import ACCEPTED, SERVER_UNAVAILABLE, RawClient

RATE = 5


@pytest.fixture(scope="module")
def limited_broker(
    broker: BrokerProcess, auth_server: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """`broker` first: it checks that a build and java exist."""
    process = start_broker(
        broker_lib(),
        tmp_path_factory.mktemp("limited"),
        auth_server.url,
        AUTH_KEY,
        OTA_BROKER_CONNECT_RATE_PER_S=str(RATE),
    )
    yield process
    process.stop()


async def test_connects_over_the_rate_are_refused_as_busy(
    limited_broker: BrokerProcess, auth: AuthServer, device: Callable[..., DeviceCreds]
) -> None:
    devices = [device() for _ in range(4 * RATE)]
    asked = len(auth.state.requests)

    async def attempt(creds: DeviceCreds) -> int:
        client = await RawClient.open("127.0.0.1", limited_broker.plain_port)
        try:
            return await client.connect(creds.client_id, creds.device_id, creds.password)
        finally:
            client.abort()

    codes = await asyncio.gather(*(attempt(creds) for creds in devices))
    accepted = codes.count(ACCEPTED)
    refused = codes.count(SERVER_UNAVAILABLE)
    assert accepted + refused == len(codes), codes
    assert RATE <= accepted < 2 * RATE, codes  # the burst, plus what refilled meanwhile
    assert len(auth.state.requests) - asked == accepted  # refused ones were never sent out
    metric = 'ota_broker_connects_total{result="deny",reason="rate_limited"}'
    assert limited_broker.metric(metric) == refused


async def test_a_device_refused_for_now_connects_once_the_rate_allows(
    limited_broker: BrokerProcess, device: Callable[..., DeviceCreds]
) -> None:
    """A burst over the rate: the devices refused "server unavailable" on their first
    connect do not fail; the link tries again (gmqtt's reconnect, the link's backoff) and
    every device ends up connected."""
    refused_before = limited_broker.metric(
        'ota_broker_connects_total{result="deny",reason="rate_limited"}'
    )
    links = [
        MqttLink(
            LinkConfig(
                host="127.0.0.1",
                port=limited_broker.plain_port,
                client_id=creds.client_id,
                username=creds.device_id,
                password=creds.password,
                backoff=Backoff(0.2, 1.0),
            )
        )
        for creds in (device() for _ in range(3 * RATE))
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(link.connect() for link in links)), 60)
        assert all(link.connected.is_set() for link in links)
        refused = limited_broker.metric(
            'ota_broker_connects_total{result="deny",reason="rate_limited"}'
        )
        assert refused > refused_before  # some were refused first, and came back
    finally:
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
