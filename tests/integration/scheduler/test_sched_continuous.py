"""Continuous tasks through the live scheduler on the real Kafka and Redis: devices that join
a followed group (or come to match a followed filter through their tags, their reported
version or their presence) after the task was created are released at the task's pace; a
device that leaves before its release is removed and never released; the task stays
Processing while open and finishes once its end passes; bad combinations are refused; the
CLI and the OpenAPI document carry the fields."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from scheduler import keys
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import Harness, eventually
from tests.integration.scheduler.test_sched_cli import ota

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


def names(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i}" for i in range(n)]


async def group_with(harness: Harness, members: list[str]) -> str:
    name = names("grp", 1)[0]
    assert (await harness.client.post("/v1/groups", json={"name": name})).status_code == 201
    if members:
        await change(harness, name, add=members)
    return name


async def change(
    harness: Harness, group: str, add: Sequence[str] = (), remove: Sequence[str] = ()
) -> None:
    response = await harness.client.post(
        f"/v1/groups/{group}/devices", json={"add": list(add), "remove": list(remove)}
    )
    assert response.status_code == 200, response.text


async def continuous_task(
    harness: Harness, package_id: str, targets: dict[str, Any], **policy: Any
) -> str:
    response = await harness.client.post(
        "/v1/tasks",
        json={
            "type": "firmware",
            "package_id": package_id,
            "targets": targets,
            "policy": {"continuous": True, **policy},
        },
    )
    assert response.status_code == 201, response.text
    tid: str = response.json()["id"]
    return tid


def succeed(harness: Harness, tid: str, device: str) -> None:
    harness.job_event(device, tid, "SUCCEEDED", from_state="UPDATING")


async def released_ids(harness: Harness, tid: str, count: int) -> list[str]:
    released = await harness.wait_releases(count)
    return [r.device_id for r in released if r.job.task_id == tid]


async def test_a_device_joining_the_group_is_released_and_the_task_stays_open(
    harness: Harness,
) -> None:
    package = await harness.upload(b"continuous-join")
    first = names("cj", 2)
    group = await group_with(harness, first)
    tid = await continuous_task(harness, package["id"], {"groups": [group]})
    assert sorted(await released_ids(harness, tid, 2)) == sorted(first)
    for device in first:
        succeed(harness, tid, device)

    async def both_done() -> dict[str, Any] | None:
        task = await harness.task(tid)
        return task if task["progress"]["succeeded"] == 2 else None

    task = await eventually(both_done, "both devices to succeed")
    assert task["status"] == "Processing"  # open: not Success
    assert task["continuous"] == {"open": True, "end_time_ms": None, "joined": 0, "removed": 0}

    [late] = names("cj-late", 1)
    await change(harness, group, add=[late])
    assert (await released_ids(harness, tid, 3))[-1] == late
    succeed(harness, tid, late)

    async def late_done() -> dict[str, Any] | None:
        task = await harness.task(tid)
        return task if task["progress"]["succeeded"] == 3 else None

    task = await eventually(late_done, "the joiner to succeed")
    assert task["status"] == "Processing"
    assert task["continuous"]["joined"] == 1
    assert task["progress"]["total"] == 3


async def test_a_device_leaving_before_its_release_is_removed(harness: Harness) -> None:
    package = await harness.upload(b"continuous-leave")
    [member] = names("cl", 1)
    group = await group_with(harness, [member])
    # One device in flight at a time: a joiner waits, pending, behind the member.
    tid = await continuous_task(harness, package["id"], {"groups": [group]}, max_in_flight=1)
    assert await released_ids(harness, tid, 1) == [member]
    leaver, stayer = names("cl-joiner", 2)
    await change(harness, group, add=[leaver])

    async def pending(n: int, joined: int) -> dict[str, Any] | None:
        task = await harness.task(tid)
        shown = (task["counts"]["states"].get("PENDING", 0), task["continuous"]["joined"])
        return task if shown == (n, joined) else None

    await eventually(lambda: pending(1, 1), "the joiner to be pending")
    await change(harness, group, remove=[leaver])

    async def removed() -> dict[str, Any] | None:
        task = await harness.task(tid)
        return task if task["continuous"]["removed"] == 1 else None

    task = await eventually(removed, "the leaver to be removed")
    assert task["progress"]["total"] == 1
    assert "PENDING" not in task["counts"]["states"]
    devices = (await harness.client.get(f"/v1/tasks/{tid}/devices")).json()["items"]
    assert [d["device_id"] for d in devices] == [member]

    await change(harness, group, add=[stayer])
    await eventually(lambda: pending(1, 2), "the stayer to be pending")
    succeed(harness, tid, member)
    # Released in list order: had the leaver been kept, it would come before the stayer.
    assert await released_ids(harness, tid, 2) == [member, stayer]


async def test_a_device_whose_tags_come_to_match_the_filter_joins(harness: Harness) -> None:
    package = await harness.upload(b"continuous-filter")
    tag = names("beta", 1)[0]
    [device] = names("cf", 1)
    tid = await continuous_task(harness, package["id"], {"filter": {"tags": [tag]}})
    task = await harness.task(tid)  # no device matches yet: an empty continuous task is fine
    assert (task["status"], task["progress"]["total"]) == ("Processing", 0)
    response = await harness.client.patch(f"/v1/devices/{device}", json={"tags": [tag]})
    assert response.status_code == 200, response.text
    assert await released_ids(harness, tid, 1) == [device]


async def test_a_device_whose_reported_version_comes_to_match_the_filter_joins(
    harness: Harness,
) -> None:
    package = await harness.upload(b"continuous-version")
    source = f"src-{uuid.uuid4().hex[:6]}"
    early, late = names("cv", 2)
    harness.report(early, fw=source)
    harness.report(late, fw="older")
    # Both applied before the task exists (their partitions may differ): early is taken
    # at creation, not as a joiner.
    await harness.wait_device(early, fw_version=source)
    await harness.wait_device(late, fw_version="older")
    tid = await continuous_task(harness, package["id"], {"filter": {"fw_versions": [source]}})
    assert await released_ids(harness, tid, 1) == [early]
    harness.report(late, fw=source)  # e.g. upgraded to the source version by another task
    assert await released_ids(harness, tid, 2) == [early, late]
    task = await harness.task(tid)
    assert (task["continuous"]["joined"], task["progress"]["total"]) == (1, 2)


async def test_a_device_coming_online_joins_and_one_going_offline_before_release_is_removed(
    harness: Harness,
) -> None:
    package = await harness.upload(b"continuous-online")
    tag = names("field", 1)[0]
    first, joiner = names("co", 2)
    for device in (first, joiner):
        response = await harness.client.patch(f"/v1/devices/{device}", json={"tags": [tag]})
        assert response.status_code == 200, response.text
    harness.presence(first, True)
    harness.presence(joiner, False)
    await harness.wait_device(first, online=True)  # taken at creation, not as a joiner
    await harness.wait_device(joiner, online=False)
    # One device in flight at a time: the joiner waits, pending, behind the first.
    tid = await continuous_task(
        harness, package["id"], {"filter": {"tags": [tag], "online": True}}, max_in_flight=1
    )
    assert await released_ids(harness, tid, 1) == [first]
    harness.presence(joiner, True)

    async def counted(joined: int, removed: int) -> dict[str, Any] | None:
        task = await harness.task(tid)
        shown = (task["continuous"]["joined"], task["continuous"]["removed"])
        return task if shown == (joined, removed) else None

    await eventually(lambda: counted(1, 0), "the device coming online to join")
    harness.presence(joiner, False)
    task = await eventually(lambda: counted(1, 1), "the device going offline to be removed")
    assert task["progress"]["total"] == 1
    assert "PENDING" not in task["counts"]["states"]


async def test_the_task_finishes_once_its_end_passes(
    harness: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    package = await harness.upload(b"continuous-end")
    [member] = names("ce", 1)
    group = await group_with(harness, [member])
    end_ms = int(time.time() * 1000) + 3_000
    tid = await continuous_task(harness, package["id"], {"groups": [group]}, end_time_ms=end_ms)
    assert sched_redis.sismember(keys.continuous_group(group), tid)
    assert await released_ids(harness, tid, 1) == [member]
    succeed(harness, tid, member)
    task = await harness.wait_status(tid, "Success")
    assert time.time() * 1000 >= end_ms
    assert task["continuous"]["open"] is False
    # Unlisted: a later member is no business of this task.
    assert not sched_redis.sismember(keys.continuous_group(group), tid)
    assert not sched_redis.exists(keys.task_joins(tid))


async def test_a_cancelled_task_stops_following(
    harness: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    package = await harness.upload(b"continuous-cancel")
    tag = names("t", 1)[0]
    group = await group_with(harness, [])
    tid = await continuous_task(
        harness, package["id"], {"groups": [group], "filter": {"tags": [tag]}}
    )
    assert sched_redis.sismember(keys.CONTINUOUS_FILTER, tid)
    response = await harness.client.post(f"/v1/tasks/{tid}/cancel")
    assert response.status_code == 200, response.text
    await harness.wait_status(tid, "Stopped")

    async def unlisted() -> bool:
        return not (
            sched_redis.sismember(keys.CONTINUOUS_FILTER, tid)
            or sched_redis.sismember(keys.continuous_group(group), tid)
        )

    await eventually(unlisted, "the cancelled task to be unlisted")


async def test_bad_combinations_are_refused_and_create_nothing(harness: Harness) -> None:
    package = await harness.upload(b"continuous-bad")
    group = await group_with(harness, [])
    cases = [
        ({"device_ids": ["a"]}, {"continuous": True}, "continuous_targets", "policy.continuous"),
        ({"groups": [group]}, {"end_time_ms": 2**40}, "conflicting_fields", "policy.end_time_ms"),
        ({"groups": [group]}, {"continuous": True, "end_time_ms": 1}, "bad_end_time", "policy.end_time_ms"),
    ]  # fmt: skip
    for targets, policy, code, field in cases:
        response = await harness.client.post(
            "/v1/tasks",
            json={"type": "firmware", "package_id": package["id"], "targets": targets, "policy": policy},
        )  # fmt: skip
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["field"]) == (code, field)
    assert (await harness.client.get("/v1/tasks")).json()["items"] == []


async def test_the_cli_creates_a_continuous_task(harness: Harness) -> None:
    package = await harness.upload(b"continuous-cli")
    group = await group_with(harness, [])
    code, out, err = await ota(
        harness, "tasks", "create", "--type", "firmware", "--package", package["id"],
        "--group", group, "--continuous", "--end", "+2h",
    )  # fmt: skip
    assert code == 0, err
    task = await harness.task(out.split()[2])
    assert task["policy"]["continuous"] is True
    assert task["policy"]["end_time_ms"] > time.time() * 1000 + 3_600_000
    code, _, err = await ota(
        harness, "tasks", "create", "--type", "firmware", "--package", package["id"],
        "--group", group, "--continuous", "--end", "tomorrow",
    )  # fmt: skip
    assert code != 0
    assert "--end 'tomorrow'" in err


async def test_openapi_declares_continuous_and_end(harness: Harness) -> None:
    doc = (await harness.anon.get("/v1/openapi.json")).json()
    body = doc["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    policy = body["schema"]["properties"]["policy"]["properties"]
    assert policy["continuous"]["type"] == "boolean"
    assert policy["end_time_ms"]["type"] == "integer"
