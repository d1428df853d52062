"""The audit trail: every write request is recorded with the key's fingerprint (never the
key), the operation, its target and outcome, in Kafka's audit topic and GET /v1/audit."""

from __future__ import annotations

import asyncio
import hashlib
import io
import uuid
from typing import Any

import httpx
import orjson
import redis
from kafka import TopicPartition

from ops.cli import main as ota_cli
from ota.kafka_clients import make_consumer
from scheduler.audit import UNRECORDED_ACTION
from scheduler.bus import absent_topics
from scheduler.shared_budget import DEBT_KEY
from tests.integration.scheduler.conftest import ON_BOTH, StartHarness
from tests.integration.scheduler.sched_harness import READ_KEY, WRITE_KEY, Harness
from tests.integration.scheduler.test_sched_console_login_audit import (
    every_failure_told,
    unrecorded,
)

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster


def fingerprint(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


async def audit_items(harness: Harness, **params: str) -> dict[str, Any]:
    response = await harness.client.get("/v1/audit", params=params)
    assert response.status_code == 200
    page: dict[str, Any] = response.json()
    return page


async def test_task_operations_are_audited_by_key_fingerprint(harness: Harness) -> None:
    device = f"audit-{uuid.uuid4().hex[:6]}"
    package = await harness.upload(b"audited package")
    tid = await harness.create_task(package["id"], [device])
    assert (await harness.client.post(f"/v1/tasks/{tid}/pause")).status_code == 200
    assert (await harness.client.post(f"/v1/tasks/{tid}/resume")).status_code == 200
    assert (await harness.client.post(f"/v1/tasks/{tid}/cancel")).status_code == 200
    assert (await harness.client.get(f"/v1/tasks/{tid}")).status_code == 200  # reads are not
    # Refused attempts are recorded too: a read key, an unknown key, no key.
    reader = {"Authorization": f"Bearer {READ_KEY}"}
    assert (await harness.anon.post(f"/v1/tasks/{tid}/retry", headers=reader)).status_code == 403
    stranger = {"Authorization": "Bearer not-a-configured-key"}
    assert (await harness.anon.post(f"/v1/tasks/{tid}/pause", headers=stranger)).status_code == 401
    assert (await harness.anon.post(f"/v1/tasks/{tid}/cancel")).status_code == 401

    items = (await audit_items(harness))["items"]
    seen = [(i["action"], i["key_id"], i["status"], i["outcome"]) for i in reversed(items)]
    writer, read = fingerprint(WRITE_KEY), fingerprint(READ_KEY)
    assert seen == [
        ("upload_package", writer, 201, "ok"),
        ("create_task", writer, 201, "ok"),
        ("pause_task", writer, 200, "ok"),
        ("resume_task", writer, 200, "ok"),
        ("cancel_task", writer, 200, "ok"),
        ("retry_task", read, 403, "denied"),
        ("pause_task", None, 401, "denied"),
        ("cancel_task", None, 401, "denied"),
    ]
    created = next(i for i in items if i["action"] == "create_task")
    assert created["result_id"] == tid
    assert created["route"] == "/v1/tasks"
    assert created["client"] == "127.0.0.1"
    paused = next(i for i in items if i["action"] == "pause_task" and i["status"] == 200)
    assert paused["target"] == {"task_id": tid}
    assert paused["path"] == f"/v1/tasks/{tid}/pause"
    assert paused["at_ms"] <= created["at_ms"] + 60_000
    text = orjson.dumps(items).decode()
    for secret in (WRITE_KEY, READ_KEY, "not-a-configured-key"):
        assert secret not in text

    # The same records are in Kafka's audit topic, keyed by the key's fingerprint.
    consumer = make_consumer(harness.settings.common, group_id=None, client_id="audit-test")
    try:
        tp = TopicPartition(harness.topics.audit, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        logged: list[dict[str, Any]] = []
        for _ in range(30):
            for records in consumer.poll(timeout_ms=1000).values():
                logged += [orjson.loads(r.value) for r in records]
            if len(logged) >= len(items):
                break
    finally:
        consumer.close()
    assert sorted(r["id"] for r in logged) == sorted(i["id"] for i in items)


async def test_the_audit_trail_pages_newest_first(harness: Harness) -> None:
    ids = []
    for n in range(5):
        payload = {"url": f"http://127.0.0.1:9/hook{n}", "secret": "s" * 16}
        created = await harness.client.post("/v1/webhooks", json=payload)
        ids.append(created.json()["id"])
    first = await audit_items(harness, limit="2")
    second = await audit_items(harness, limit="2", cursor=first["next_cursor"])
    third = await audit_items(harness, limit="2", cursor=second["next_cursor"])
    pages = [first, second, third]
    results = [i["result_id"] for page in pages for i in page["items"]]
    assert results == list(reversed(ids))
    assert third["next_cursor"] is None
    assert {i["action"] for p in pages for i in p["items"]} == {"create_webhook"}
    bad = await harness.client.get("/v1/audit", params={"cursor": "yesterday"})
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "bad_cursor"


async def test_reading_the_audit_trail_needs_a_key(harness: Harness) -> None:
    assert (await harness.anon.get("/v1/audit")).status_code == 401
    async with httpx.AsyncClient(
        base_url=str(harness.anon.base_url), headers={"Authorization": f"Bearer {READ_KEY}"}
    ) as reader:
        assert (await reader.get("/v1/audit")).status_code == 200


async def test_the_cli_lists_the_audit_trail(harness: Harness) -> None:
    hook = await harness.client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/h", "secret": "s" * 16}
    )
    out, err = io.StringIO(), io.StringIO()
    env = {"OTA_API_URL": harness.base_url, "OTA_API_KEY": READ_KEY}
    code = await asyncio.to_thread(ota_cli, ["audit", "--limit", "5"], env, out, err)
    assert code == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["AT", "KEY_ID", "ACTION"]
    assert "create_webhook" in lines[1]
    assert fingerprint(WRITE_KEY) in lines[1]
    assert hook.json()["id"] in lines[1]


async def test_the_audit_topic_is_checked_at_start(harness: Harness) -> None:
    common = harness.settings.common
    missing = f"test.no-audit.{uuid.uuid4().hex}"
    assert absent_topics(common, (common.topics.audit, missing)) == {missing}


async def test_a_flood_of_unknown_keys_writes_at_most_the_audit_budget(
    start_harness: StartHarness,
) -> None:
    """Anyone can send a write request with a wrong key: each is refused (401), and the
    audit trail records 5, then one per 2 s, counting the rest (scheduler/audit_budget.py)."""
    harness = await start_harness(OTA_AUDIT_FAILURES_BURST="5", OTA_AUDIT_FAILURES_PER_MIN="30")
    before = unrecorded()
    hook = {"url": "http://127.0.0.1:9/h", "secret": "s" * 16}
    flood = 300
    started = asyncio.get_running_loop().time()
    for n in range(flood):
        stranger = {"Authorization": f"Bearer wrong-key-{n:06d}"}
        refused = await harness.anon.post("/v1/webhooks", json=hook, headers=stranger)
        assert refused.status_code == 401
    elapsed = asyncio.get_running_loop().time() - started
    items = (await audit_items(harness, limit="1000"))["items"]
    assert len(items) <= 5 + int(elapsed / 2) + 1  # the budget, not the flood
    singles = [i for i in items if i["action"] != "unrecorded_failures"]
    assert {(i["action"], i["key_id"], i["status"]) for i in singles} == {
        ("create_webhook", None, 401)
    }

    async def one_more() -> None:
        assert (await harness.anon.post("/v1/webhooks", json=hook)).status_code == 401

    trail = await every_failure_told(harness, flood, before, one_more)
    assert "wrong-key-" not in orjson.dumps(trail).decode()
    assert (await harness.client.get("/v1/webhooks")).json() == {"items": []}  # none made


async def test_failures_after_a_count_written_mid_flood_are_told_too(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    """A token back while a flood goes on (a slow flood, as under load) writes a count, and
    the failures after it are counted anew, to be told by a later record."""
    harness = await start_harness(OTA_AUDIT_FAILURES_BURST="1", OTA_AUDIT_FAILURES_PER_MIN="30")
    before = unrecorded()

    async def refused(n: int) -> None:
        for _ in range(n):
            assert (await harness.anon.post("/v1/webhooks", json={})).status_code == 401

    await refused(4)  # 1 recorded, 3 untold
    sched_redis.delete(DEBT_KEY)  # the bucket paid back, as 2 s would: no sleep
    await refused(6)  # the first counts the 3 and itself; 5 untold
    trail = [(i["action"], i["target"]) for i in (await audit_items(harness))["items"]]
    assert trail == [(UNRECORDED_ACTION, {"count": "4"}), ("create_webhook", {})]

    async def one_more() -> None:
        await refused(1)

    told = await every_failure_told(harness, 10, before, one_more)
    counts = [i["target"]["count"] for i in told if i["action"] == UNRECORDED_ACTION]
    assert counts[0] == "4"
    assert len(counts) == 2  # the later one told the rest
