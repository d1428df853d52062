"""Rollouts driven by job events as workers send them: waves, thresholds, approval, abort,
cancel, retry, replayed events, and a scheduler restart mid-task."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import redis.asyncio

from ota.catalog import FailureCause
from scheduler import keys
from tests.integration.scheduler.conftest import ON_BOTH, StartHarness
from tests.integration.scheduler.sched_harness import Harness, eventually

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


def ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i:03d}" for i in range(n)]


async def released_devices(harness: Harness, tid: str) -> set[str]:
    return {r.device_id for r in await harness.releases() if r.job.task_id == tid}


async def test_waves_release_in_order_and_pause_on_missed_threshold(harness: Harness) -> None:
    devices = ids("wave", 10)
    package = await harness.upload(b"waves")
    tid = await harness.create_task(
        package["id"],
        devices,
        waves=[
            {"count": 2, "success_threshold_pct": 100},
            {"count": 3, "success_threshold_pct": 66},
        ],
    )
    await harness.wait_releases(2)
    first = await released_devices(harness, tid)
    assert first == set(devices[:2])
    for d in devices[:2]:
        harness.job_event(d, tid, "SUCCEEDED", job_version=4)
    await harness.wait_releases(5)
    assert await released_devices(harness, tid) == set(devices[:5])
    # Wave 2 needs 2 of 3 successes: two failures make that impossible, so the task pauses.
    harness.job_event(devices[2], tid, "FAILED", job_version=4, cause=int(FailureCause.LOW_BATTERY))
    harness.job_event(devices[3], tid, "FAILED", job_version=4, cause=int(FailureCause.LOW_BATTERY))
    paused = await harness.wait_status(tid, "Paused")
    assert "wave 2 missed its success threshold" in paused["reason"]
    assert paused["failure_causes"] == [
        {"code": int(FailureCause.LOW_BATTERY), "message": "Low battery", "count": 2}
    ]
    assert paused["waves"][1]["failed"] == 2
    assert len(await harness.releases()) == 5
    # The operator overrides: resuming starts the final wave.
    resumed = await harness.client.post(f"/v1/tasks/{tid}/resume")
    assert resumed.json()["status"] == "Processing"
    await harness.wait_releases(10)
    assert await released_devices(harness, tid) == set(devices)
    for d in devices[4:]:
        harness.job_event(d, tid, "SUCCEEDED", job_version=4)
    done = await harness.wait_status(tid, "PartialSuccess")
    assert done["progress"]["succeeded"] == 8
    assert done["progress"]["failed"] == 2


async def test_approval_wave_waits_for_the_operator(harness: Harness) -> None:
    devices = ids("appr", 4)
    package = await harness.upload(b"approval")
    tid = await harness.create_task(
        package["id"], devices, waves=[{"count": 1, "success_threshold_pct": 100, "approval": True}]
    )
    await harness.wait_releases(1)
    harness.job_event(devices[0], tid, "SUCCEEDED", job_version=2)
    paused = await harness.wait_status(tid, "Paused")
    assert "waiting for approval" in paused["reason"]
    assert paused["runtime"]["hold"] == "approval"
    assert len(await harness.releases()) == 1
    await harness.client.post(f"/v1/tasks/{tid}/resume")
    await harness.wait_releases(4)


async def test_abort_criteria_stop_the_task(harness: Harness) -> None:
    devices = ids("abort", 6)
    package = await harness.upload(b"abort")
    tid = await harness.create_task(
        package["id"],
        devices,
        waves=[{"count": 3}],
        abort=[{"failure_pct": 50, "min_finished": 2}],
    )
    await harness.wait_releases(3)
    harness.job_event(devices[0], tid, "FAILED", job_version=2, cause=28)
    harness.job_event(devices[1], tid, "SUCCEEDED", job_version=2)
    stopped = await harness.wait_status(tid, "Stopped")
    assert stopped["reason"].startswith("aborted: failures reached 50.0% of 2")

    async def cancels_sent() -> bool:
        listed = (
            await harness.client.get(f"/v1/tasks/{tid}/devices", params={"status": "Stopped"})
        ).json()
        return len(listed["items"]) == 3  # the three never-released devices

    await eventually(cancels_sent, "unreleased devices to be stopped")
    assert len(await released_devices(harness, tid)) == 3


async def test_cancel_stops_unstarted_and_reports_in_flight(harness: Harness) -> None:
    devices = ids("cancel", 6)
    package = await harness.upload(b"cancel")
    tid = await harness.create_task(package["id"], devices, waves=[{"count": 3}])
    await harness.wait_releases(3)
    harness.job_event(devices[0], tid, "WAITING_ONLINE", job_version=1)
    harness.job_event(devices[1], tid, "DOWNLOADING", job_version=4)

    async def applied() -> bool:
        task = await harness.task(tid)
        states = task["counts"]["states"]
        return bool(states.get("DOWNLOADING") == 1 and states.get("WAITING_ONLINE") == 1)

    await eventually(applied, "job events to be counted")
    result = (await harness.client.post(f"/v1/tasks/{tid}/cancel")).json()
    assert result["not_started"] == 3
    assert result["cancel_requested"] == 2  # WAITING_ONLINE and the released one
    assert result["left_to_finish"] == 1
    assert result["left_to_finish_states"] == ["DOWNLOADING"]
    assert result["task"]["status"] == "Stopped"
    # The workers answer the cancels; the downloading device finishes on its own.
    harness.job_event(devices[0], tid, "CANCELLED", job_version=2)
    harness.job_event(devices[2], tid, "CANCELLED", job_version=1)
    harness.job_event(devices[1], tid, "SUCCEEDED", job_version=6)

    async def settled() -> dict[str, Any] | None:
        task = await harness.task(tid)
        return task if task["progress"]["finished"] == 6 else None

    task = await eventually(settled, "every device to be terminal")
    assert task["status"] == "Stopped"
    assert task["counts"]["statuses"]["Stopped"] == 5
    assert task["counts"]["statuses"]["Success"] == 1
    assert await released_devices(harness, tid) == set(devices[:3])


async def test_retry_reruns_failed_and_stopped_devices(harness: Harness) -> None:
    devices = ids("retry", 3)
    package = await harness.upload(b"retry")
    tid = await harness.create_task(package["id"], devices)
    await harness.wait_releases(3)
    harness.job_event(devices[0], tid, "SUCCEEDED", job_version=3)
    harness.job_event(devices[1], tid, "FAILED", job_version=3, cause=24)
    harness.job_event(devices[2], tid, "CANCELLED", job_version=2)
    await harness.wait_status(tid, "PartialSuccess")
    retried = await harness.client.post(f"/v1/tasks/{tid}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["retried"] == 2
    records = await harness.wait_releases(5)
    again = {r.device_id: r.attempt for r in records[3:]}
    assert again == {devices[1]: 2, devices[2]: 2}
    # An event of the old attempt no longer counts.
    harness.job_event(devices[1], tid, "FAILED", attempt=1, job_version=9, cause=24)
    harness.job_event(devices[1], tid, "SUCCEEDED", attempt=2, job_version=3)
    harness.job_event(devices[2], tid, "SUCCEEDED", attempt=2, job_version=3)
    done = await harness.wait_status(tid, "Success")
    assert done["progress"]["succeeded"] == 3
    nothing = await harness.client.post(f"/v1/tasks/{tid}/retry")
    assert nothing.status_code == 409


async def test_retry_waits_for_the_reconciler_to_wrap_a_finished_task_up(
    harness: Harness, aredis: redis.asyncio.Redis[bytes]
) -> None:
    devices = ids("wrapup", 2)
    package = await harness.upload(b"wrap-up")
    tid = await harness.create_task(package["id"], devices)
    await harness.wait_releases(2)
    harness.job_event(devices[0], tid, "SUCCEEDED", job_version=3)
    harness.job_event(devices[1], tid, "FAILED", job_version=3, cause=24)
    await harness.wait_status(tid, "PartialSuccess")
    # As the reconciler leaves a task between its final status and the end of its
    # wrap-up: still in the active set, which its next pass empties.
    await aredis.sadd(keys.ACTIVE_TASKS, tid)
    retried = await harness.client.post(f"/v1/tasks/{tid}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["retried"] == 1
    assert await aredis.sismember(keys.ACTIVE_TASKS, tid)
    assert await aredis.sismember(keys.package_users(package["id"]), tid)


async def test_replayed_and_reordered_events_count_once(harness: Harness) -> None:
    devices = ids("replay", 2)
    package = await harness.upload(b"replay")
    tid = await harness.create_task(package["id"], devices)
    await harness.wait_releases(2)
    done = harness.job_event(devices[0], tid, "SUCCEEDED", job_version=5)
    for _ in range(3):
        harness.job_event(devices[0], tid, "SUCCEEDED", job_version=5, event_id=done.id)
    harness.job_event(devices[0], tid, "DOWNLOADING", job_version=3)  # late, older
    harness.job_event(devices[1], tid, "FAILED", job_version=4, cause=28)
    task = await harness.wait_status(tid, "PartialSuccess")
    assert task["counts"]["states"] == {"SUCCEEDED": 1, "FAILED": 1}
    assert task["progress"]["finished"] == 2


async def test_restart_mid_task_loses_and_repeats_nothing(start_harness: StartHarness) -> None:
    first = await start_harness()
    devices = ids("restart", 40)
    package = await first.upload(b"restart")
    tid = await first.create_task(package["id"], devices, waves=[{"count": 20}])
    await first.wait_releases(20)
    for d in devices[:10]:
        first.job_event(d, tid, "SUCCEEDED", job_version=3)

    async def counted() -> bool:
        return bool((await first.task(tid))["progress"]["succeeded"] == 10)

    await eventually(counted, "ten successes counted")
    await first.stop()
    # While the scheduler is down, the rest of wave 1 finishes.
    for d in devices[10:20]:
        first.job_event(d, tid, "SUCCEEDED", job_version=3)
    second = await start_harness(OTA_SCHEDULER_PORT=str(first.settings.http_port))
    second.settings = first.settings
    await second.wait_releases(40)
    for d in devices[20:]:
        second.job_event(d, tid, "SUCCEEDED", job_version=3)
    task = await second.wait_status(tid, "Success")
    assert task["progress"]["succeeded"] == 40
    starts = Counter((r.device_id, r.attempt) for r in await second.releases())
    assert set(starts) == {(d, 1) for d in devices}
    assert max(starts.values()) == 1


async def test_rejected_and_malformed_job_events_go_to_dead_letters(harness: Harness) -> None:
    harness.produce_raw(harness.topics.job_events, "dev-x", b"{not json")
    device = ids("dl", 1)[0]
    package = await harness.upload(b"dead letters")
    tid = await harness.create_task(package["id"], [device])
    await harness.wait_releases(1)
    harness.job_event(device, tid, "SUCCEEDED")
    await harness.wait_status(tid, "Success")
    from kafka import TopicPartition

    from ota.kafka_clients import make_consumer
    from ota.records import decode

    consumer = make_consumer(harness.settings.common, group_id=None)
    try:
        tp = TopicPartition(harness.topics.dead_letters, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        polled = consumer.poll(5000)
        letters = [decode(r.value) for batch in polled.values() for r in batch]
    finally:
        consumer.close()
    assert [(d.source, d.reason) for d in letters] == [("scheduler", "invalid_json")]
