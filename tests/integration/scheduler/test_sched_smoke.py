"""A task from upload to Success, driven by job events as a worker would send them."""

from __future__ import annotations

import uuid

from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import Harness

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


def devs(n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"smoke-{run}-{i}" for i in range(n)]


async def test_task_runs_to_success(harness: Harness) -> None:
    package = await harness.upload(b"firmware-bytes" * 100)
    devices = devs(3)
    tid = await harness.create_task(package["id"], devices)
    released = await harness.wait_releases(3)
    assert {r.device_id for r in released} == set(devices)
    assert all(r.job.task_id == tid and r.attempt == 1 for r in released)
    assert released[0].job.package.sha256 == package["sha256"]
    for d in devices:
        harness.job_event(d, tid, "SUCCEEDED", job_version=5)
    task = await harness.wait_status(tid, "Success")
    assert task["progress"]["succeeded"] == 3
