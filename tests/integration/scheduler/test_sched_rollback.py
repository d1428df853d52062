"""Rollback through the real scheduler, driven by job events as workers send them: an
operator's rollback of a finished task and of a running one, a rollback started by the
abort criteria and one by failed confirmations, each a linked task that targets exactly
the devices it should; a second request answers the same rollback; a rollback package
that does not fit is refused at creation with a specific error."""

from __future__ import annotations

import uuid
from typing import Any

from ota.catalog import FailureCause
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import READ_KEY, WRITE_KEY, Harness, eventually
from tests.integration.scheduler.test_sched_cli import ota
from tests.integration.scheduler.test_sched_console_audit import log_in

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


def ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i:03d}" for i in range(n)]


async def packages(harness: Harness, tag: str, **rollback_meta: str) -> tuple[str, str]:
    """(target package id: version 2.0, rollback package id: version 1.0)."""
    target = await harness.upload(f"{tag}-new".encode())
    old = await harness.upload(f"{tag}-old".encode(), version="1.0", **rollback_meta)
    return target["id"], old["id"]


async def targets_of(harness: Harness, tid: str) -> set[str]:
    listed = (await harness.client.get(f"/v1/tasks/{tid}/devices", params={"limit": 1000})).json()
    return {item["device_id"] for item in listed["items"]}


async def linked(harness: Harness, tid: str) -> dict[str, Any]:
    async def has_rollback() -> dict[str, Any] | None:
        task = await harness.task(tid)
        return task if task.get("rollback_task_id") else None

    return await eventually(has_rollback, f"task {tid} to get its rollback task")


async def finish(harness: Harness, tid: str, events: dict[str, tuple[str, int | None]]) -> None:
    for device, (state, cause) in events.items():
        harness.job_event(device, tid, state, job_version=4, cause=cause)


async def test_an_operator_rolls_back_exactly_the_succeeded_devices(harness: Harness) -> None:
    devices = ids("rb-op", 5)
    target, old = await packages(harness, "op", allowed_sources="0.9")
    tid = await harness.create_task(target, devices, rollback_package_id=old)
    await harness.wait_releases(5)
    fail = int(FailureCause.LOW_BATTERY)
    await finish(
        harness,
        tid,
        {
            devices[0]: ("SUCCEEDED", None),
            devices[1]: ("FAILED", fail),
            devices[2]: ("SUCCEEDED", None),
            devices[3]: ("CANCELLED", None),
            devices[4]: ("SUCCEEDED", None),
        },
    )
    await harness.wait_status(tid, "PartialSuccess")

    response = await harness.client.post(f"/v1/tasks/{tid}/rollback")
    assert response.status_code == 201, response.text
    body = response.json()
    rollback = body["rollback_task"]
    rid = rollback["id"]
    assert rollback["rollback_of"] == tid
    assert rollback["package_id"] == old
    assert rollback["devices"] == 3
    # The rollback package names its sources; the version it undoes is added to them.
    assert rollback["package"]["allowed_sources"] == ["0.9", "2.0"]
    assert rollback["policy"].get("rollback_package_id") is None
    assert body["task"]["rollback_task_id"] == rid
    assert await targets_of(harness, rid) == {devices[0], devices[2], devices[4]}

    async def released() -> set[str] | None:
        got = {r.device_id for r in await harness.releases() if r.job.task_id == rid}
        return got if len(got) == 3 else None

    assert await eventually(released, "the rollback's releases") == {
        devices[0],
        devices[2],
        devices[4],
    }
    rolled = [r for r in harness.seen if r.job.task_id == rid]
    assert {r.job.package.version for r in rolled} == {"1.0"}

    # Shown on both tasks: the original carries the rollback's status and progress.
    original = await harness.task(tid)
    assert original["rollback_task_id"] == rid
    assert original["rollback"]["id"] == rid
    assert original["rollback"]["progress"]["total"] == 3
    assert (await harness.task(rid))["rollback_of"] == tid

    # Idempotent: the same rollback again, and no second task.
    again = await harness.client.post(f"/v1/tasks/{tid}/rollback")
    assert again.status_code == 200, again.text
    assert again.json()["rollback_task"]["id"] == rid
    listed = (await harness.client.get("/v1/tasks")).json()["items"]
    assert sorted(t["id"] for t in listed) == sorted([tid, rid])

    # The console's task pages link the two.
    reader, _ = await log_in(harness, READ_KEY)
    try:
        page = (await reader.get(f"/console/tasks/{tid}")).text
        assert f'href="/console/tasks/{rid}"' in page.split('id="rollback"')[1]
        page = (await reader.get(f"/console/tasks/{rid}")).text
        assert f'href="/console/tasks/{tid}"' in page.split('id="rollback-of"')[1]
    finally:
        await reader.aclose()

    # The rollback task names no rollback of its own.
    refused = await harness.client.post(f"/v1/tasks/{rid}/rollback")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "no_rollback_package"


async def test_an_operator_rollback_of_a_running_task_stops_it_first(harness: Harness) -> None:
    devices = ids("rb-run", 4)
    target, old = await packages(harness, "run")
    tid = await harness.create_task(target, devices, rollback_package_id=old)
    await harness.wait_releases(4)
    harness.job_event(devices[0], tid, "SUCCEEDED", job_version=4)

    async def counted() -> bool:
        progress: dict[str, int] = (await harness.task(tid))["progress"]
        return progress["succeeded"] == 1

    await eventually(counted, "the first success")
    code, out, err = await ota(harness, "tasks", "rollback", tid)  # the CLI: 202
    assert code == 0, err
    assert out.strip() == f"task {tid}: Stopped; rollback starts once its devices have finished"
    assert (await harness.task(tid))["reason"] == "stopped for a rollback by operator"
    # In flight when stopped: one still succeeds, the others are cancelled.
    await finish(
        harness,
        tid,
        {
            devices[1]: ("SUCCEEDED", None),
            devices[2]: ("CANCELLED", None),
            devices[3]: ("CANCELLED", None),
        },
    )
    rid = (await linked(harness, tid))["rollback_task_id"]
    assert await targets_of(harness, rid) == {devices[0], devices[1]}
    code, out, err = await ota(harness, "tasks", "rollback", tid)
    assert code == 0, err
    assert out.strip() == f"task {tid}: Stopped; rollback task {rid}: Processing, 2 devices"


async def test_abort_criteria_start_the_rollback(harness: Harness) -> None:
    devices = ids("rb-abort", 6)
    target, old = await packages(harness, "abort")
    tid = await harness.create_task(
        target,
        devices,
        waves=[{"count": 4}],
        abort=[{"failure_pct": 50, "min_finished": 3}],
        rollback_package_id=old,
        rollback_on_abort=True,
    )
    await harness.wait_releases(4)
    fail = int(FailureCause.LOW_BATTERY)
    await finish(
        harness,
        tid,
        {
            devices[0]: ("SUCCEEDED", None),
            devices[1]: ("FAILED", fail),
            devices[2]: ("FAILED", fail),
        },
    )
    stopped = await harness.wait_status(tid, "Stopped")
    assert stopped["reason"].startswith("aborted:")
    # Nothing starts while a device of the task is still in flight.
    assert not stopped.get("rollback_task_id")
    harness.job_event(devices[3], tid, "SUCCEEDED", job_version=4)
    original = await linked(harness, tid)
    rid = original["rollback_task_id"]
    rollback = await harness.task(rid)
    assert rollback["rollback_of"] == tid
    assert rollback["package_id"] == old
    assert await targets_of(harness, rid) == {devices[0], devices[3]}
    assert original["rollback"]["id"] == rid


async def test_failed_confirmations_are_rolled_back_when_the_task_says_so(
    harness: Harness,
) -> None:
    devices = ids("rb-conf", 4)
    target, old = await packages(harness, "conf")
    tid = await harness.create_task(
        target,
        devices,
        success="confirmed",
        rollback_package_id=old,
        rollback_on_failed_confirmation=True,
    )
    await harness.wait_releases(4)
    await finish(
        harness,
        tid,
        {
            devices[0]: ("SUCCEEDED", None),
            devices[1]: ("FAILED", int(FailureCause.HEALTH_CHECK_FAILED)),
            devices[2]: ("FAILED", int(FailureCause.ROLLED_BACK)),
            devices[3]: ("FAILED", int(FailureCause.CONFIRM_TIMEOUT)),
        },
    )
    rid = (await linked(harness, tid))["rollback_task_id"]
    # Only the failed confirmations: the task was neither aborted nor rolled back.
    assert await targets_of(harness, rid) == {devices[1], devices[2]}


async def test_a_rollback_package_that_does_not_fit_is_refused(harness: Harness) -> None:
    devices = ids("rb-bad", 2)
    target = (await harness.upload(b"bad-new"))["id"]
    same = (await harness.upload(b"bad-same"))["id"]  # version 2.0 too
    software = (await harness.upload(b"bad-sw", type="software", version="1.0"))["id"]
    cases = {
        "nope": "unknown_rollback_package",
        same: "same_rollback_version",
        software: "wrong_rollback_type",
    }
    for rollback, code in cases.items():
        response = await harness.client.post(
            "/v1/tasks",
            json={
                "type": "firmware",
                "package_id": target,
                "targets": {"device_ids": devices},
                "policy": {"rollback_package_id": rollback},
            },
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["field"]) == (code, "policy.rollback_package_id")
    assert (await harness.client.get("/v1/tasks")).json()["items"] == []
    # A task without a rollback package has nothing to roll back to.
    tid = await harness.create_task(target, devices)
    response = await harness.client.post(f"/v1/tasks/{tid}/rollback")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_rollback_package"
    assert (await harness.task(tid))["status"] == "Processing"


async def test_openapi_declares_the_rollback(harness: Harness) -> None:
    doc = (await harness.anon.get("/v1/openapi.json")).json()
    body = doc["paths"]["/v1/tasks"]["post"]["requestBody"]["content"]["application/json"]
    policy = body["schema"]["properties"]["policy"]["properties"]
    assert policy["rollback_package_id"]["type"] == "string"
    assert policy["rollback_on_abort"]["type"] == "boolean"
    assert policy["rollback_on_failed_confirmation"]["type"] == "boolean"
    rollback = doc["paths"]["/v1/tasks/{task_id}/rollback"]["post"]
    assert {"200", "201", "202", "409"} <= set(rollback["responses"])


async def test_the_console_rolls_a_task_back(harness: Harness) -> None:
    devices = ids("rb-console", 2)
    target, old = await packages(harness, "console")
    tid = await harness.create_task(target, devices, rollback_package_id=old)
    await harness.wait_releases(2)
    await finish(
        harness,
        tid,
        {devices[0]: ("SUCCEEDED", None), devices[1]: ("FAILED", int(FailureCause.LOW_BATTERY))},
    )
    await harness.wait_status(tid, "PartialSuccess")
    writer, csrf = await log_in(harness, WRITE_KEY)
    try:
        page = (await writer.get(f"/console/tasks/{tid}")).text
        assert 'id="act-rollback"' in page
        confirm = (await writer.get(f"/console/tasks/{tid}/rollback")).text
        assert "installs the rollback package on the 1 devices the task upgraded" in confirm
        done = await writer.post(f"/console/tasks/{tid}/rollback", data={"csrf": csrf})
        assert done.status_code == 303, done.text
        assert "done=rollback" in done.headers["location"]
        rid = (await harness.task(tid))["rollback_task_id"]
        assert await targets_of(harness, rid) == {devices[0]}
        page = (await writer.get(done.headers["location"])).text
        assert "Rolling back the devices the task upgraded" in page
        assert f'href="/console/tasks/{rid}"' in page.split('id="rollback"')[1]
        assert 'id="act-rollback"' not in page
        again = (await writer.get(f"/console/tasks/{tid}/rollback")).text
        assert "The task has its rollback already." in again
    finally:
        await writer.aclose()
    trail = (await harness.client.get("/v1/audit")).json()["items"]
    assert "rollback_task" in {item["action"] for item in trail}
