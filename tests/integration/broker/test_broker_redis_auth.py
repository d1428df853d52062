"""redis mode: the broker reads the credential store itself (no control plane), with devices
registered by the scheduler's own `Credentials` class on the stack's Redis; and revocations
on the store's channel disconnect a device's live connections."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from ota.device_auth import HOUR_MS, SignType, credentials_for
from scheduler.credentials import Credentials

from .broker_support import BrokerProcess, free_ports, start_broker
from .conftest import _checked_lib
from .rawmqtt import (
    ACCEPTED,
    BAD_USER_NAME_OR_PASSWORD,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    SUBACK_FAILURE,
    RawClient,
    connack,
)

SECRET = "s3cret-Device-Key_01"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_device_id() -> str:
    return f"dev_{uuid.uuid4().hex[:10]}_x"  # underscores: the id is read from the right


async def test_a_registered_device_is_accepted_with_its_own_topics(
    redis_broker: BrokerProcess, credentials: Credentials
) -> None:
    device_id = new_device_id()
    await credentials.register(device_id, SECRET)
    creds = credentials_for(device_id, SECRET, now_ms())
    client = await RawClient.open("127.0.0.1", redis_broker.plain_port)
    try:
        assert await client.connect(creds.client_id, creds.username, creds.password) == ACCEPTED
        # The device id is the stored one's: its own topics only.
        assert await client.subscribe(f"$oc/devices/{device_id}/sys/messages/down") == 1
        assert (
            await client.subscribe("$oc/devices/someone-else/sys/messages/down") == SUBACK_FAILURE
        )
    finally:
        client.abort()


async def test_tls_connects_are_decided_the_same(
    redis_broker: BrokerProcess, credentials: Credentials
) -> None:
    device_id = new_device_id()
    await credentials.register(device_id, SECRET)
    creds = credentials_for(device_id, SECRET, now_ms(), SignType.NO_TIME_CHECK)
    client = await RawClient.open("127.0.0.1", redis_broker.tls_port, redis_broker.tls_context())
    try:
        assert await client.connect(creds.client_id, creds.username, creds.password) == ACCEPTED
    finally:
        client.abort()


@pytest.mark.parametrize(
    ("case", "reason", "code"),
    [
        ("unknown", "unknown_device", BAD_USER_NAME_OR_PASSWORD),
        ("wrong_password", "bad_password", BAD_USER_NAME_OR_PASSWORD),
        ("disabled", "disabled", NOT_AUTHORIZED),
        ("clock_skew", "clock_skew", BAD_USER_NAME_OR_PASSWORD),
        ("other_user_name", "username_mismatch", BAD_USER_NAME_OR_PASSWORD),
        ("malformed", "malformed_client_id", BAD_USER_NAME_OR_PASSWORD),
    ],
)
async def test_refused_devices_get_the_connack_of_their_reason(
    redis_broker: BrokerProcess, credentials: Credentials, case: str, reason: str, code: int
) -> None:
    device_id = new_device_id()
    if case != "unknown":
        await credentials.register(device_id, SECRET)
    if case == "disabled":
        await credentials.set_enabled(device_id, False)
    at = now_ms() - 3 * HOUR_MS if case == "clock_skew" else now_ms()
    creds = credentials_for(device_id, SECRET, at)
    client_id, user, password = creds.client_id, creds.username, creds.password
    if case == "wrong_password":
        password = credentials_for(device_id, "another-secret", at).password
    elif case == "other_user_name":
        user = "someone-else"
    elif case == "malformed":
        client_id = f"{device_id}-not-iotda"
    before = redis_broker.refusals(reason)
    assert await connack(redis_broker.plain_port, client_id, user, password) == code
    assert redis_broker.refusals(reason) == before + 1
    redis_broker.wait_log(f"refused client_id={client_id} reason={reason}")
    assert password not in redis_broker.log()


@pytest.fixture(scope="module")
def store_down_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """redis mode pointed at a port nobody listens on, with OTA_CREDENTIAL_KEYS unset."""
    (closed,) = free_ports(1)
    process = start_broker(
        _checked_lib(),
        tmp_path_factory.mktemp("store-down-broker"),
        OTA_BROKER_AUTH_MODE="redis",
        OTA_BROKER_REDIS_URL=f"redis://127.0.0.1:{closed}/2",
        OTA_CREDENTIAL_KEYS="",
        OTA_BROKER_AUTH_TIMEOUT_MS="800",
    )
    yield process
    process.stop()


async def test_a_store_that_is_down_refuses_with_server_unavailable(
    store_down_broker: BrokerProcess,
) -> None:
    """The broker starts without its store; each device is refused as auth_unavailable
    (it retries later), never left waiting; the development key is warned about."""
    store_down_broker.wait_log("opened with the public development key")
    creds = credentials_for(new_device_id(), SECRET, now_ms())
    for _ in range(2):  # the first look-up and one after the failed connection attempt
        before = store_down_broker.refusals("auth_unavailable")
        started = time.monotonic()
        code = await connack(
            store_down_broker.plain_port, creds.client_id, creds.username, creds.password
        )
        assert code == SERVER_UNAVAILABLE
        assert time.monotonic() - started < 2
        assert store_down_broker.refusals("auth_unavailable") == before + 1
    store_down_broker.wait_log(
        f"refused client_id={creds.client_id} reason=auth_unavailable (credential store:"
    )
    assert store_down_broker.metric("ota_broker_revocations_subscribed") == 0


async def subscribed(broker: BrokerProcess, timeout_s: float = 10.0) -> None:
    """Until the broker listens on the revocation channel (it subscribes after start; its
    metrics are the only signal, so they are polled)."""
    async with asyncio.timeout(timeout_s):
        while broker.metric("ota_broker_revocations_subscribed") != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("action", "code_after"),
    [
        ("disabled", NOT_AUTHORIZED),
        ("rotated", BAD_USER_NAME_OR_PASSWORD),
        ("deleted", BAD_USER_NAME_OR_PASSWORD),
    ],
)
async def test_a_revoked_device_is_disconnected(
    redis_broker: BrokerProcess, credentials: Credentials, action: str, code_after: int
) -> None:
    device_id = new_device_id()
    await credentials.register(device_id, SECRET)
    creds = credentials_for(device_id, SECRET, now_ms())
    await subscribed(redis_broker)
    clients = []
    for sign in (SignType.TIME_CHECK, SignType.NO_TIME_CHECK):  # two connections, one device
        one = credentials_for(device_id, SECRET, now_ms(), sign)
        client = await RawClient.open("127.0.0.1", redis_broker.plain_port)
        assert await client.connect(one.client_id, one.username, one.password) == ACCEPTED
        clients.append(client)
    bystander_id = new_device_id()
    await credentials.register(bystander_id, SECRET)
    other = credentials_for(bystander_id, SECRET, now_ms())
    bystander = await RawClient.open("127.0.0.1", redis_broker.plain_port)
    assert await bystander.connect(other.client_id, other.username, other.password) == ACCEPTED
    revoked = f'ota_broker_revocations_total{{action="{action}"}}'
    before = (
        redis_broker.metric(revoked),
        redis_broker.metric("ota_broker_revocation_disconnects_total"),
    )

    if action == "disabled":
        await credentials.set_enabled(device_id, False)
    elif action == "rotated":
        await credentials.rotate(device_id, "a-new-secret-0001")
    else:
        await credentials.delete(device_id)

    await asyncio.gather(*(client.closed_by_broker(10) for client in clients))
    # The broker counts a disconnect once it completed, which may be after the client saw
    # its socket close: read the counters until they say so (or the deadline passes).
    disconnects = "ota_broker_revocation_disconnects_total"
    deadline = time.monotonic() + 10
    while redis_broker.metric(disconnects) < before[1] + 2:
        assert time.monotonic() < deadline, f"{disconnects} did not count both disconnects"
        await asyncio.sleep(0.05)
    assert redis_broker.metric(revoked) == before[0] + 1
    code = await connack(redis_broker.plain_port, creds.client_id, creds.username, creds.password)
    assert code == code_after
    # Another device's connection is untouched: it still answers a SUBSCRIBE.
    assert await bystander.subscribe(f"$oc/devices/{bystander_id}/sys/messages/down") == 1
    bystander.abort()
