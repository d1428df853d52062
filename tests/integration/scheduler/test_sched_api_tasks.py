"""Task endpoints: validation of every kind, dry runs, target lists, reads and operation errors."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import Harness, eventually

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


def ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i}" for i in range(n)]


def body(package_id: str, changes: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
    return {
        "type": "firmware",
        "package_id": package_id,
        "targets": {"device_ids": ["dev-a"]},
        **(changes or {}),
        **more,
    }


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"package_id": "no-such-package"}, "unknown_package", "package_id"),
        ({"type": "software"}, "wrong_package_type", "package_id"),
        ({"type": "bios"}, "bad_value", "type"),
        ({"targets": {}}, "empty_targets", "targets"),
        ({"targets": {"device_ids": []}}, "empty_targets", "targets"),
        (
            {"targets": {"device_ids": [f"d{i}" for i in range(30_001)]}},
            "too_many",
            "targets.device_ids",
        ),
        ({"targets": {"device_ids": ["bad id"]}}, "bad_device_id", "targets.device_ids[0]"),
        ({"targets": {"groups": ["ghosts"]}}, "unknown_group", "groups"),
        ({"targets": {"filter": {"fw_version": ["1.0"]}}}, "unknown_field", None),
        ({"targets": {"filter": {}}}, "bad_filter", "targets.filter"),
        ({"targets": {"filter": {"online": "yes"}}}, "wrong_type", "targets.filter.online"),
        ({"targets": {"list_id": "nope"}}, "unknown_list", "targets.list_id"),
        ({"policy": {"schedule_time_ms": 1}}, "bad_schedule_time", "policy.schedule_time_ms"),
        (
            {"policy": {"schedule_time_ms": int(time.time() * 1000) + 8 * 86_400_000}},
            "bad_schedule_time",
            "policy.schedule_time_ms",
        ),
        ({"policy": {"retry_count": -1}}, "out_of_range", "policy.retry_count"),
        ({"policy": {"retry_interval_min": 99999}}, "out_of_range", "policy.retry_interval_min"),
        ({"policy": {"rate_per_min": 10**9}}, "out_of_range", "policy.rate_per_min"),
        ({"surprise": 1}, "unknown_field", "surprise"),
    ],
)
async def test_bad_task_requests_change_nothing(
    harness: Harness, changes: dict[str, Any], code: str, field: str | None
) -> None:
    package = await harness.upload(b"validate")
    response = await harness.client.post("/v1/tasks", json=body(package["id"], changes))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert (await harness.client.get("/v1/tasks")).json()["items"] == []
    assert await harness.releases() == []


async def test_unreadable_bodies(harness: Harness) -> None:
    empty = await harness.client.post("/v1/tasks", content=b"")
    assert empty.json()["error"]["code"] == "empty_body"
    array = await harness.client.post("/v1/tasks", json=[1])
    assert array.json()["error"]["code"] == "wrong_type"


async def test_dry_run_counts(harness: Harness) -> None:
    on_target, unsupported, busy, fresh = ids("dry", 4)
    never = f"never-{uuid.uuid4().hex[:6]}"
    harness.report(on_target, fw="2.0")
    harness.report(unsupported, fw="0.9")
    harness.report(busy, fw="1.0")
    harness.report(fresh, fw="1.0")
    package = await harness.upload(b"dry run", allowed_sources="1.0,1.1")
    other = await harness.upload(b"other package")
    blocker = await harness.create_task(other["id"], [busy])
    await harness.wait_releases(1)
    harness.job_event(busy, blocker, "DOWNLOADING", job_version=3)
    await harness.wait_device(busy, current_job={**(await _job_of(harness, busy))})
    await harness.wait_device(fresh, fw_version="1.0")
    targets = [on_target, unsupported, busy, fresh, never]
    response = await harness.client.post(
        "/v1/tasks",
        params={"dry_run": "true"},
        json=body(package["id"], targets={"device_ids": targets}),
    )
    assert response.status_code == 200, response.text
    dry = response.json()
    assert {k: v for k, v in dry.items() if k not in ("dry_run_id", "expires_in_s")} == {
        "dry_run": True,
        "targeted": 5,
        "already_on_target": 1,
        "unsupported_source": 1,
        "in_conflict": 1,
        "never_reported": 1,
        "skipped": 2,
        "lists": {"targeted": 5, "skipped": 2, "conflict": 1},
    }
    tasks = (await harness.client.get("/v1/tasks")).json()["items"]
    assert [t["id"] for t in tasks] == [blocker]


async def _job_of(harness: Harness, device: str) -> dict[str, Any]:
    async def busy() -> dict[str, Any] | None:
        shown = (await harness.client.get(f"/v1/devices/{device}")).json()
        job = shown.get("current_job")
        return job if job and job["state"] == "DOWNLOADING" else None

    result: dict[str, Any] = await eventually(busy, f"{device} to be downloading")
    return result


async def test_target_list_upload_and_filter_targets(harness: Harness) -> None:
    devices = ids("list", 50)
    text = "# fleet export\n" + "\n".join(devices) + "\n\n"
    uploaded = await harness.client.post("/v1/target-lists", content=text.encode())
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["count"] == 50
    bad = await harness.client.post("/v1/target-lists", content=b"ok-device\nbad device\n")
    assert bad.status_code == 400
    assert "line 2" in bad.json()["error"]["message"]
    empty = await harness.client.post("/v1/target-lists", content=b"\n# nothing\n")
    assert empty.json()["error"]["code"] == "empty_targets"
    grouped = ids("flt", 3)
    await harness.client.post("/v1/groups", json={"name": "lab"})
    await harness.client.post("/v1/groups/lab/devices", json={"add": grouped})
    for d in grouped[:2]:
        harness.report(d, fw="1.0")
    harness.report(grouped[2], fw="1.5")
    await harness.wait_device(grouped[2], fw_version="1.5")
    await harness.wait_device(grouped[1], fw_version="1.0")
    package = await harness.upload(b"list")
    dry = await harness.client.post(
        "/v1/tasks",
        json=body(
            package["id"],
            dry_run=True,
            targets={
                "list_id": uploaded.json()["list_id"],
                "filter": {"groups": ["lab"], "fw_versions": ["1.0"]},
            },
        ),
    )
    assert dry.json()["targeted"] == 52


async def test_reads_operations_and_their_errors(harness: Harness) -> None:
    devices = ids("ops", 5)
    package = await harness.upload(b"ops")
    tid = await harness.create_task(
        package["id"], devices, schedule_time_ms=int(time.time() * 1000) + 3_600_000
    )
    task = await harness.task(tid)
    assert task["status"] == "Waiting"
    assert task["counts"]["statuses"]["Waiting"] == 5
    assert task["progress"] == {
        "total": 5,
        "finished": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
        "in_flight": 0,
        "percent": 0.0,
    }
    page = (await harness.client.get(f"/v1/tasks/{tid}/devices", params={"limit": 2})).json()
    assert [d["device_id"] for d in page["items"]] == sorted(devices)[:2]
    rest = (
        await harness.client.get(
            f"/v1/tasks/{tid}/devices", params={"status": "Waiting", "cursor": page["next_cursor"]}
        )
    ).json()
    assert len(rest["items"]) == 3
    assert rest["items"][0]["state"] == "PENDING"
    bad_status = await harness.client.get(f"/v1/tasks/{tid}/devices", params={"status": "Done"})
    assert bad_status.json()["error"]["code"] == "bad_value"
    listed = (await harness.client.get("/v1/tasks", params={"status": "Waiting"})).json()
    assert [t["id"] for t in listed["items"]] == [tid]
    none = (await harness.client.get("/v1/tasks", params={"status": "Fail"})).json()
    assert none["items"] == []
    assert (await harness.client.get("/v1/tasks", params={"status": "Nope"})).status_code == 422
    resume = await harness.client.post(f"/v1/tasks/{tid}/resume")
    assert resume.status_code == 409
    assert resume.json()["error"]["code"] == "bad_task_status"
    retry = await harness.client.post(f"/v1/tasks/{tid}/retry")
    assert retry.status_code == 409
    paused = await harness.client.post(f"/v1/tasks/{tid}/pause")
    assert paused.json()["status"] == "Paused"
    assert (await harness.client.post(f"/v1/tasks/{tid}/pause")).status_code == 409
    resumed = await harness.client.post(f"/v1/tasks/{tid}/resume")
    assert resumed.json()["status"] == "Waiting"
    cancelled = (await harness.client.post(f"/v1/tasks/{tid}/cancel")).json()
    assert cancelled["not_started"] == 5
    assert cancelled["task"]["status"] == "Stopped"
    assert (await harness.client.post(f"/v1/tasks/{tid}/cancel")).status_code == 409
    for op in ("pause", "resume", "cancel", "retry"):
        assert (await harness.client.post(f"/v1/tasks/nope/{op}")).status_code == 404
    assert (await harness.client.get("/v1/tasks/nope")).status_code == 404
    assert (await harness.client.get("/v1/tasks/nope/devices")).status_code == 404
    assert await harness.releases() == []


async def test_webhook_registration_errors(harness: Harness) -> None:
    cases = [
        ({"url": "ftp://x", "secret": "s" * 16}, "bad_url"),
        ({"url": "http://127.0.0.1:9/h", "secret": "short"}, "weak_secret"),
        ({"url": "http://127.0.0.1:9/h", "secret": "s" * 16, "events": ["all"]}, "bad_value"),
        ({"url": "http://127.0.0.1:9/h"}, "missing_field"),
    ]
    for payload, code in cases:
        response = await harness.client.post("/v1/webhooks", json=payload)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == code
    created = await harness.client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "secret": "s" * 16}
    )
    assert created.status_code == 201
    hook = created.json()
    assert "secret" not in hook
    listed = (await harness.client.get("/v1/webhooks")).json()["items"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    assert (await harness.client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json() == {
        "items": []
    }
    assert (await harness.client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 204
    assert (await harness.client.delete(f"/v1/webhooks/{hook['id']}")).status_code == 404
    assert (await harness.client.get(f"/v1/webhooks/{hook['id']}/deliveries")).status_code == 404
