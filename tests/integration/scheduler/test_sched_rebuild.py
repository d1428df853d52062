"""Losing Redis: the catalog (packages, tasks, groups, tags) comes back from Kafka; a task
that was running comes back stopped, saying its runtime was lost."""

from __future__ import annotations

import time
import uuid

import redis

from scheduler import keys
from scheduler.rebuild import LOST_REASON
from tests.integration.scheduler.conftest import StartHarness


async def test_catalog_is_restored_after_redis_is_lost(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness()
    device = f"rebuild-{uuid.uuid4().hex[:6]}"
    package = await first.upload(b"survives redis", product="boiler")
    await first.client.post("/v1/groups", json={"name": "east"})
    await first.client.post("/v1/groups", json={"name": "gone"})
    await first.client.post("/v1/groups/east/devices", json={"add": [device]})
    await first.client.patch(f"/v1/devices/{device}", json={"tags": ["beta"]})
    assert (await first.client.delete("/v1/groups/gone")).status_code == 204
    later = int(time.time() * 1000) + 3_600_000
    tid = await first.create_task(package["id"], [device], schedule_time_ms=later)
    await first.stop()

    sched_redis.flushdb()
    second = await start_harness(OTA_SCHEDULER_PORT=str(first.settings.http_port))
    got = await second.client.get(f"/v1/packages/{package['id']}")
    assert got.status_code == 200
    assert got.json()["sha256"] == package["sha256"]
    again = await second.upload(b"survives redis", product="boiler")
    assert again["id"] == package["id"]  # the dedupe index came back too
    groups = (await second.client.get("/v1/groups")).json()["items"]
    assert groups == [{"name": "east", "devices": 1}]
    tagged = (await second.client.get("/v1/devices", params={"tag": "beta"})).json()
    assert [d["device_id"] for d in tagged["items"]] == [device]
    task = (await second.client.get("/v1/tasks")).json()["items"]
    assert [(t["id"], t["status"], t["reason"]) for t in task] == [(tid, "Stopped", LOST_REASON)]
    assert not sched_redis.exists(keys.LOST_TASKS)
    listed = await second.client.get(f"/v1/tasks/{tid}/devices")
    assert listed.status_code == 410, listed.text
    assert listed.json()["error"]["code"] == "task_devices_lost"
    retried = await second.client.post(f"/v1/tasks/{tid}/retry")
    assert retried.status_code == 409, retried.text
    assert retried.json()["error"]["code"] == "task_devices_lost"
    await second.stop()

    # The stop was recorded on the tasks topic: a later loss restores it stopped.
    sched_redis.flushdb()
    third = await start_harness(OTA_SCHEDULER_PORT=str(first.settings.http_port))
    again = (await third.client.get(f"/v1/tasks/{tid}")).json()
    assert (again["status"], again["reason"]) == ("Stopped", LOST_REASON)
