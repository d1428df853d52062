"""X.509 device authentication in http mode, as EMQX's HTTP authentication does it: the broker
checks the presented chain against the registered device CAs and sends the certificate's
facts with its authentication call; the control plane decides by the device's record, with
the refusals redis mode names.

The brokers are this module's own, started after the device CA is registered: one in http
mode (reading the device CAs from the redis-mode test database, OTA_BROKER_REDIS_URL) asking
the scheduler's own endpoint (control_plane.py, in this process), and one in redis mode on
the same database, to hold the two modes' answers side by side. Devices and CAs are written
by the scheduler's own classes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio

from ota.device_auth import credentials_for
from ota.metrics import REGISTRY
from scheduler.credentials import Credentials
from scheduler.device_cas import DeviceCas
from scheduler.secretbox import DEV_CREDENTIAL_KEYS
from tests.x509_kit import Issued, issue, make_ca

from .broker_support import BrokerProcess, start_broker
from .conftest import AUTH_TIMEOUT_MS, _checked_lib
from .control_plane import ControlPlane
from .rawmqtt import ACCEPTED, BAD_USER_NAME_OR_PASSWORD, NOT_AUTHORIZED, RawClient
from .test_broker_certificates import device_tls, new_device_id, now_ms, tls_connect

KEY = "test-broker-key-http-certs"
ALLOWED = 'ota_broker_connects_total{result="allow",reason="ok"}'


def decided(result: str, reason: str) -> float:
    """The control plane's count of its answers (it runs in this process)."""
    value = REGISTRY.get_sample_value(
        "ota_scheduler_broker_auth_total", {"result": result, "reason": reason}
    )
    return value or 0.0


async def _register(url: str, ca: Issued) -> None:
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(url)
    try:
        await DeviceCas(client).add(ca.pem().encode())
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


@pytest.fixture(scope="module")
def fleet(credentials_url: str) -> Issued:
    ca = make_ca(f"Fleet CA {uuid.uuid4().hex[:6]}")
    asyncio.run(_register(credentials_url, ca))
    return ca


@pytest.fixture(scope="module")
def control_plane(credentials_url: str) -> Iterator[ControlPlane]:
    server = ControlPlane(credentials_url, KEY)
    yield server
    server.close()


@pytest.fixture(scope="module")
def http_broker(
    fleet: Issued,
    control_plane: ControlPlane,
    credentials_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BrokerProcess]:
    process = start_broker(
        _checked_lib(),
        tmp_path_factory.mktemp("http-cert-broker"),
        control_plane.url,
        KEY,
        OTA_BROKER_REDIS_URL=credentials_url,
        OTA_BROKER_AUTH_TIMEOUT_MS=str(AUTH_TIMEOUT_MS),
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def redis_mode_broker(
    fleet: Issued, credentials_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    process = start_broker(
        _checked_lib(),
        tmp_path_factory.mktemp("redis-cert-broker"),
        OTA_BROKER_AUTH_MODE="redis",
        OTA_BROKER_REDIS_URL=credentials_url,
        OTA_CREDENTIAL_KEYS=DEV_CREDENTIAL_KEYS,
        OTA_BROKER_AUTH_TIMEOUT_MS=str(AUTH_TIMEOUT_MS),
    )
    yield process
    process.stop()


async def test_a_certificate_device_is_accepted_and_gets_its_command(
    http_broker: BrokerProcess, fleet: Issued, credentials: Credentials, tmp_path: Path
) -> None:
    device_id = new_device_id()
    await credentials.register_certificate(device_id)
    before, allowed_here = http_broker.metric(ALLOWED), decided("allow", "ok")
    context = device_tls(http_broker, issue(fleet, device_id), tmp_path)
    code, device = await tls_connect(http_broker, context, device_id)
    assert code == ACCEPTED
    assert device is not None
    try:
        assert http_broker.metric(ALLOWED) == before + 1
        assert decided("allow", "ok") == allowed_here + 1  # the control plane said so
        platform = await RawClient.open("127.0.0.1", http_broker.platform_port)
        try:
            assert (
                await platform.connect(
                    f"platform-{uuid.uuid4().hex[:8]}",
                    http_broker.platform_user,
                    http_broker.platform_password,
                )
                == ACCEPTED
            )
            topic = f"$oc/devices/{device_id}/sys/events/down"
            await platform.publish(topic, b'{"services":[]}', qos=1)
        finally:
            platform.abort()
        assert await device.receive() == (topic, b'{"services":[]}')
    finally:
        device.abort()


async def test_a_san_naming_the_device_is_accepted(
    http_broker: BrokerProcess, fleet: Issued, credentials: Credentials, tmp_path: Path
) -> None:
    """EMQX has no placeholder for SANs; this broker sends every name (cert_names)."""
    device_id = new_device_id()
    await credentials.register_certificate(device_id)
    issued = issue(fleet, "unit 7", ("unit-7.example", device_id))
    code, device = await tls_connect(
        http_broker, device_tls(http_broker, issued, tmp_path), device_id
    )
    assert code == ACCEPTED
    assert device is not None
    device.abort()


@pytest.mark.parametrize(
    ("case", "reason", "code"),
    [
        ("another_device", "certificate_mismatch", BAD_USER_NAME_OR_PASSWORD),
        ("no_certificate", "certificate_required", BAD_USER_NAME_OR_PASSWORD),
        ("disabled", "disabled", NOT_AUTHORIZED),
    ],
)
async def test_refusals_are_named_as_in_redis_mode(
    http_broker: BrokerProcess,
    redis_mode_broker: BrokerProcess,
    fleet: Issued,
    credentials: Credentials,
    tmp_path: Path,
    case: str,
    reason: str,
    code: int,
) -> None:
    """The same device and certificate, refused by both modes with the same reason and
    CONNACK, counted by each broker and, in http mode, by the control plane."""
    device_id = new_device_id()
    await credentials.register_certificate(device_id)
    issued: Issued | None = issue(fleet, device_id)
    if case == "another_device":
        issued = issue(fleet, new_device_id())
    elif case == "no_certificate":
        issued = None
    elif case == "disabled":
        await credentials.set_enabled(device_id, False)
    denied_here = decided("deny", reason)
    for broker in (http_broker, redis_mode_broker):
        before = broker.refusals(reason)
        got, _ = await tls_connect(broker, device_tls(broker, issued, tmp_path), device_id)
        assert got == code, broker
        assert broker.refusals(reason) == before + 1
        broker.wait_log(f"reason={reason}")
    assert decided("deny", reason) == denied_here + 1


async def test_a_password_device_ignores_its_certificate(
    http_broker: BrokerProcess, fleet: Issued, credentials: Credentials, tmp_path: Path
) -> None:
    """A secret-only device's certificate is ignored (its password decides); once switched to
    certificates only, its password no longer opens it and its certificate does."""
    device_id = new_device_id()
    await credentials.register(device_id, "s3cret-Device-Key_01")
    creds = credentials_for(device_id, "s3cret-Device-Key_01", now_ms())
    another = issue(fleet, new_device_id())
    for issued in (None, another):
        client = await RawClient.open(
            "127.0.0.1", http_broker.tls_port, device_tls(http_broker, issued, tmp_path)
        )
        try:
            assert await client.connect(creds.client_id, creds.username, creds.password) == ACCEPTED
        finally:
            client.abort()
    await credentials.set_auth(device_id, "certificate")
    client = await RawClient.open("127.0.0.1", http_broker.tls_port, http_broker.tls_context())
    try:
        code = await client.connect(creds.client_id, creds.username, creds.password)
        assert code == BAD_USER_NAME_OR_PASSWORD
    finally:
        client.abort()
    context = device_tls(http_broker, issue(fleet, device_id), tmp_path)
    code, device = await tls_connect(http_broker, context, device_id)
    assert code == ACCEPTED
    assert device is not None
    device.abort()
