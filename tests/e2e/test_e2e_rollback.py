"""Rollback end to end, with simulated devices on their own MQTT connections: devices
upgrade from 1.0 to 2.0 and are then rolled back to 1.0 by a linked task, started by an
operator (every upgraded device) or, with `rollback_on_failed_confirmation`, by the
task itself (only the device whose health check failed)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import httpx
from e2e_support import E2E, FINISHED, eventually, upload

from devices.behaviour import AfterInstall, Behaviour
from devices.fleet import Fleet, FleetConfig, Mode
from ops.fleet_group import registrar
from ota.catalog import FailureCause


def fleet_of(e2e: E2E, behaviours: Sequence[Behaviour]) -> Fleet:
    by_index = dict(enumerate(behaviours))
    config = FleetConfig.from_settings(
        e2e.common(),
        len(behaviours),
        mode=Mode.CONNECTIONS,
        prefix=f"e2e-rb-{uuid.uuid4().hex[:8]}",
        behaviour_of=lambda index, _device: by_index[index],
    )
    return Fleet(replace(config, register=registrar(e2e.plan)))


async def create(api: httpx.AsyncClient, package_id: str, devices: list[str], **policy: Any) -> str:
    created = await api.post(
        "/v1/tasks",
        json={
            "type": "firmware",
            "package_id": package_id,
            "targets": {"device_ids": devices},
            "policy": policy,
        },
    )
    assert created.status_code == 201, created.text
    tid: str = created.json()["id"]
    return tid


async def finished(api: httpx.AsyncClient, tid: str, timeout_s: float = 90) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        task: dict[str, Any] = (await api.get(f"/v1/tasks/{tid}")).json()
        return task if task["status"] in FINISHED else None

    return await eventually(done, f"task {tid} to finish", timeout_s)


async def versions(api: httpx.AsyncClient, devices: list[str]) -> dict[str, str]:
    return {d: (await api.get(f"/v1/devices/{d}")).json()["fw_version"] for d in devices}


async def test_an_operator_rolls_the_upgraded_devices_back(e2e: E2E) -> None:
    async with e2e.api() as api, fleet_of(e2e, [Behaviour(), Behaviour()]) as fleet:
        devices = sorted(fleet.agents)
        new = await upload(api, os.urandom(64 * 1024))
        old = await upload(api, os.urandom(64 * 1024), version="1.0")
        tid = await create(api, new["id"], devices, rollback_package_id=old["id"])
        assert (await finished(api, tid))["status"] == "Success"
        assert set((await versions(api, devices)).values()) == {"2.0"}

        response = await api.post(f"/v1/tasks/{tid}/rollback")
        assert response.status_code == 201, response.text
        rid = response.json()["rollback_task"]["id"]
        rollback = await finished(api, rid)
        assert rollback["status"] == "Success", rollback
        assert rollback["rollback_of"] == tid
        assert rollback["progress"]["succeeded"] == 2
        assert all(agent.fw_version == "1.0" for agent in fleet.agents.values())

        async def reported_back() -> dict[str, str] | None:
            now = await versions(api, devices)
            return now if set(now.values()) == {"1.0"} else None

        await eventually(reported_back, "the registry to see 1.0 again", 30)
        original = (await api.get(f"/v1/tasks/{tid}")).json()
        assert original["rollback"] == {
            "id": rid,
            "status": "Success",
            "progress": rollback["progress"],
        }


async def test_a_failed_confirmation_is_rolled_back_by_itself(e2e: E2E) -> None:
    behaviours = [
        Behaviour(after_install=AfterInstall.CONFIRM, health_check_s=0.5),
        Behaviour(after_install=AfterInstall.FAIL_CHECK),
    ]
    async with e2e.api() as api, fleet_of(e2e, behaviours) as fleet:
        healthy, unhealthy = sorted(fleet.agents, key=lambda d: int(d.rsplit("-", 1)[-1]))
        new = await upload(api, os.urandom(64 * 1024))
        old = await upload(api, os.urandom(64 * 1024), version="1.0")
        tid = await create(
            api,
            new["id"],
            [healthy, unhealthy],
            success="confirmed",
            timeouts={"confirm_s": 30},
            rollback_package_id=old["id"],
            rollback_on_failed_confirmation=True,
        )
        task = await finished(api, tid)
        assert task["status"] == "PartialSuccess", task
        assert task["failure_causes"][0]["code"] == int(FailureCause.HEALTH_CHECK_FAILED)

        async def linked() -> str | None:
            rid: str | None = (await api.get(f"/v1/tasks/{tid}")).json().get("rollback_task_id")
            return rid

        rid = await eventually(linked, "the automatic rollback", 30)
        rollback = await finished(api, rid)
        assert rollback["status"] == "Success", rollback
        rows = (await api.get(f"/v1/tasks/{rid}/devices")).json()["items"]
        assert [r["device_id"] for r in rows] == [unhealthy]
        assert fleet.agents[unhealthy].fw_version == "1.0"
        assert fleet.agents[healthy].fw_version == "2.0"
