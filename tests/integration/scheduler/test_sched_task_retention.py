"""A finished task's per-device states expire OTA_TASK_DEVICES_RETENTION_S after its
wrap-up, through a live scheduler on the real Kafka and Redis: its document and counts
stay, a late event's new state index expires with the rest, a retry keeps them again, and
once they are gone the device list, a retry and a rollback are refused with
`task_devices_expired` (the console says the same)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis.asyncio

from ota.catalog import FailureCause
from scheduler import keys
from scheduler.task_retention import EXPIRED, LOST, gone
from tests.integration.scheduler.conftest import ON_BOTH, StartHarness
from tests.integration.scheduler.sched_harness import Harness, eventually
from tests.integration.scheduler.test_sched_console_audit import console_page

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

CAUSE = int(FailureCause.LOW_BATTERY)


def ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i:03d}" for i in range(n)]


async def wrapped_up(harness: Harness, tid: str) -> dict[str, Any]:
    """The task's view once the reconciler has set its per-device states to expire."""

    async def expiring() -> dict[str, Any] | None:
        task = await harness.task(tid)
        return task if task["runtime"]["devices_expire_ms"] is not None else None

    return await eventually(expiring, f"task {tid} to be wrapped up")


async def expiry_of(aredis: redis.asyncio.Redis[bytes], key: str) -> int:
    return int(await aredis.pexpiretime(key))  # type: ignore[attr-defined]  # stubs lag


async def test_states_expire_with_the_task_and_a_retry_keeps_them(
    start_harness: StartHarness, aredis: redis.asyncio.Redis[bytes]
) -> None:
    harness = await start_harness(OTA_TASK_DEVICES_RETENTION_S="3600")
    devices = ids("keep", 3)
    package = await harness.upload(b"task retention")
    tid = await harness.create_task(package["id"], devices)
    await harness.wait_releases(3)
    for device in devices:
        harness.job_event(device, tid, "FAILED", job_version=3, cause=CAUSE)
    await harness.wait_status(tid, "Fail")
    task = await wrapped_up(harness, tid)
    at = task["runtime"]["devices_expire_ms"]
    per_device = [
        keys.task_devices(tid),
        keys.task_list(tid),
        keys.task_state_index(tid, "FAILED"),
    ]
    assert [await expiry_of(aredis, k) for k in per_device] == [at] * 3
    for kept in (keys.task(tid), keys.task_counts(tid), keys.task_runtime(tid)):
        assert await expiry_of(aredis, kept) == -1, kept

    # A late success starts the SUCCEEDED index: it goes with the others.
    harness.job_event(devices[0], tid, "SUCCEEDED", job_version=9)

    async def counted() -> bool:
        return bool((await harness.task(tid))["progress"]["succeeded"] == 1)

    await eventually(counted, "the late success to be counted")
    assert await expiry_of(aredis, keys.task_state_index(tid, "SUCCEEDED")) == at

    retried = await harness.client.post(f"/v1/tasks/{tid}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["task"]["runtime"]["devices_expire_ms"] is None
    for key in [*per_device, keys.task_state_index(tid, "PENDING")]:
        assert await expiry_of(aredis, key) in (-1, -2), key  # -2: emptied by the retry
    assert await expiry_of(aredis, keys.task_devices(tid)) == -1
    await harness.wait_releases(5)
    for device in devices[1:]:
        harness.job_event(device, tid, "SUCCEEDED", attempt=2, job_version=3)
    await harness.wait_status(tid, "Success")
    again = await wrapped_up(harness, tid)
    assert again["runtime"]["devices_expire_ms"] >= at
    assert await expiry_of(aredis, keys.task_devices(tid)) == again["runtime"]["devices_expire_ms"]


async def test_past_the_retention_the_counts_stay_and_the_devices_are_refused(
    start_harness: StartHarness, aredis: redis.asyncio.Redis[bytes]
) -> None:
    harness = await start_harness(OTA_TASK_DEVICES_RETENTION_S="1")
    devices = ids("gone", 2)
    package = await harness.upload(b"task retention gone")
    rollback = await harness.upload(b"task retention old", version="1.0")
    tid = await harness.create_task(package["id"], devices, rollback_package_id=rollback["id"])
    await harness.wait_releases(2)
    harness.job_event(devices[0], tid, "SUCCEEDED", job_version=3)
    harness.job_event(devices[1], tid, "FAILED", job_version=3, cause=CAUSE)
    await harness.wait_status(tid, "PartialSuccess")
    await wrapped_up(harness, tid)

    async def expired() -> bool:
        return not await aredis.exists(keys.task_devices(tid))

    await eventually(expired, "the task's per-device states to expire")
    task = await harness.task(tid)
    assert task["status"] == "PartialSuccess"
    assert (task["progress"]["succeeded"], task["progress"]["failed"]) == (1, 1)
    assert task["failure_causes"][0]["code"] == CAUSE

    listed = await harness.client.get(f"/v1/tasks/{tid}/devices")
    assert listed.status_code == 410, listed.text
    error = listed.json()["error"]
    assert error["code"] == "task_devices_expired"
    assert "OTA_TASK_DEVICES_RETENTION_S" in error["message"]
    for operation in ("retry", "rollback"):
        refused = await harness.client.post(f"/v1/tasks/{tid}/{operation}")
        assert refused.status_code == 409, (operation, refused.text)
        assert refused.json()["error"]["code"] == "task_devices_expired", operation
    assert not await aredis.sismember(keys.package_users(package["id"]), tid)
    assert not await aredis.sismember(keys.ACTIVE_TASKS, tid)

    page = await console_page(harness, f"/console/tasks/{tid}")
    assert "per-device states passed their retention" in page


async def test_a_task_that_never_had_devices_is_not_said_to_have_lost_them(
    aredis: redis.asyncio.Redis[bytes],
) -> None:
    """A continuous task that finished with no device has no per-device keys before its
    retention ends: nothing is gone. Once past it, or after a lost Redis, it is."""
    tid = uuid.uuid4().hex
    later = int(time.time() * 1000) + 3_600_000
    await aredis.hset(keys.task_runtime(tid), "devices_expire_ms", later)
    assert await gone(aredis, tid) is None
    await aredis.hset(keys.task_runtime(tid), "devices_expire_ms", later - 7_200_000)
    assert (await gone(aredis, tid) or ("",))[0] == EXPIRED
    await aredis.hset(keys.task_runtime(tid), "lost_ms", later)
    assert (await gone(aredis, tid) or ("",))[0] == LOST
    await aredis.hset(keys.task_devices(tid), "d-1", b"SUCCEEDED|1|3||0")
    assert await gone(aredis, tid) is None  # held
