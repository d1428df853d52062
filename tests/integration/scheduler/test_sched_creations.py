"""A task creation cut short (the replica died between saving the document and the first
status), through a live scheduler on the real Kafka and Redis: the reconciler stops the
task with a reason, wraps it up and releases its package; a creation that never saved a
document only gives its package back; a creation still within its time is left alone.
And a step Kafka refuses for good is counted, and the other tasks are paced on."""

from __future__ import annotations

import time

import orjson
import redis.asyncio

from scheduler import keys
from scheduler.creations import INTERRUPTED_REASON, STALE_MS
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import Harness, eventually

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


def long_ago() -> int:
    return int(time.time() * 1000) - STALE_MS - 60_000


async def test_a_task_left_initializing_is_stopped_and_its_package_released(
    harness: Harness, aredis: redis.asyncio.Redis[bytes]
) -> None:
    package = await harness.upload(b"cut short")
    later = int(time.time() * 1000) + 3_600_000
    tid = await harness.create_task(package["id"], ["cut-1", "cut-2"], schedule_time_ms=later)
    # What a replica dying right before the task's first status leaves behind.
    doc = orjson.loads(await aredis.get(keys.task(tid)) or b"{}")
    await aredis.set(keys.task(tid), orjson.dumps({**doc, "status": "Initializing"}))
    await aredis.srem(keys.ACTIVE_TASKS, tid)
    await aredis.hset(keys.CREATING, tid, f"{long_ago()} {package['id']}")

    stopped = await harness.wait_status(tid, "Stopped")
    assert stopped["reason"] == INTERRUPTED_REASON

    async def unlisted() -> bool:
        return not await aredis.hexists(keys.CREATING, tid)

    await eventually(unlisted, "the creation to be taken off the list")

    async def released() -> bool:
        deleted = await harness.client.delete(f"/v1/packages/{package['id']}")
        return deleted.status_code == 204

    await eventually(released, "the package to be released by the wrap-up")
    assert not await aredis.sismember(keys.ACTIVE_TASKS, tid)
    assert await aredis.pexpiretime(keys.task_devices(tid)) > 0  # type: ignore[attr-defined]


async def test_a_creation_without_a_document_gives_its_package_back(
    harness: Harness, aredis: redis.asyncio.Redis[bytes]
) -> None:
    package = await harness.upload(b"never saved")
    ghost, fresh = "0" * 32, "1" * 32
    await aredis.sadd(keys.package_users(package["id"]), ghost, fresh)
    now = int(time.time() * 1000)
    await aredis.hset(
        keys.CREATING,
        mapping={ghost: f"{long_ago()} {package['id']}", fresh: f"{now} {package['id']}"},
    )

    async def swept() -> bool:
        return not await aredis.hexists(keys.CREATING, ghost)

    await eventually(swept, "the cut-short creation to be swept")
    assert await aredis.smembers(keys.package_users(package["id"])) == {fresh.encode()}
    assert await aredis.hexists(keys.CREATING, fresh)  # the same pass left it alone


async def test_a_step_kafka_refuses_is_counted_and_the_other_tasks_go_on(
    harness: Harness, aredis: redis.asyncio.Redis[bytes]
) -> None:
    package = await harness.upload(b"refused step")
    later = int(time.time() * 1000) + 3_600_000
    stuck = await harness.create_task(package["id"], ["refused-1"], schedule_time_ms=later)
    # Its start publishes the document, which Kafka refuses for good: over 1 MB.
    doc = orjson.loads(await aredis.get(keys.task(stuck)) or b"{}")
    doc["name"] = "x" * 1_500_000
    doc["policy"]["schedule_time_ms"] = int(time.time() * 1000) - 1000
    await aredis.set(keys.task(stuck), orjson.dumps(doc))
    going = await harness.create_task(package["id"], ["refused-2"])
    released = await harness.wait_releases(1)
    assert [r.job.task_id for r in released] == [going]
    assert (await harness.anon.get("/healthz")).status_code == 200
    assert (await harness.task(stuck))["status"] == "Waiting"
    metrics = (await harness.client.get("/metrics")).text
    [errors] = [m for m in metrics.splitlines() if m.startswith("ota_scheduler_pace_errors_total")]
    assert float(errors.split()[-1]) >= 1
