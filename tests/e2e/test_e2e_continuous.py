"""Continuous targeting end to end: a continuous task over a group, with real simulated
devices on their own MQTT connections and the services as processes. The group's member
is upgraded and the task stays open; a device that joins the group later is upgraded too;
a device that joins and leaves again before its release gets no job at all."""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from typing import Any

import httpx
from e2e_support import E2E, eventually, upload

from devices.behaviour import Behaviour
from devices.fleet import Fleet, FleetConfig, Mode, outcome_of
from ops.fleet_group import registrar

WAIT_S = 90.0


async def task_view(api: httpx.AsyncClient, tid: str) -> dict[str, Any]:
    response = await api.get(f"/v1/tasks/{tid}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_joiner_is_upgraded_and_a_leaver_gets_nothing(e2e: E2E) -> None:
    run = uuid.uuid4().hex[:8]
    config = FleetConfig.from_settings(
        e2e.common(),
        3,
        mode=Mode.CONNECTIONS,
        prefix=f"e2e-cont-{run}",
        behaviour_of=lambda _index, _device: Behaviour(),
    )
    member, joiner, leaver = config.device_ids()
    group = f"e2e-cont-{run}"
    async with e2e.api() as api, Fleet(replace(config, register=registrar(e2e.plan))) as fleet:
        pkg = await upload(api, os.urandom(64 * 1024))
        ok(await api.post("/v1/groups", json={"name": group}))
        ok(await api.post(f"/v1/groups/{group}/devices", json={"add": [member]}))
        task = ok(
            await api.post(
                "/v1/tasks",
                json={
                    "name": f"e2e continuous {run}",
                    "type": "firmware",
                    "package_id": pkg["id"],
                    "targets": {"groups": [group]},
                    "policy": {"continuous": True},
                },
            )
        )
        tid = task["id"]

        seen: dict[str, Any] = {}

        async def succeeded(n: int) -> dict[str, Any] | None:
            view = await task_view(api, tid)
            seen.update(task=view, member=(await api.get(f"/v1/devices/{member}")).json())
            return view if view["progress"]["succeeded"] == n else None

        try:
            view = await eventually(lambda: succeeded(1), "the member's upgrade", WAIT_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last seen: {seen}") from None
        assert view["status"] == "Processing"  # open, so not Success

        # Paused, the task takes joiners in but releases nobody: the leaver can leave
        # while it is still pending.
        ok(await api.post(f"/v1/tasks/{tid}/pause"))
        ok(await api.post(f"/v1/groups/{group}/devices", json={"add": [leaver]}))
        ok(await api.post(f"/v1/groups/{group}/devices", json={"add": [joiner]}))

        async def joined(n: int, removed: int) -> dict[str, Any] | None:
            view = await task_view(api, tid)
            follow = view["continuous"]
            return view if (follow["joined"], follow["removed"]) == (n, removed) else None

        view = await eventually(lambda: joined(2, 0), "both joiners to be pending", WAIT_S)
        assert view["counts"]["states"]["PENDING"] == 2
        ok(await api.post(f"/v1/groups/{group}/devices", json={"remove": [leaver]}))
        view = await eventually(lambda: joined(2, 1), "the leaver to be removed", WAIT_S)
        assert view["counts"]["states"]["PENDING"] == 1
        ok(await api.post(f"/v1/tasks/{tid}/resume"))

        view = await eventually(lambda: succeeded(2), "the joiner's upgrade", WAIT_S)
        assert view["status"] == "Processing"
        assert view["progress"]["total"] == 2
        rows = (await api.get(f"/v1/tasks/{tid}/devices")).json()["items"]
        assert {r["device_id"]: r["state"] for r in rows} == {
            member: "SUCCEEDED",
            joiner: "SUCCEEDED",
        }
        outcomes = {d: outcome_of(agent) for d, agent in fleet.agents.items()}
        assert outcomes == {member: "succeeded", joiner: "succeeded", leaver: "idle"}
        assert fleet.agents[leaver].outcome.upgrade_commands == 0
        # The leaver joined before the joiner: had it been kept, the release list would
        # have started it first. Its registry view shows no job of this task.
        shown = ok(await api.get(f"/v1/devices/{leaver}"))
        assert [e for e in shown["timeline"] if e["task_id"] == tid] == []

        ok(await api.post(f"/v1/tasks/{tid}/cancel"))
