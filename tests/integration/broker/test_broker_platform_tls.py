"""The platform listener on TLS (OTA_BROKER_PLATFORM_TLS=1), on a broker of this module's own:
the platform account gets in over TLS only, verifying the broker with the CA of the device
listener's certificate, exactly as the gateway's settings build that check."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from gateway.settings import GatewaySettings

from .authserver import AuthServer
from .broker_support import BrokerProcess, start_broker
from .conftest import AUTH_KEY, DeviceCreds, _checked_lib, connect_gmqtt, subscribe
from .rawmqtt import ACCEPTED, BAD_USER_NAME_OR_PASSWORD, RawClient

Device = Callable[..., DeviceCreds]


@pytest.fixture(scope="module")
def tls_broker(
    auth_server: AuthServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    process = start_broker(
        _checked_lib(),
        tmp_path_factory.mktemp("platform-tls-broker"),
        auth_server.url,
        AUTH_KEY,
        OTA_BROKER_PLATFORM_TLS="1",
    )
    yield process
    process.stop()


def gateway_settings(broker: BrokerProcess, password: str) -> GatewaySettings:
    """The gateway's own settings for this broker, as a deployment sets them."""
    return GatewaySettings.from_env(
        {
            "OTA_MQTT_PLATFORM_PORT": str(broker.platform_port),
            "OTA_MQTT_PLATFORM_USER": broker.platform_user,
            "OTA_MQTT_PLATFORM_PASSWORD": password,
            "OTA_MQTT_PLATFORM_TLS": "1",
            "OTA_MQTT_PLATFORM_CA_FILE": str(broker.ca_file),
        }
    )


async def test_the_platform_account_receives_uplinks_over_tls(
    tls_broker: BrokerProcess, auth: AuthServer, device: Device
) -> None:
    settings = gateway_settings(tls_broker, tls_broker.platform_password)
    common = settings.common
    platform, inbox = await connect_gmqtt(
        f"ota-platform-tls-{uuid.uuid4().hex[:8]}",
        common.mqtt_platform_user,
        common.mqtt_platform_password,
        common.mqtt_platform_port,
        settings.platform_tls_context(),
    )
    try:
        assert await subscribe(platform, "$oc/devices/+/sys/events/up") == [1]
        creds = device()
        sender = await RawClient.open("127.0.0.1", tls_broker.plain_port)
        try:
            assert (
                await sender.connect(creds.client_id, creds.device_id, creds.password) == ACCEPTED
            )
            await sender.publish(creds.topic("events/up"), b'{"services":[]}', qos=1)
            assert await inbox.wait_for(lambda t, _p: t == creds.topic("events/up")) == (
                creds.topic("events/up"),
                b'{"services":[]}',
            )
        finally:
            sender.abort()
    finally:
        await platform.disconnect()


async def test_plain_tcp_to_the_platform_port_gets_no_connack(tls_broker: BrokerProcess) -> None:
    client = await RawClient.open("127.0.0.1", tls_broker.platform_port)
    try:
        # A TLS listener reads the CONNECT as a broken handshake and closes: -1, no CONNACK.
        code = await client.connect(
            "ota-platform-plain", tls_broker.platform_user, tls_broker.platform_password
        )
        assert code == -1
    finally:
        client.abort()


async def test_a_wrong_platform_password_over_tls_is_refused(tls_broker: BrokerProcess) -> None:
    context = gateway_settings(tls_broker, "wrong").platform_tls_context()
    assert context is not None
    client = await RawClient.open("127.0.0.1", tls_broker.platform_port, context)
    try:
        code = await client.connect("ota-platform-wrong", tls_broker.platform_user, "wrong")
        assert code == BAD_USER_NAME_OR_PASSWORD
    finally:
        client.abort()
    # The right password on the same path gets in: the refusal was the password's.
    client = await RawClient.open("127.0.0.1", tls_broker.platform_port, context)
    try:
        code = await client.connect(
            "ota-platform-right", tls_broker.platform_user, tls_broker.platform_password
        )
        assert code == ACCEPTED
    finally:
        client.abort()
