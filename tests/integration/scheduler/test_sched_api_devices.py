"""Device registry and groups: fed by inbox records and job events, edited by operators."""

from __future__ import annotations

import time
import uuid
from typing import Any

from kafka import TopicPartition

from ota.kafka_clients import make_consumer
from ota.records import JobEventRecord, decode
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import Harness, eventually

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


def ids(prefix: str, n: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{i}" for i in range(n)]


async def test_registry_learns_versions_presence_and_filters(harness: Harness) -> None:
    a, b, c = ids("reg", 3)
    harness.report(a, fw="1.0", sw="s1")
    harness.report(b, fw="1.1")
    harness.report(c, fw="1.0")
    harness.presence(a, True)
    harness.presence(c, True)
    harness.presence(c, False)
    shown = await harness.wait_device(a, fw_version="1.0", sw_version="s1", online=True)
    assert shown["last_seen_ms"] > 0
    await harness.wait_device(c, online=False)
    await harness.wait_device(b, fw_version="1.1")
    by_version = (await harness.client.get("/v1/devices", params={"fw_version": "1.0"})).json()
    assert {d["device_id"] for d in by_version["items"]} == {a, c}
    online = (await harness.client.get("/v1/devices", params={"online": "true"})).json()
    assert [d["device_id"] for d in online["items"]] == [a]
    offline = (
        await harness.client.get("/v1/devices", params={"online": "false", "fw_version": "1.0"})
    ).json()
    assert [d["device_id"] for d in offline["items"]] == [c]
    page1 = (await harness.client.get("/v1/devices", params={"limit": 2})).json()
    assert len(page1["items"]) == 2
    page2 = (
        await harness.client.get("/v1/devices", params={"limit": 2, "cursor": page1["next_cursor"]})
    ).json()
    assert {d["device_id"] for d in page1["items"] + page2["items"]} == {a, b, c}
    # A newer report moves the device between version indexes.
    harness.report(c, fw="2.0")
    await harness.wait_device(c, fw_version="2.0")
    moved = (await harness.client.get("/v1/devices", params={"fw_version": "1.0"})).json()
    assert [d["device_id"] for d in moved["items"]] == [a]


async def test_groups_tags_and_errors(harness: Harness) -> None:
    a, b = ids("grp", 2)
    created = await harness.client.post("/v1/groups", json={"name": "north"})
    assert created.status_code == 201
    assert (await harness.client.post("/v1/groups", json={"name": "north"})).status_code == 200
    bad_name = await harness.client.post("/v1/groups", json={"name": "no spaces"})
    assert bad_name.json()["error"]["code"] == "bad_name"
    added = await harness.client.post("/v1/groups/north/devices", json={"add": [a, b]})
    assert added.json()["added"] == 2
    patched = await harness.client.patch(f"/v1/devices/{a}", json={"tags": ["beta"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["tags"] == ["beta"]
    groups = (await harness.client.get("/v1/groups")).json()["items"]
    assert groups == [{"name": "north", "devices": 2}]
    by_group = (
        await harness.client.get("/v1/devices", params={"group": "north", "tag": "beta"})
    ).json()
    assert [d["device_id"] for d in by_group["items"]] == [a]
    unknown = await harness.client.patch(f"/v1/devices/{a}", json={"groups": ["south"]})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_group"
    nothing = await harness.client.post("/v1/groups/north/devices", json={})
    assert nothing.json()["error"]["code"] == "empty_targets"
    bad_id = await harness.client.post("/v1/groups/north/devices", json={"add": ["a b"]})
    assert bad_id.json()["error"]["code"] == "bad_device_id"
    missing = await harness.client.post("/v1/groups/south/devices", json={"add": [a]})
    assert missing.status_code == 404
    removed = await harness.client.post("/v1/groups/north/devices", json={"remove": [b]})
    assert removed.json()["removed"] == 1
    assert (await harness.client.delete("/v1/groups/north")).status_code == 204
    assert (await harness.client.delete("/v1/groups/north")).status_code == 404
    assert (await harness.client.get("/v1/groups")).json()["items"] == []
    bad_online = await harness.client.get("/v1/devices", params={"online": "maybe"})
    assert bad_online.json()["error"]["field"] == "online"
    bad_limit = await harness.client.get("/v1/devices", params={"limit": "0"})
    assert bad_limit.json()["error"]["code"] == "out_of_range"
    assert (await harness.client.get("/v1/devices/never-seen-device")).status_code == 404
    not_json = await harness.client.patch(
        f"/v1/devices/{a}", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"]["code"] == "invalid_json"


async def test_device_timeline_and_current_job(harness: Harness) -> None:
    (device,) = ids("tl", 1)
    package = await harness.upload(b"timeline")
    tid = await harness.create_task(package["id"], [device])
    await harness.wait_releases(1)
    harness.job_event(device, tid, "WAITING_ONLINE", job_version=1)
    harness.job_event(device, tid, "FAILED", from_state="WAITING_ONLINE", job_version=2, cause=3)
    # The same event again (a redelivery) is stored once.
    replay = harness.job_event(
        device, tid, "WAITING_ONLINE", job_version=1, event_id=uuid.uuid4().hex
    )

    async def timeline() -> dict[str, object] | None:
        shown = (await harness.client.get(f"/v1/devices/{device}")).json()
        return shown if len(shown.get("timeline", [])) >= 3 else None

    shown = await eventually(timeline, "three timeline entries")
    job = shown["current_job"]
    assert isinstance(job, dict)
    assert job["state"] == "FAILED"  # the older replayed event did not rewind it
    assert job["cause_message"] == "Waiting for the device online timeout"
    entries = shown["timeline"]
    assert isinstance(entries, list)
    assert {e["id"] for e in entries} >= {replay.id}
    failed = [e for e in entries if e["to"] == "FAILED"]
    assert failed[0]["cause"] == 3
    # Where the full history is: the job-events topic at the device's first event.
    history = shown["history"]
    assert isinstance(history, dict)
    assert (history["topic"], history["trimmed"]) == (harness.topics.job_events, 0)
    first = logged_at(harness, history["partition"], history["first_offset"])
    event = decode(first.value, frozenset({"job_event"}))
    assert isinstance(event, JobEventRecord)
    assert (first.key, event.device_id, event.task_id) == (device.encode(), device, tid)


def logged_at(harness: Harness, partition: int, offset: int) -> Any:
    """The job-events record at (partition, offset)."""
    consumer = make_consumer(harness.settings.common, group_id=None, client_id="history-test")
    try:
        tp = TopicPartition(harness.topics.job_events, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        for _ in range(30):
            for records in consumer.poll(timeout_ms=1000, max_records=1).values():
                return records[0]
    finally:
        consumer.close()
    raise AssertionError(f"nothing at {partition}/{offset} of {harness.topics.job_events}")


async def test_timeline_follows_the_log_when_stamps_disagree(harness: Harness) -> None:
    # The edge stamps "downloaded" a moment after the gateway stamped the device's
    # failing result, yet the worker applied them in the other order: the log's order wins.
    (device,) = ids("order", 1)
    package = await harness.upload(b"log order")
    tid = await harness.create_task(package["id"], [device])
    await harness.wait_releases(1)
    t = int(time.time() * 1000)
    steps = [("QUERYING_VERSION", t), ("COMMAND_SENT", t + 1000), ("DOWNLOADED", t + 5000)]
    for version, (state, at_ms) in enumerate(steps, start=1):
        last = harness.job_event(device, tid, state, job_version=version, at_ms=at_ms)
    harness.job_event(
        device, tid, "FAILED", from_state="DOWNLOADED", job_version=4, cause=25, at_ms=t + 4000
    )
    harness.job_event(device, tid, "DOWNLOADED", job_version=3, at_ms=t + 5000, event_id=last.id)

    async def timeline() -> dict[str, object] | None:
        shown = (await harness.client.get(f"/v1/devices/{device}")).json()
        return shown if len(shown.get("timeline", [])) >= 4 else None

    shown = await eventually(timeline, "four timeline entries")
    job = shown["current_job"]
    assert isinstance(job, dict)
    assert job["state"] == "FAILED"
    entries = shown["timeline"]
    assert isinstance(entries, list)
    assert [e["to"] for e in entries] == [
        "FAILED",
        "DOWNLOADED",
        "COMMAND_SENT",
        "QUERYING_VERSION",
    ]
