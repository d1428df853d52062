"""Who gets in: CONNACK codes for every refusal, the platform account's listener rules,
what the control plane is sent, and the refusal counters and log lines."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .authserver import AuthServer, iotda_hour
from .broker_support import BrokerProcess
from .conftest import AUTH_TIMEOUT_MS, DeviceCreds
from .rawmqtt import (
    ACCEPTED,
    BAD_USER_NAME_OR_PASSWORD,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    connack,
)

Device = Callable[..., DeviceCreds]


async def test_a_known_device_with_its_password_is_accepted(
    broker: BrokerProcess, auth: AuthServer, device: Device
) -> None:
    creds = device()
    code = await connack(broker.plain_port, creds.client_id, creds.device_id, creds.password)
    assert code == ACCEPTED
    sent = next(r for r in reversed(auth.state.requests) if r["clientid"] == creds.client_id)
    assert sent == {
        "clientid": creds.client_id,
        "username": creds.device_id,
        "password": creds.password,
        "peerhost": "127.0.0.1",
    }


@pytest.mark.parametrize(
    ("case", "reason", "code"),
    [
        ("unknown", "unknown_device", BAD_USER_NAME_OR_PASSWORD),
        ("wrong_password", "bad_password", BAD_USER_NAME_OR_PASSWORD),
        ("disabled", "disabled", NOT_AUTHORIZED),
        ("other_user_name", "username_mismatch", BAD_USER_NAME_OR_PASSWORD),
        ("anonymous", "username_mismatch", BAD_USER_NAME_OR_PASSWORD),
    ],
)
async def test_refused_devices_get_the_connack_of_their_reason(
    broker: BrokerProcess, device: Device, case: str, reason: str, code: int
) -> None:
    creds = device(disabled=case == "disabled", known=case != "unknown")
    user: str | None = creds.device_id
    password: str | None = creds.password
    if case == "wrong_password":
        password = "0" * 64
    elif case == "other_user_name":
        user = "someone-else"
    elif case == "anonymous":
        user = password = None
    before = broker.refusals(reason)
    assert await connack(broker.plain_port, creds.client_id, user, password) == code
    assert broker.refusals(reason) == before + 1
    broker.wait_log(f"refused client_id={creds.client_id} reason={reason}")
    assert creds.password not in broker.log()


async def test_a_client_id_not_shaped_like_iotda_is_refused_without_asking(
    broker: BrokerProcess, auth: AuthServer
) -> None:
    asked = len(auth.state.requests)
    code = await connack(broker.plain_port, "not-an-iotda-id", None, None)
    assert code == BAD_USER_NAME_OR_PASSWORD
    assert len(auth.state.requests) == asked
    broker.wait_log("refused client_id=not-an-iotda-id reason=malformed_client_id")


@pytest.mark.parametrize("mode", ["down", "slow"])
async def test_an_unavailable_control_plane_refuses_with_server_unavailable(
    broker: BrokerProcess, auth: AuthServer, device: Device, mode: str
) -> None:
    creds = device()
    auth.set_mode(mode)
    auth.state.slow_s = AUTH_TIMEOUT_MS / 1000 + 1
    before = broker.refusals("auth_unavailable")
    code = await connack(broker.plain_port, creds.client_id, creds.device_id, creds.password)
    assert code == SERVER_UNAVAILABLE
    assert broker.refusals("auth_unavailable") == before + 1
    broker.wait_log(f"refused client_id={creds.client_id} reason=auth_unavailable")


async def test_the_platform_listener_takes_only_the_platform_account(
    broker: BrokerProcess, device: Device
) -> None:
    port, user = broker.platform_port, broker.platform_user
    assert await connack(port, "platform-a", user, broker.platform_password) == ACCEPTED
    assert await connack(port, "platform-b", user, "wrong") == BAD_USER_NAME_OR_PASSWORD
    assert await connack(port, "platform-c", None, None) == NOT_AUTHORIZED
    creds = device()
    assert await connack(port, creds.client_id, creds.device_id, creds.password) == NOT_AUTHORIZED


async def test_the_platform_account_is_refused_on_the_device_listeners(
    broker: BrokerProcess, auth: AuthServer
) -> None:
    asked = len(auth.state.requests)
    client_id = f"x_0_0_{iotda_hour()}"
    code = await connack(
        broker.plain_port, client_id, broker.platform_user, broker.platform_password
    )
    assert code == NOT_AUTHORIZED
    assert len(auth.state.requests) == asked  # its password never leaves the broker


async def test_anonymous_connections_are_refused_everywhere(broker: BrokerProcess) -> None:
    """HiveMQ embedded lets everyone in when no authenticator decides; ours always does."""
    for port in (broker.plain_port, broker.platform_port):
        assert await connack(port, "anonymous", None, None) != ACCEPTED
