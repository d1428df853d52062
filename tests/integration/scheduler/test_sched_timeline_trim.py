"""A scheduler keeping few timeline entries per device (OTA_TIMELINE_CAP), or keeping them
a short time (OTA_TIMELINE_RETENTION_S): the device's API answer and console page show
what Redis holds and where the older entries are in the job-events log."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tests.integration.scheduler.conftest import ON_BOTH, StartHarness
from tests.integration.scheduler.sched_harness import eventually
from tests.integration.scheduler.test_sched_api_devices import logged_at
from tests.integration.scheduler.test_sched_console_audit import console_page

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

STEPS = ("WAITING_ONLINE", "QUERYING_VERSION", "COMMAND_SENT", "DOWNLOADING", "DOWNLOADED")


async def test_a_trimmed_timeline_says_where_the_rest_is(start_harness: StartHarness) -> None:
    harness = await start_harness(OTA_TIMELINE_CAP="2")
    device = f"trim-{uuid.uuid4().hex[:6]}"
    package = await harness.upload(b"trimmed timeline")
    tid = await harness.create_task(package["id"], [device])
    await harness.wait_releases(1)
    for version, state in enumerate(STEPS, start=1):
        harness.job_event(device, tid, state, job_version=version)

    async def trimmed() -> dict[str, Any] | None:
        shown: dict[str, Any] = (await harness.client.get(f"/v1/devices/{device}")).json()
        history = shown.get("history") or {}
        return shown if history.get("trimmed", 0) >= len(STEPS) - 2 else None

    shown = await eventually(trimmed, "the timeline trimmed to two entries")
    assert [e["to"] for e in shown["timeline"]] == ["DOWNLOADED", "DOWNLOADING"]
    assert shown["current_job"]["state"] == "DOWNLOADED"
    history = shown["history"]
    assert (history["topic"], history["trimmed"]) == (harness.topics.job_events, len(STEPS) - 2)
    first = logged_at(harness, history["partition"], history["first_offset"])
    assert first.key == device.encode()

    page = await console_page(harness, f"/console/devices/{device}")
    assert (
        f"{len(STEPS) - 2} older entries are in the log only: {harness.topics.job_events}, "
        f"partition {history['partition']}, the device's records from offset "
        f"{history['first_offset']}."
    ) in page


async def test_an_expired_timeline_keeps_the_last_job_and_says_where_it_is(
    start_harness: StartHarness,
) -> None:
    harness = await start_harness(OTA_TIMELINE_RETENTION_S="60")
    device = f"expired-{uuid.uuid4().hex[:6]}"
    package = await harness.upload(b"expired timeline")
    tid = await harness.create_task(package["id"], [device])
    await harness.wait_releases(1)
    long_ago = int(time.time() * 1000) - 120_000  # past the retention already
    for version, state in enumerate(STEPS, start=1):
        harness.job_event(device, tid, state, job_version=version, at_ms=long_ago + version)

    async def expired() -> dict[str, Any] | None:
        shown: dict[str, Any] = (await harness.client.get(f"/v1/devices/{device}")).json()
        job = shown.get("current_job") or {}
        return shown if job.get("state") == "DOWNLOADED" else None

    shown = await eventually(expired, "the device's last job applied")
    assert shown["timeline"] == []
    assert shown["history"]["expired"] is True
    first = logged_at(harness, shown["history"]["partition"], shown["history"]["first_offset"])
    assert first.key == device.encode()

    page = await console_page(harness, f"/console/devices/{device}")
    assert "No job has touched this device yet." not in page
    assert (
        f"Entries past the timeline's retention are in the log only: "
        f"{harness.topics.job_events}, partition {shown['history']['partition']}"
    ) in page


async def test_the_full_history_reads_back_from_the_log(start_harness: StartHarness) -> None:
    """A succeeded try folded in Redis and trimmed by the cap: the history endpoint reads
    every job event of the device back from the log, ids included, oldest first, page by
    page; an unknown device is refused."""
    harness = await start_harness(OTA_TIMELINE_CAP="2")
    device = f"hist-{uuid.uuid4().hex[:6]}"
    package = await harness.upload(b"history from the log")
    tid = await harness.create_task(package["id"], [device])
    await harness.wait_releases(1)
    sent = [
        harness.job_event(device, tid, state, job_version=version)
        for version, state in enumerate((*STEPS, "SUCCEEDED"), start=1)
    ]

    async def succeeded() -> dict[str, Any] | None:
        shown: dict[str, Any] = (await harness.client.get(f"/v1/devices/{device}")).json()
        return shown if (shown.get("current_job") or {}).get("state") == "SUCCEEDED" else None

    shown = await eventually(succeeded, "the device's success applied")
    assert shown["timeline"][0]["id"] == sent[-1].id
    assert all(entry["id"] is None for entry in shown["timeline"][1:])  # folded steps

    read: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while pages == 0 or cursor is not None:
        params = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        answer = await harness.client.get(f"/v1/devices/{device}/history", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        read += body["items"]
        cursor, pages = body["next_cursor"], pages + 1
    assert pages >= 2
    assert [e["id"] for e in read] == [e.id for e in sent]
    assert [e["to"] for e in read] == [e.to_state for e in sent]
    offsets = [e["offset"] for e in read]
    assert offsets == sorted(offsets)
    assert offsets[0] == shown["history"]["first_offset"]

    unknown = await harness.client.get(f"/v1/devices/nobody-{uuid.uuid4().hex[:6]}/history")
    assert unknown.status_code == 404
