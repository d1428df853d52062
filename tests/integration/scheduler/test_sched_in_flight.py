"""policy.max_in_flight against a live scheduler: the test plays the workers, so a device
finishes only when the test says so, and every release is read back from the inbox."""

from __future__ import annotations

import uuid
from typing import Any

from scheduler.policy import MAX_IN_FLIGHT
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import Harness, eventually

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

CAP = 3


def ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i:03d}" for i in range(n)]


async def released(harness: Harness, tid: str) -> list[str]:
    return [r.device_id for r in await harness.releases() if r.job.task_id == tid]


async def test_never_more_than_max_in_flight_released_and_unfinished(harness: Harness) -> None:
    devices = ids("cap", 12)
    package = await harness.upload(b"in-flight")
    tid = await harness.create_task(package["id"], devices, max_in_flight=CAP, retry_count=1)
    finished: set[str] = set()
    peak = 0

    async def check(expect_released: int) -> dict[str, Any]:
        """Wait until exactly the next devices of the list are released, then read the task."""
        nonlocal peak

        async def settled() -> list[str] | None:
            got = await released(harness, tid)
            return got if len(got) >= expect_released else None

        got = await eventually(settled, f"{expect_released} releases of {tid}")
        # One more read of the inbox: a release beyond the cap would show up here.
        # Releases land on the partitions of their devices, and reading several partitions
        # back interleaves them in no set order: compare as sorted lists (the ids sort in
        # list order), which still shows exactly the first devices were released.
        got = sorted(await released(harness, tid))
        assert got == devices[:expect_released], "released beyond max_in_flight"
        assert len(set(got) - finished) <= CAP

        async def counted() -> dict[str, Any] | None:
            task = await harness.task(tid)
            done = task["progress"]["finished"] == len(finished)
            return task if done and task["runtime"]["released"] == expect_released else None

        task = await eventually(counted, f"task {tid} to count {len(finished)} finished")
        assert task["progress"]["in_flight"] == expect_released - len(finished)
        peak = max(peak, task["progress"]["in_flight"])
        return task

    task = await check(CAP)
    assert task["policy"]["max_in_flight"] == CAP
    # Working and waiting-for-retry devices hold their places; only finishing frees one.
    harness.job_event(devices[0], tid, "QUERYING_VERSION")
    harness.job_event(devices[1], tid, "WAITING_RETRY", from_state="QUERYING_VERSION")

    async def retrying() -> dict[str, Any] | None:
        task = await harness.task(tid)
        return task if task["counts"]["states"].get("WAITING_RETRY") == 1 else None

    held = await eventually(retrying, "a device waiting for a retry")
    assert held["progress"]["in_flight"] == CAP
    assert sorted(await released(harness, tid)) == devices[:CAP]

    harness.job_event(devices[2], tid, "SUCCEEDED", job_version=2)
    finished.add(devices[2])
    await check(CAP + 1)
    harness.job_event(devices[1], tid, "QUERYING_VERSION", job_version=2)
    harness.job_event(devices[1], tid, "SUCCEEDED", job_version=3)
    finished.add(devices[1])
    await check(CAP + 2)
    # The rest one at a time, oldest first, some failing.
    while len(finished) < len(devices):
        nxt = next(d for d in devices if d not in finished)
        failing = devices.index(nxt) % 4 == 0
        harness.job_event(
            nxt,
            tid,
            "FAILED" if failing else "SUCCEEDED",
            job_version=4,
            cause=22 if failing else None,
        )
        finished.add(nxt)
        await check(min(len(devices), len(finished) + CAP))
    done = await harness.wait_status(tid, "PartialSuccess")
    assert done["progress"]["in_flight"] == 0
    assert peak == CAP


async def test_openapi_documents_max_in_flight(harness: Harness) -> None:
    doc = (await harness.anon.get("/v1/openapi.json")).json()
    create = doc["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    field = create["schema"]["properties"]["policy"]["properties"]["max_in_flight"]
    assert (field["type"], field["minimum"], field["maximum"]) == ("integer", 1, MAX_IN_FLIGHT)
