"""X.509 device authentication (redis mode): a device registered for certificates connects
on the TLS listener with a client certificate from a registered device CA, no password, and
gets its commands; other certificates, unregistered CAs and missing certificates are refused.

The broker is this module's own, started after the device CA is registered (so the listener's
truststore has it from the start); devices and CAs are written by the scheduler's own classes
(`Credentials.register_certificate`, `DeviceCas.add`) on the redis-mode test database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio

from ota.device_auth import credentials_for
from scheduler.credentials import Credentials
from scheduler.device_cas import DeviceCas
from tests.x509_kit import Issued, issue, make_ca, write_device

from .broker_support import BrokerProcess, start_broker
from .conftest import AUTH_TIMEOUT_MS, _checked_lib
from .rawmqtt import (
    ACCEPTED,
    BAD_USER_NAME_OR_PASSWORD,
    NOT_AUTHORIZED,
    RawClient,
    connect_as_device,
)

CA_REFRESH_S = 1


@dataclass(frozen=True)
class Cas:
    fleet: Issued  # registered
    stranger: Issued  # not registered


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_device_id() -> str:
    return f"cert_{uuid.uuid4().hex[:10]}"


async def _register(url: str, ca: Issued) -> None:
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(url)
    try:
        await DeviceCas(client).add(ca.pem().encode())
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


@pytest.fixture(scope="module")
def cas(credentials_url: str) -> Cas:
    fleet = make_ca(f"Fleet CA {uuid.uuid4().hex[:6]}")
    asyncio.run(_register(credentials_url, fleet))
    return Cas(fleet, make_ca("Unregistered CA"))


@pytest.fixture(scope="module")
def cert_broker(
    cas: Cas, credentials_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    from scheduler.secretbox import DEV_CREDENTIAL_KEYS

    process = start_broker(
        _checked_lib(),
        tmp_path_factory.mktemp("cert-broker"),
        OTA_BROKER_AUTH_MODE="redis",
        OTA_BROKER_REDIS_URL=credentials_url,
        OTA_CREDENTIAL_KEYS=DEV_CREDENTIAL_KEYS,
        OTA_BROKER_AUTH_TIMEOUT_MS=str(AUTH_TIMEOUT_MS),
        OTA_BROKER_DEVICE_CA_REFRESH_S=str(CA_REFRESH_S),
    )
    yield process
    process.stop()


def device_tls(broker: BrokerProcess, issued: Issued | None, folder: Path) -> ssl.SSLContext:
    """A device's TLS: trusts the broker's CA, presents `issued` (with its chain) if given."""
    context = broker.tls_context()
    if issued is not None:
        cert_file, key_file = write_device(issued, folder, uuid.uuid4().hex[:8])
        context.load_cert_chain(cert_file, key_file)
    return context


async def tls_connect(
    broker: BrokerProcess, context: ssl.SSLContext, device_id: str
) -> tuple[int, RawClient | None]:
    """CONNECT as `device_id` with no password: (return code, the open client if accepted).
    A handshake the broker refuses is -1."""
    client_id = credentials_for(device_id, "unused-secret", now_ms()).client_id
    try:
        return await connect_as_device(
            lambda: RawClient.open("127.0.0.1", broker.tls_port, context),
            client_id,
            device_id,
            None,
        )
    except (ssl.SSLError, ConnectionError):
        return -1, None


async def test_a_certificate_device_connects_without_a_password_and_gets_its_command(
    cert_broker: BrokerProcess, cas: Cas, credentials: Credentials, tmp_path: Path
) -> None:
    device_id = new_device_id()
    status = await credentials.register_certificate(device_id)
    assert status["auth"] == "certificate"
    assert status["key_id"] is None
    allowed = 'ota_broker_connects_total{result="allow",reason="ok"}'
    before = cert_broker.metric(allowed)
    context = device_tls(cert_broker, issue(cas.fleet, device_id), tmp_path)
    code, device = await tls_connect(cert_broker, context, device_id)
    assert code == ACCEPTED
    assert device is not None
    try:
        assert cert_broker.metric(allowed) == before + 1
        platform = await RawClient.open("127.0.0.1", cert_broker.platform_port)
        try:
            assert (
                await platform.connect(
                    f"platform-{uuid.uuid4().hex[:8]}",
                    cert_broker.platform_user,
                    cert_broker.platform_password,
                )
                == ACCEPTED
            )
            topic = f"$oc/devices/{device_id}/sys/events/down"
            await platform.publish(topic, b'{"services":[]}', qos=1)
        finally:
            platform.abort()
        assert await device.receive() == (topic, b'{"services":[]}')
        # Its own topics only, as a password device.
        assert await device.subscribe("$oc/devices/someone-else/sys/messages/down") == 0x80
    finally:
        device.abort()


async def test_a_certificate_from_a_san_or_an_intermediate_is_accepted(
    cert_broker: BrokerProcess, cas: Cas, credentials: Credentials, tmp_path: Path
) -> None:
    device_id = new_device_id()
    await credentials.register_certificate(device_id)
    intermediate = make_ca("Fleet intermediate", cas.fleet)
    for issued in (
        issue(cas.fleet, "unit 7", ("unit-7.example", device_id)),
        issue(intermediate, device_id),
    ):
        code, device = await tls_connect(
            cert_broker, device_tls(cert_broker, issued, tmp_path), device_id
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
async def test_refused_certificate_devices_are_counted_by_reason(
    cert_broker: BrokerProcess,
    cas: Cas,
    credentials: Credentials,
    tmp_path: Path,
    case: str,
    reason: str,
    code: int,
) -> None:
    device_id = new_device_id()
    await credentials.register_certificate(device_id)
    issued: Issued | None = issue(cas.fleet, device_id)
    if case == "another_device":
        issued = issue(cas.fleet, new_device_id())
    elif case == "no_certificate":
        issued = None
    elif case == "disabled":
        await credentials.set_enabled(device_id, False)
    before = cert_broker.refusals(reason)
    got, _ = await tls_connect(cert_broker, device_tls(cert_broker, issued, tmp_path), device_id)
    assert got == code
    assert cert_broker.refusals(reason) == before + 1
    cert_broker.wait_log(f"reason={reason}")


@pytest.mark.parametrize("case", ["unregistered_ca", "expired"])
async def test_an_untrusted_certificate_is_refused_in_the_handshake(
    cert_broker: BrokerProcess, cas: Cas, credentials: Credentials, tmp_path: Path, case: str
) -> None:
    """The listener's truststore holds only registered CAs, and the handshake checks dates:
    it fails, so the device never reaches CONNECT (nothing is allowed)."""
    device_id = new_device_id()
    await credentials.register_certificate(device_id)
    allowed = 'ota_broker_connects_total{result="allow",reason="ok"}'
    before = cert_broker.metric(allowed)
    issued = (
        issue(cas.stranger, device_id)
        if case == "unregistered_ca"
        else issue(
            cas.fleet,
            device_id,
            not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
            not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
        )
    )
    context = device_tls(cert_broker, issued, tmp_path)
    code, device = await tls_connect(cert_broker, context, device_id)
    assert code == -1
    assert device is None
    assert cert_broker.metric(allowed) == before


async def test_a_password_device_still_connects_on_the_same_listener(
    cert_broker: BrokerProcess, cas: Cas, credentials: Credentials, tmp_path: Path
) -> None:
    """Certificates are asked for, not required; and a secret-only device's certificate is
    ignored (its password decides)."""
    device_id = new_device_id()
    await credentials.register(device_id, "s3cret-Device-Key_01")
    creds = credentials_for(device_id, "s3cret-Device-Key_01", now_ms())
    for issued in (None, issue(cas.fleet, device_id)):
        client = await RawClient.open(
            "127.0.0.1", cert_broker.tls_port, device_tls(cert_broker, issued, tmp_path)
        )
        try:
            assert await client.connect(creds.client_id, creds.username, creds.password) == ACCEPTED
        finally:
            client.abort()
    # Switched to certificates only, the password no longer opens it.
    status = await credentials.set_auth(device_id, "certificate")
    assert status["auth"] == "certificate"
    client = await RawClient.open("127.0.0.1", cert_broker.tls_port, cert_broker.tls_context())
    try:
        code = await client.connect(creds.client_id, creds.username, creds.password)
        assert code == BAD_USER_NAME_OR_PASSWORD
    finally:
        client.abort()


async def wait_metric(broker: BrokerProcess, name: str, value: float, timeout_s: float) -> None:
    """Until the broker's metric reads `value` (its refresh has no other signal)."""
    async with asyncio.timeout(timeout_s):
        while broker.metric(name) != value:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_a_ca_registered_or_removed_while_running_takes_effect(
    cert_broker: BrokerProcess, credentials_url: str, credentials: Credentials, tmp_path: Path
) -> None:
    """Registered: the broker reads it within its refresh, HiveMQ reloads the truststore it
    wrote (within 10 s), and the device gets in. Removed: refused again from the refresh on."""
    client: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(credentials_url)
    cas = DeviceCas(client)
    known = cert_broker.metric("ota_broker_device_cas")
    late = make_ca(f"Late CA {uuid.uuid4().hex[:6]}")
    device_id = new_device_id()
    await credentials.register_certificate(device_id)
    context = device_tls(cert_broker, issue(late, device_id), tmp_path)
    try:
        await cas.add(late.pem().encode())
        await wait_metric(cert_broker, "ota_broker_device_cas", known + 1, 5 * CA_REFRESH_S)
        code = -1
        async with asyncio.timeout(25):  # HiveMQ checks its TLS files every 10 s
            while code != ACCEPTED:
                code, device = await tls_connect(cert_broker, context, device_id)
                assert code in (-1, ACCEPTED)
                if device is None:
                    await asyncio.sleep(0.5)
        assert device is not None
        device.abort()
        await cas.delete(late.fingerprint())
        await wait_metric(cert_broker, "ota_broker_device_cas", known, 5 * CA_REFRESH_S)
        code, device = await tls_connect(cert_broker, context, device_id)
        # Refused by the extension (certificate_untrusted) until HiveMQ reloads, then by the
        # handshake: either way not in.
        assert code in (-1, BAD_USER_NAME_OR_PASSWORD)
        assert device is None
    finally:
        await client.hdel("ota:sched:device-cas", late.fingerprint())
        await client.aclose()  # type: ignore[attr-defined]  # stubs predate aclose
