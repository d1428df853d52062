"""Losing Redis: the catalog (packages, tasks, groups, tags) comes back from Kafka; a
running task is rebuilt from its recorded device list and its job events and goes on
with exact counts, releasing no device twice; one that cannot be rebuilt comes back
stopped, saying its runtime was lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import redis

from ota.catalog import FailureCause
from scheduler import keys
from scheduler.flush_mark import RedisFlushedError
from scheduler.rebuild import LOST_REASON, read_latest
from scheduler.task_lists import chunk_key
from tests.faults.webhook_inbox import SECRET, WebhookInbox, WebhookRepeats
from tests.integration.scheduler.conftest import ON_BOTH, StartHarness
from tests.integration.scheduler.sched_harness import Harness, eventually

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


async def device_states(harness: Harness, tid: str) -> dict[str, tuple[str, int, int | None]]:
    listed = (await harness.client.get(f"/v1/tasks/{tid}/devices", params={"limit": 100})).json()
    return {d["device_id"]: (d["state"], d["attempt"], d["wave"]) for d in listed["items"]}


async def rebuilt_after_a_flush(
    start: StartHarness, first: Harness, sched_redis: redis.Redis[bytes], tid: str
) -> Harness:
    """Empty Redis, start a scheduler in `first`'s place and consumer groups (their offsets
    say what was applied) and check that it rebuilt the running task `tid`."""
    sched_redis.flushdb()
    second = await start(
        OTA_SCHEDULER_PORT=str(first.settings.http_port),
        OTA_SCHEDULER_GROUP=first.settings.consumer_group,
    )
    rebuilt = await second.task(tid)
    assert rebuilt["status"] == "Processing"
    assert rebuilt["runtime"]["rebuilt_ms"] is not None
    return second


async def test_a_running_task_is_rebuilt_and_goes_on_with_exact_counts(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness()
    hooks = WebhookInbox()
    hooks.start()
    hook = {"url": hooks.url, "secret": SECRET, "events": ["device_result"]}
    assert (await first.client.post("/v1/webhooks", json=hook)).status_code == 201
    d = [f"resume-{uuid.uuid4().hex[:6]}-{i}" for i in range(8)]
    package = await first.upload(b"rebuilt from kafka")
    tid = await first.create_task(
        package["id"], d, waves=[{"count": 3, "success_threshold_pct": 60}]
    )
    await first.wait_releases(3)
    first.job_event(d[0], tid, "SUCCEEDED", job_version=4)
    first.job_event(d[1], tid, "SUCCEEDED", job_version=4)
    first.job_event(d[2], tid, "FAILED", job_version=3, cause=int(FailureCause.LOW_BATTERY))
    await first.wait_releases(8)  # wave 1 passed (2 of 3): the rest is released
    first.job_event(d[3], tid, "DOWNLOADING", job_version=2)
    first.job_event(d[4], tid, "QUERYING_VERSION", job_version=1)
    first.job_event(d[4], tid, "SUCCEEDED", job_version=5)
    first.job_event(d[5], tid, "COMMAND_SENT", job_version=3)
    first.job_event(d[5], tid, "QUERYING_VERSION", job_version=2)  # late: changes nothing
    # d[6] and d[7] were released; their workers have not answered yet.

    async def applied() -> dict[str, Any] | None:
        task = await first.task(tid)
        return (
            task
            if task["progress"]["succeeded"] == 3 and task["progress"]["in_flight"] == 4
            else None
        )

    before = await eventually(applied, "the events to be applied")
    states_before = await device_states(first, tid)
    first_starts = {r.device_id: r.id for r in await first.releases() if r.job.task_id == tid}
    finished = {d[0], d[1], d[2], d[4]}
    assert await asyncio.to_thread(hooks.wait_for, finished, 30), hooks.device_results()
    await first.stop()

    second = await rebuilt_after_a_flush(start_harness, first, sched_redis, tid)
    assert before["runtime"]["rebuilt_ms"] is None

    # The results of the last minutes go to the webhooks again, under the same ids.
    async def told_again() -> bool:
        return hooks.repeats() == WebhookRepeats(same_id=len(finished), new_id=0)

    await eventually(told_again, "the results to be told again")
    # The two devices with no event are released again, under the same record ids.
    starts = await second.wait_releases(10)
    again = [(r.device_id, r.id) for r in starts if r.job.task_id == tid]
    assert sorted(again) == sorted([*first_starts.items(), *((x, first_starts[x]) for x in d[6:])])

    async def same_states() -> bool:
        return await device_states(second, tid) == states_before

    await eventually(same_states, "the rebuilt states to equal the ones before")
    after = await second.task(tid)
    for field in ("progress", "waves", "failure_causes"):
        assert after[field] == before[field], field
    assert states_before[d[5]] == ("COMMAND_SENT", 1, 2)
    assert states_before[d[2]] == ("FAILED", 1, 1)

    for x in (d[3], d[5], d[6], d[7]):
        second.job_event(x, tid, "SUCCEEDED", job_version=9)
    done = await second.wait_status(tid, "PartialSuccess")
    assert done["progress"] == {**done["progress"], "succeeded": 7, "failed": 1, "in_flight": 0}
    # A finished task's list is tombstoned: the topic keeps only running tasks' lists.
    topic = second.topics.task_devices

    async def forgotten() -> bool:
        latest = (await asyncio.to_thread(read_latest, second.settings.common, [topic]))[topic]
        return latest.get(chunk_key(tid, 0), b"") is None

    await eventually(forgotten, "the finished task's list to be tombstoned")
    assert hooks.device_results() == set(d)
    hooks.stop()


async def test_a_scheduler_stops_when_redis_is_emptied_under_it(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness()
    package = await first.upload(b"flushed under it")
    tid = await first.create_task(package["id"], [f"flushed-{uuid.uuid4().hex[:6]}"])
    await first.wait_releases(1)
    sched_redis.flushdb()
    assert isinstance(await first.wait_failed(), RedisFlushedError)
    second = await start_harness(OTA_SCHEDULER_PORT=str(first.settings.http_port))
    assert (await second.task(tid))["status"] == "Processing"
    assert sched_redis.sismember(keys.ACTIVE_TASKS, tid)


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
    # Without its recorded device list, the task cannot be rebuilt.
    first.produce_raw(first.topics.task_devices, chunk_key(tid, 0), None)
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


async def test_the_registry_is_refilled_from_the_inbox_after_redis_is_lost(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness()
    a, b = (f"registry-{uuid.uuid4().hex[:6]}" for _ in range(2))
    first.report(a, fw="1.0", sw="s1")
    first.presence(a, True)
    first.report(b, fw="2.0")
    first.report(b, fw="2.1")  # newer: the replay must not undo it with 2.0
    first.presence(b, True)
    first.presence(b, False)
    await first.wait_device(a, fw_version="1.0", sw_version="s1", online=True)
    await first.wait_device(b, fw_version="2.1", online=False)
    await first.stop()  # the registry group commits each batch it applied

    sched_redis.flushdb()
    # The same groups: the registry group goes on from its committed offsets, so only the
    # replay can bring the devices back (none of them reports again).
    second = await start_harness(
        OTA_SCHEDULER_GROUP=first.settings.consumer_group,
        OTA_SCHEDULER_PORT=str(first.settings.http_port),
    )
    await second.wait_device(a, fw_version="1.0", sw_version="s1", online=True)
    await second.wait_device(b, fw_version="2.1", online=False)
    online = (await second.client.get("/v1/devices", params={"online": "true"})).json()
    assert a in [d["device_id"] for d in online["items"]]


async def job_state(harness: Harness, device: str, tid: str, state: str) -> dict[str, Any]:
    async def shown() -> dict[str, Any] | None:
        body: dict[str, Any] = (await harness.client.get(f"/v1/devices/{device}")).json()
        job = body.get("current_job") or {}
        return body if (job.get("task_id"), job.get("state")) == (tid, state) else None

    return await eventually(shown, f"{device}'s job to be {state}")


async def test_devices_get_their_jobs_and_timelines_back_after_redis_is_lost(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness()
    a, b = (f"timeline-{uuid.uuid4().hex[:6]}" for _ in range(2))
    package = await first.upload(b"timelines come back")
    tid = await first.create_task(package["id"], [a, b])
    await first.wait_releases(2)
    first.report(a, fw="1.0")
    first.job_event(a, tid, "QUERYING_VERSION", job_version=1)
    first.job_event(a, tid, "DOWNLOADING", from_state="QUERYING_VERSION", job_version=2)
    first.job_event(a, tid, "SUCCEEDED", from_state="UPDATING", job_version=5)
    first.job_event(b, tid, "QUERYING_VERSION", job_version=1)
    first.job_event(b, tid, "DOWNLOADING", from_state="QUERYING_VERSION", job_version=2)
    await first.wait_device(a, fw_version="1.0")
    shown_a = await job_state(first, a, tid, "SUCCEEDED")
    shown_b = await job_state(first, b, tid, "DOWNLOADING")
    assert [e["to"] for e in shown_a["timeline"]] == [
        "SUCCEEDED",
        "DOWNLOADING",
        "QUERYING_VERSION",
    ]
    assert [e["to"] for e in shown_b["timeline"]] == ["DOWNLOADING", "QUERYING_VERSION"]
    await first.stop()  # both groups commit each batch they applied
    # Past the committed offsets: the group applies it once the replay is done, on top.
    first.job_event(b, tid, "SUCCEEDED", from_state="UPDATING", job_version=5)

    sched_redis.flushdb()
    # The same groups: they go on from their committed offsets, so only the replay can
    # bring the jobs and timelines back (no device sends anything again).
    second = await start_harness(
        OTA_SCHEDULER_GROUP=first.settings.consumer_group,
        OTA_SCHEDULER_PORT=str(first.settings.http_port),
    )
    await second.wait_device(a, **shown_a)  # the whole view, timeline and history
    after_b = await job_state(second, b, tid, "SUCCEEDED")
    # Its success folded the try's earlier entries into the result: their states and
    # times stay, their ids and details are in the log.
    folded = [e | {"id": None, "detail": {}} for e in shown_b["timeline"]]
    assert after_b["timeline"][1:] == folded
    assert after_b["timeline"][0]["to"] == "SUCCEEDED"


async def test_a_continuous_task_is_rebuilt_and_its_members_join_again(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness()
    run = uuid.uuid4().hex[:6]
    a, b, c, e = (f"cont-{run}-{x}" for x in "abce")
    group = f"cont-{run}"
    assert (await first.client.post("/v1/groups", json={"name": group})).status_code == 201

    async def add(harness: Harness, device: str) -> None:
        answer = await harness.client.post(f"/v1/groups/{group}/devices", json={"add": [device]})
        assert answer.status_code == 200, answer.text

    await add(first, a)
    package = await first.upload(b"continuous, rebuilt")
    answer = await first.client.post(
        "/v1/tasks",
        json={
            "type": "firmware",
            "package_id": package["id"],
            "targets": {"groups": [group]},
            "policy": {"continuous": True, "max_in_flight": 1},
        },
    )
    assert answer.status_code == 201, answer.text
    tid = answer.json()["id"]
    await first.wait_releases(1)
    await add(first, b)  # joins, pending behind a
    first.job_event(a, tid, "SUCCEEDED", job_version=4)
    await first.wait_releases(2)  # b released once a finished
    first.job_event(b, tid, "DOWNLOADING", job_version=2)
    await add(first, c)  # joins, pending behind b: never released before the loss

    async def settled() -> dict[str, Any] | None:
        task = await first.task(tid)
        states = task["counts"]["states"]
        seen = (states.get("SUCCEEDED"), states.get("DOWNLOADING"), states.get("PENDING"))
        return task if seen == (1, 1, 1) and task["continuous"]["joined"] == 2 else None

    await eventually(settled, "a succeeded, b downloading, c pending")
    await first.stop()

    second = await rebuilt_after_a_flush(start_harness, first, sched_redis, tid)

    async def rejoined() -> dict[str, tuple[str, int, int | None]] | None:
        states = await device_states(second, tid)
        return states if set(states) == {a, b, c} else None

    states = await eventually(rejoined, "c to join again, behind b")
    assert states[a][0] == "SUCCEEDED"
    assert states[b][0] == "DOWNLOADING"
    assert states[c][0] == "PENDING"
    await add(second, e)  # a member after the loss joins too
    second.job_event(b, tid, "SUCCEEDED", job_version=5)
    await second.wait_releases(3)
    second.job_event(c, tid, "SUCCEEDED", job_version=4)
    await second.wait_releases(4)
    second.job_event(e, tid, "SUCCEEDED", job_version=4)

    async def all_done() -> dict[str, Any] | None:
        task = await second.task(tid)
        return task if task["progress"]["succeeded"] == 4 else None

    task = await eventually(all_done, "every member to succeed")
    assert task["status"] == "Processing"  # open
    assert task["progress"]["total"] == 4
    assert task["continuous"]["joined"] == 3  # b before the loss, c and e after
    starts = [(r.device_id, r.id) for r in await second.releases() if r.job.task_id == tid]
    assert sorted(d for d, _ in starts) == sorted([a, b, c, e])  # none released twice


async def test_a_task_retried_after_it_finished_is_rebuilt(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness()
    run = uuid.uuid4().hex[:6]
    d = [f"retried-{run}-{i}" for i in range(4)]
    package = await first.upload(b"retried, then rebuilt")
    tid = await first.create_task(
        package["id"], d, waves=[{"count": 2, "success_threshold_pct": 50}]
    )
    await first.wait_releases(2)
    first.job_event(d[0], tid, "SUCCEEDED", job_version=4)
    first.job_event(d[1], tid, "FAILED", job_version=3, cause=int(FailureCause.LOW_BATTERY))
    await first.wait_releases(4)
    first.job_event(d[2], tid, "FAILED", job_version=2, cause=int(FailureCause.LOW_BATTERY))
    first.job_event(d[3], tid, "SUCCEEDED", job_version=4)
    await first.wait_status(tid, "PartialSuccess")
    retried = await first.client.post(f"/v1/tasks/{tid}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["retried"] == 2
    starts = {(r.device_id, r.attempt): r.id for r in await first.wait_releases(6)}
    assert {key for key in starts if key[1] == 2} == {(d[1], 2), (d[2], 2)}
    first.job_event(d[1], tid, "SUCCEEDED", attempt=2, job_version=4)
    # d[2]'s retry was released; its worker has not answered yet.

    async def applied() -> dict[str, Any] | None:
        task = await first.task(tid)
        return task if task["progress"]["succeeded"] == 3 else None

    before = await eventually(applied, "d[1]'s second attempt to succeed")
    states_before = await device_states(first, tid)
    assert states_before[d[2]][:2] == ("RELEASED", 2)
    await first.stop()

    second = await rebuilt_after_a_flush(start_harness, first, sched_redis, tid)
    # d[2], with no event of its retry, is released again under the same record id.
    again = [(r.device_id, r.attempt, r.id) for r in await second.wait_releases(7)]
    assert sorted(again) == sorted(
        [*((x, attempt, i) for (x, attempt), i in starts.items()), (d[2], 2, starts[(d[2], 2)])]
    )

    async def same_states() -> bool:
        return await device_states(second, tid) == states_before

    await eventually(same_states, "the rebuilt states to equal the ones before")
    after = await second.task(tid)
    for field in ("progress", "waves", "failure_causes"):
        assert after[field] == before[field], field
    second.job_event(d[2], tid, "SUCCEEDED", attempt=2, job_version=4)
    done = await second.wait_status(tid, "Success")
    assert done["progress"]["succeeded"] == 4
    assert len(await second.wait_releases(7)) == 7  # none released again after that
