"""Scheduler behaviours over the whole stack: real workers, gateway and download edge as
processes (`ota up`), reference devices on their own MQTT connections.

Covers what the simulated job events cannot prove end to end: a canary wave that misses
its threshold pauses the task until an operator resumes it, retry re-runs the failed
device as a new attempt, a busy device fails a second task with "Task Conflict" (and the
dry run counts it), and cancelling a task stops a device still waiting to come online.
"""

from __future__ import annotations

import fcntl
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from devices.behaviour import Behaviour
from devices.fleet import Fleet, FleetConfig, Mode
from ops.demo_env import StackPlan
from ops.fleet_group import registrar
from ota.catalog import FailureCause
from ota.settings import CommonSettings
from tests.integration.scheduler.conftest import LOCK_PATH
from tests.integration.scheduler.sched_harness import REDIS_DB, eventually
from tests.stack_kit import running_stack

FINISHED = ("Success", "Fail", "PartialSuccess", "Stopped")
POLICY_TIMEOUTS = {"online_s": 600, "version_s": 10, "verify_s": 10}


@dataclass
class Running:
    plan: StackPlan
    env: dict[str, str]

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.plan.api_url,
            headers={"Authorization": f"Bearer {self.plan.write_key}"},
            timeout=30,
        )

    def fleet(self, prefix: str, behaviours: list[Behaviour]) -> Fleet:
        config = FleetConfig.from_settings(
            CommonSettings.from_env(self.env),
            len(behaviours),
            mode=Mode.CONNECTIONS,
            prefix=prefix,
            behaviour_of=lambda index, _device: behaviours[index],
            register=registrar(self.plan),
        )
        return Fleet(config)


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, redis_url: str, mqtt_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:  # fmt: skip
    with LOCK_PATH.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # db 11 is the scheduler suites': take turns
        with running_stack(
            "sched",
            kafka_bootstrap=kafka_bootstrap,
            redis_url=redis_url,
            redis_db=REDIS_DB,
            state_dir=tmp_path_factory.mktemp("sched-stack"),
            extra=mqtt_env,
        ) as running:
            yield Running(running.plan, dict(running.env))


@pytest.fixture
async def api(stack: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with stack.api() as client:
        yield client


async def upload(api: httpx.AsyncClient) -> str:
    response = await api.post(
        "/v1/packages",
        params={"type": "firmware", "version": "2.0", "file_name": "fw.bin"},
        content=os.urandom(128 * 1024),
    )
    assert response.status_code == 201, response.text
    package_id: str = response.json()["id"]
    return package_id


async def create(api: httpx.AsyncClient, package_id: str, devices: list[str], **policy: Any) -> str:
    response = await api.post(
        "/v1/tasks",
        json={
            "type": "firmware",
            "package_id": package_id,
            "targets": {"device_ids": devices},
            "policy": {"timeouts": POLICY_TIMEOUTS, **policy},
        },
    )
    assert response.status_code == 201, response.text
    tid: str = response.json()["id"]
    return tid


async def status(
    api: httpx.AsyncClient, tid: str, wanted: tuple[str, ...], timeout_s: float = 90
) -> dict[str, Any]:
    last: dict[str, Any] = {}

    async def reached() -> dict[str, Any] | None:
        nonlocal last
        last = (await api.get(f"/v1/tasks/{tid}")).json()
        return last if last["status"] in wanted else None

    try:
        return await eventually(reached, f"task {tid} to be {wanted}", timeout_s)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the task: {last}") from None


async def test_canary_miss_pauses_then_resume_and_retry(
    stack: Running, api: httpx.AsyncClient
) -> None:
    prefix = f"fs-wave-{uuid.uuid4().hex[:6]}"
    behaviours = [Behaviour(fail_with=10), Behaviour(), Behaviour(), Behaviour()]
    async with stack.fleet(prefix, behaviours) as fleet:
        devices = list(fleet.agents)
        package_id = await upload(api)
        tid = await create(
            api, package_id, devices, waves=[{"count": 2, "success_threshold_pct": 100}]
        )
        paused = await status(api, tid, ("Paused",))
        assert "wave 1 missed its success threshold" in paused["reason"]
        assert paused["counts"]["states"]["PENDING"] == 2
        assert paused["failure_causes"] == [
            {
                "code": int(FailureCause.UPDATE_FAILED),
                "message": "Firmware update failed",
                "count": 1,
            }
        ]
        resumed = await api.post(f"/v1/tasks/{tid}/resume")
        assert resumed.status_code == 200, resumed.text
        done = await status(api, tid, FINISHED)
        assert done["status"] == "PartialSuccess"
        assert done["progress"]["succeeded"] == 3
        for device in devices[1:]:
            # The registry learns the new version from the inbox, on its own consumer.

            async def upgraded(device: str = device) -> bool:
                view = (await api.get(f"/v1/devices/{device}")).json()
                return bool(view["fw_version"] == "2.0")

            await eventually(upgraded, f"{device} to report 2.0", 30)
        retried = (await api.post(f"/v1/tasks/{tid}/retry")).json()
        assert retried["retried"] == 1
        again = await status(api, tid, FINISHED)
        assert again["status"] == "PartialSuccess"

        async def second_attempt() -> list[dict[str, Any]] | None:
            view = (await api.get(f"/v1/devices/{devices[0]}")).json()
            entries = [e for e in view["timeline"] if e["attempt"] == 2 and e["to"] == "FAILED"]
            return entries or None

        failed_again = await eventually(second_attempt, "attempt 2 to fail", 60)
        assert {e["cause"] for e in failed_again} == {int(FailureCause.UPDATE_FAILED)}


async def test_conflict_counted_and_failed_then_cancel_stops_the_waiting_device(
    stack: Running, api: httpx.AsyncClient
) -> None:
    prefix = f"fs-busy-{uuid.uuid4().hex[:6]}"
    async with stack.fleet(prefix, [Behaviour(offline_for_s=3600)]) as fleet:
        (device,) = list(fleet.agents)
        package_id = await upload(api)
        first = await create(api, package_id, [device])

        async def waiting_online() -> dict[str, Any] | None:
            response = await api.get(f"/v1/devices/{device}")
            job = response.json().get("current_job") if response.status_code == 200 else None
            return job if job and job["state"] == "WAITING_ONLINE" else None

        await eventually(waiting_online, "the offline device to wait for its online", 60)
        body = {"type": "firmware", "package_id": package_id, "targets": {"device_ids": [device]}}
        dry = (await api.post("/v1/tasks", params={"dry_run": "true"}, json=body)).json()
        assert dry["in_conflict"] == 1
        second = await create(api, package_id, [device])
        conflicted = await status(api, second, FINISHED)
        assert conflicted["status"] == "Fail"
        assert conflicted["failure_causes"][0]["code"] == int(FailureCause.TASK_CONFLICT)
        cancel = (await api.post(f"/v1/tasks/{first}/cancel")).json()
        assert cancel["cancel_requested"] == 1
        assert cancel["left_to_finish"] == 0
        stopped = await status(api, first, ("Stopped",))

        async def cancelled() -> dict[str, Any] | None:
            task: dict[str, Any] = (await api.get(f"/v1/tasks/{first}")).json()
            return task if task["counts"]["states"].get("CANCELLED") == 1 else None

        final = await eventually(cancelled, "the worker to cancel the job", 60)
        assert final["counts"]["statuses"]["Stopped"] == 1
        assert stopped["reason"] == "cancelled by operator"


async def test_max_in_flight_holds_while_real_devices_upgrade(
    stack: Running, api: httpx.AsyncClient
) -> None:
    prefix = f"fs-cap-{uuid.uuid4().hex[:6]}"
    cap = 2
    async with stack.fleet(prefix, [Behaviour(install_s=0.5) for _ in range(6)]) as fleet:
        package_id = await upload(api)
        tid = await create(api, package_id, list(fleet.agents), max_in_flight=cap)
        # The scheduler's own count, sampled until the task ends: a device installs for
        # half a second, so the cap is reached while the samples run.
        seen: list[int] = []

        async def finished() -> dict[str, Any] | None:
            task: dict[str, Any] = (await api.get(f"/v1/tasks/{tid}")).json()
            seen.append(task["progress"]["in_flight"])
            return task if task["status"] in FINISHED else None

        done = await eventually(finished, f"task {tid} to finish", 90)
        assert done["status"] == "Success", done
        assert max(seen) == cap
        assert done["progress"]["in_flight"] == 0
