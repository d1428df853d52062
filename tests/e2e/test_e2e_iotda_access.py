"""Devices as IoTDA builds them, end to end on the project's device broker.

A stack of its own whose gateway speaks to the project's broker (HiveMQ CE with
deploy/broker's extension, started here on free ports) and takes presence from the
broker's events; the broker authenticates every device against this stack's scheduler
(`POST /v1/broker/authenticate`, a `broker`-scoped key). The simulated devices behave
like Huawei's IoTDA device SDK: TLS on the device listener with the local CA, client id
`{id}_0_1_{yyyyMMddHH}` with the HMAC password of their secret, clean session, and no
SUBSCRIBE at all: the broker subscribes them to their down topic.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import eventually, upload

from devices.behaviour import Behaviour
from devices.fleet import Fleet, FleetConfig, Mode, derived_secret, download_tls_of, outcome_of
from ops.demo_env import Ports, StackPlan
from ota.clock import now_ms
from ota.device_auth import credentials_for
from ota.settings import CommonSettings
from tests.stack_kit import running_stack

sys.path.insert(0, str(Path(__file__).parents[1] / "integration" / "broker"))
from broker_support import BrokerProcess, broker_lib, start_broker
from rawmqtt import ACCEPTED, RawClient

REDIS_DB = 14
BROKER_KEY = "e2e-broker-key-0001"
SEED = "e2e-iotda-fleet"
FINISHED = {"Success", "Fail", "PartialSuccess", "Stopped"}


@dataclass
class Access:
    plan: StackPlan
    env: dict[str, str]
    broker: BrokerProcess

    def api(self, key: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.plan.api_url,
            headers={"Authorization": f"Bearer {key or self.plan.write_key}"},
            timeout=30,
        )

    def admin_api(self) -> httpx.AsyncClient:
        """Registers devices: letting a device in needs the admin scope."""
        return self.api(self.plan.admin_key)


@pytest.fixture(scope="module")
def access(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Access]:
    lib = broker_lib()
    if not (lib / "ota-broker.jar").is_file():
        pytest.fail(f"no broker build in {lib}: deploy/local/up builds it", pytrace=False)
    ports = Ports.free()
    state = tmp_path_factory.mktemp("iotda-stack")
    broker = start_broker(
        lib,
        state,
        f"http://127.0.0.1:{ports.api}/v1/broker/authenticate",
        BROKER_KEY,
    )
    extra = {
        "OTA_MQTT_HOST": "127.0.0.1",
        "OTA_MQTT_PORT": str(broker.tls_port),
        "OTA_MQTT_PLATFORM_PORT": str(broker.platform_port),
        "OTA_MQTT_PLATFORM_USER": broker.platform_user,
        "OTA_MQTT_PLATFORM_PASSWORD": broker.platform_password,
        "OTA_GATEWAY_PRESENCE_SOURCE": "ota",
        "OTA_API_KEYS": f"{StackPlan(state).api_keys},{BROKER_KEY}:broker",
    }
    try:
        with running_stack(
            "iotda",
            kafka_bootstrap=kafka_bootstrap,
            redis_url=redis_url,
            redis_db=REDIS_DB,
            state_dir=state,
            ports=ports,
            extra=extra,
        ) as stack:
            yield Access(stack.plan, stack.env, broker)
    finally:
        broker.stop()


async def register(access: Access, device_ids: list[str]) -> None:
    body = "".join(f"{d},{derived_secret(SEED, d)}\n" for d in device_ids)
    async with access.admin_api() as api:
        answer = await api.post("/v1/credentials/import", content=body.encode())
    assert answer.status_code == 200, answer.text
    assert f"# registered {len(device_ids)}, generated 0, refused 0" in answer.text, answer.text


def fleet_config(access: Access, size: int, behaviour: Behaviour) -> FleetConfig:
    broker = access.broker
    return FleetConfig(
        size=size,
        mode=Mode.CONNECTIONS,
        prefix=f"iot-{uuid.uuid4().hex[:6]}",
        host="127.0.0.1",
        device_port=broker.tls_port,
        platform_port=broker.platform_port,
        platform_user=broker.platform_user,
        platform_password=broker.platform_password,
        behaviour_of=lambda _i, _d: behaviour,
        secret_of=lambda device: derived_secret(SEED, device),
        subscribe=False,
        tls=broker.tls_context(),
        download_tls=download_tls_of(CommonSettings.from_env(access.env)),
    )


async def rollout(
    access: Access, kind: str, behaviour: Behaviour, presigned: bool
) -> tuple[dict[str, Any], dict[str, str], list[dict[str, Any]]]:
    config = fleet_config(access, 3, behaviour)
    ids = config.device_ids()
    await register(access, ids)
    async with access.api() as api, Fleet(config) as fleet:
        pkg = await upload(api, os.urandom(128 * 1024), type=kind, file_name=f"{kind}.bin")
        created = await api.post(
            "/v1/tasks",
            json={
                "name": f"iotda {kind} presigned={presigned}",
                "type": kind,
                "package_id": pkg["id"],
                "targets": {"device_ids": ids},
                "policy": {"presigned_url": presigned},
            },
        )
        assert created.status_code == 201, created.text
        tid = created.json()["id"]

        async def finished() -> dict[str, Any] | None:
            task: dict[str, Any] = (await api.get(f"/v1/tasks/{tid}")).json()
            return task if task["status"] in FINISHED else None

        task = await eventually(finished, f"task {tid} to finish", 90)
        rows = (await api.get(f"/v1/tasks/{tid}/devices")).json()["items"]
        outcomes = {d: outcome_of(agent) for d, agent in fleet.agents.items()}
    return task, outcomes, rows


@pytest.mark.parametrize(
    ("kind", "presigned"),
    [("firmware", False), ("firmware", True), ("software", False), ("software", True)],
)
async def test_iotda_devices_upgrade_over_tls_without_subscribing(
    access: Access, kind: str, presigned: bool
) -> None:
    task, outcomes, rows = await rollout(access, kind, Behaviour(keepalive_s=120), presigned)
    assert task["status"] == "Success", task
    assert set(outcomes.values()) == {"succeeded"}, outcomes
    assert {row["state"] for row in rows} == {"SUCCEEDED"}


async def test_presence_comes_from_the_broker(access: Access) -> None:
    config = fleet_config(access, 1, Behaviour(report_at_boot=False))
    [device] = config.device_ids()
    await register(access, [device])
    async with access.api() as api:

        async def online(want: bool) -> dict[str, Any] | None:
            answer = await api.get(f"/v1/devices/{device}")
            view: dict[str, Any] = answer.json() if answer.status_code == 200 else {}
            return view if view.get("online") is want else None

        async with Fleet(config):
            await eventually(lambda: online(True), "the device online (no uplink sent)", 30)
        await eventually(lambda: online(False), "the device offline", 30)


async def connack(access: Access, client_id: str, user: str, password: str) -> int:
    """The CONNACK return code an MQTT 3.1.1 client gets over TLS (0: accepted)."""
    broker = access.broker
    client = await RawClient.open("127.0.0.1", broker.tls_port, broker.tls_context())
    try:
        return await client.connect(client_id, user, password)
    finally:
        client.abort()


async def test_a_client_without_the_secret_cannot_act_as_the_device(access: Access) -> None:
    """Impersonation: the victim's id, with no password, a guessed one, another device's."""
    victim, other = f"victim-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    await register(access, [victim, other])
    good = credentials_for(victim, derived_secret(SEED, victim), now_ms())
    assert await connack(access, good.client_id, victim, good.password) == ACCEPTED
    theirs = credentials_for(other, derived_secret(SEED, other), now_ms())
    guessed = credentials_for(victim, "not-the-secret", now_ms())
    for client_id, user, password in [
        (good.client_id, victim, ""),
        (guessed.client_id, victim, guessed.password),
        (good.client_id, victim, theirs.password),  # another device's password
        (theirs.client_id, victim, theirs.password),  # another device's identity
    ]:
        assert await connack(access, client_id, user, password) != ACCEPTED, (client_id, user)
