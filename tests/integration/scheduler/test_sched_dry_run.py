"""Dry runs name their devices: the targeted, skipped (with the reason) and conflicting
lists of a dry run, paged through the API of a live scheduler, and through the CLI."""

from __future__ import annotations

import asyncio
import io
import uuid
from typing import Any

import orjson

from ops import cli
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import READ_KEY, WRITE_KEY, Harness, eventually

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


async def _busy(harness: Harness, device: str, task_id: str) -> None:
    async def downloading() -> dict[str, Any] | None:
        shown = (await harness.client.get(f"/v1/devices/{device}")).json()
        job = shown.get("current_job")
        return job if job and job["task_id"] == task_id and job["state"] == "DOWNLOADING" else None

    await eventually(downloading, f"{device} to be downloading in {task_id}")


async def _all(harness: Harness, did: str, category: str, limit: int) -> list[dict[str, Any]]:
    """Every entry of a list, page by page; also checks no page is larger than asked."""
    items: list[dict[str, Any]] = []
    cursor: str | None = "0"
    while cursor is not None:
        answer = await harness.client.get(
            f"/v1/dry-runs/{did}/devices",
            params={"category": category, "cursor": cursor, "limit": limit},
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
    return items


async def _fleet(harness: Harness) -> tuple[dict[str, str], dict[str, Any], str]:
    """Devices of every kind, the package a dry run would install, the blocking task."""
    run = uuid.uuid4().hex[:6]
    names = ("on_target", "unsupported", "busy", "fresh", "never", "busy_on_target")
    dev = {n: f"dry-{run}-{n}" for n in names}
    for name, fw in (
        ("on_target", "2.0"),
        ("unsupported", "0.9"),
        ("busy", "1.0"),
        ("fresh", "1.1"),
        ("busy_on_target", "2.0"),
    ):
        harness.report(dev[name], fw=fw)
    package = await harness.upload(b"dry run", allowed_sources="1.0,1.1")
    other = await harness.upload(b"other package")
    blocker = await harness.create_task(other["id"], [dev["busy"], dev["busy_on_target"]])
    await harness.wait_releases(2)
    for name in ("busy", "busy_on_target"):
        harness.job_event(dev[name], blocker, "DOWNLOADING", job_version=3)
        await _busy(harness, dev[name], blocker)
    await harness.wait_device(dev["fresh"], fw_version="1.1")
    await harness.wait_device(dev["on_target"], fw_version="2.0")
    await harness.wait_device(dev["unsupported"], fw_version="0.9")
    return dev, package, blocker


async def test_each_list_names_the_right_devices_in_release_order(harness: Harness) -> None:
    dev, package, blocker = await _fleet(harness)
    order = ["never", "busy", "on_target", "fresh", "busy_on_target", "unsupported"]
    response = await harness.client.post(
        "/v1/tasks",
        params={"dry_run": "true"},
        json={
            "type": "firmware",
            "package_id": package["id"],
            "targets": {"device_ids": [dev[n] for n in order]},
        },
    )
    assert response.status_code == 200, response.text
    dry = response.json()
    assert dry["lists"] == {"targeted": 6, "skipped": 2, "conflict": 2}
    assert dry["expires_in_s"] > 0
    did = dry["dry_run_id"]

    targeted = await _all(harness, did, "targeted", limit=4)
    assert targeted == [
        {"device_id": dev["never"], "outcome": "upgrade", "version": None},
        {"device_id": dev["busy"], "outcome": "conflict", "version": "1.0"},
        {"device_id": dev["on_target"], "outcome": "skipped", "version": "2.0"},
        {"device_id": dev["fresh"], "outcome": "upgrade", "version": "1.1"},
        {"device_id": dev["busy_on_target"], "outcome": "conflict", "version": "2.0"},
        {"device_id": dev["unsupported"], "outcome": "skipped", "version": "0.9"},
    ]
    assert await _all(harness, did, "skipped", limit=1) == [
        {"device_id": dev["on_target"], "reason": "already_on_target", "version": "2.0"},
        {
            "device_id": dev["unsupported"],
            "reason": "source_version_not_allowed",
            "version": "0.9",
        },
    ]
    assert await _all(harness, did, "conflict", limit=10) == [
        {"device_id": dev["busy"], "task_id": blocker, "state": "DOWNLOADING"},
        {"device_id": dev["busy_on_target"], "task_id": blocker, "state": "DOWNLOADING"},
    ]
    summary = (await harness.client.get(f"/v1/dry-runs/{did}")).json()
    assert summary["lists"] == dry["lists"]
    assert summary["package_id"] == package["id"]
    tasks = (await harness.client.get("/v1/tasks")).json()["items"]
    assert [t["id"] for t in tasks] == [blocker]


async def test_a_group_and_a_list_dedupe_into_one_targeted_list(harness: Harness) -> None:
    run = uuid.uuid4().hex[:6]
    devices = [f"dg-{run}-{i:03d}" for i in range(30)]
    package = await harness.upload(b"grouped")
    group = f"g-{run}"
    assert (await harness.client.post("/v1/groups", json={"name": group})).status_code in (200, 201)
    changed = await harness.client.post(f"/v1/groups/{group}/devices", json={"add": devices[10:]})
    assert changed.status_code == 200, changed.text
    listed = await harness.client.post("/v1/target-lists", content="\n".join(devices[:15]).encode())
    body = {
        "type": "firmware",
        "package_id": package["id"],
        "targets": {"list_id": listed.json()["list_id"], "groups": [group]},
    }
    dry = (await harness.client.post("/v1/tasks", params={"dry_run": "true"}, json=body)).json()
    targeted = await _all(harness, dry["dry_run_id"], "targeted", limit=7)
    # The list's order first, then the group's other members in id order, each once.
    assert [t["device_id"] for t in targeted] == devices
    assert {t["outcome"] for t in targeted} == {"upgrade"}


async def test_bad_reads_get_clear_errors(harness: Harness) -> None:
    unknown = await harness.client.get("/v1/dry-runs/nope/devices")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_dry_run"
    package = await harness.upload(b"errors")
    body = {"type": "firmware", "package_id": package["id"], "targets": {"device_ids": ["e-1"]}}
    dry = (await harness.client.post("/v1/tasks", params={"dry_run": "true"}, json=body)).json()
    path = f"/v1/dry-runs/{dry['dry_run_id']}/devices"
    bad = await harness.client.get(path, params={"category": "upgraded"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "bad_value"
    beyond = (await harness.client.get(path, params={"cursor": 5})).json()
    assert beyond == {"items": [], "next_cursor": None}


async def test_cli_prints_the_lists(harness: Harness) -> None:
    dev, package, blocker = await _fleet(harness)

    async def ota(*argv: str, key: str = WRITE_KEY) -> str:
        env = {"OTA_API_URL": harness.base_url, "OTA_API_KEY": key}
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(cli.main, list(argv), env, out, err)
        assert code == 0, err.getvalue()
        return out.getvalue()

    dry = orjson.loads(
        await ota(
            "--json",
            "tasks",
            "create",
            "--type",
            "firmware",
            "--package",
            package["id"],
            "--devices",
            ",".join(dev.values()),
            "--dry-run",
        )
    )
    did = dry["dry_run_id"]
    # Reading needs the read scope only.
    text = await ota(
        "tasks", "dry-run", did, "--list", "skipped", "--all", "--limit", "1", key=READ_KEY
    )
    assert text.splitlines()[0].split() == ["DEVICE_ID", "REASON", "VERSION"]
    assert [line.split()[:2] for line in text.splitlines()[1:]] == [
        [dev["on_target"], "already_on_target"],
        [dev["unsupported"], "source_version_not_allowed"],
    ]
    conflicts = orjson.loads(await ota("--json", "tasks", "dry-run", did, "--list", "conflict"))
    assert [c["device_id"] for c in conflicts["items"]] == [dev["busy"], dev["busy_on_target"]]
    assert {c["task_id"] for c in conflicts["items"]} == {blocker}
