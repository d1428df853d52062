"""Notifications: the task-events topic and webhooks (signature, retries, delivery log,
secret rotation)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from unittest.mock import ANY

import orjson
import pytest
import redis
from kafka import TopicPartition

from ota.kafka_clients import make_consumer
from scheduler import keys
from scheduler.renotify import read_since
from scheduler.webhook_signing import TOLERANCE_S, WebhookVerificationError, verify
from tests.faults.webhook_inbox import WebhookInbox
from tests.integration.scheduler.conftest import ON_BOTH, StartHarness
from tests.integration.scheduler.sched_harness import Harness, eventually

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

SECRET = "webhook-secret-0123456789"


@dataclass
class Receiver:
    """A tiny HTTP server answering with scripted status codes, then 200."""

    script: list[int]
    port: int = 0
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.script.pop(0) if self.script else 200
                self.received.append((headers, body, status))
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(script=[500, 503])
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    async with server:
        yield r


async def test_webhook_retries_until_delivered_and_logs_attempts(
    harness: Harness, receiver: Receiver
) -> None:
    hook = (
        await harness.client.post(
            "/v1/webhooks",
            json={
                "url": f"http://127.0.0.1:{receiver.port}/ota",
                "secret": SECRET,
                "events": ["task_status"],
            },
        )
    ).json()
    device = f"hook-{uuid.uuid4().hex[:6]}"
    package = await harness.upload(b"webhooks")
    tid = await harness.create_task(package["id"], [device])
    await harness.wait_releases(1)
    harness.job_event(device, tid, "SUCCEEDED")
    await harness.wait_status(tid, "Success")

    async def delivered() -> list[str] | None:
        statuses = [
            orjson.loads(body)["status"] for _, body, code in receiver.received if code == 200
        ]
        return statuses if "Success" in statuses else None

    statuses = await eventually(delivered, "the Success notification to be delivered")
    assert "Processing" in statuses
    first_headers, first_body, first_code = receiver.received[0]
    assert first_code == 500
    assert first_headers["content-type"] == "application/json"
    now_s = int(time.time())
    for headers, body, _ in receiver.received:
        assert verify([SECRET], headers, body, now_s) == headers["webhook-id"]
    # A captured delivery replayed after the tolerance is refused by its timestamp.
    with pytest.raises(WebhookVerificationError, match="from now"):
        verify([SECRET], first_headers, first_body, now_s + TOLERANCE_S + 60)
    # The first notification took three attempts (500, 503, 200), all logged, all under one
    # message id (receivers deduplicate by it), each signed with its own timestamp.
    first_id = orjson.loads(first_body)["id"]
    attempts = [h for h, b, _ in receiver.received if orjson.loads(b)["id"] == first_id]
    assert len(attempts) == 3
    assert {h["webhook-id"] for h in attempts} == {f"{first_id}_{hook['id']}"}

    async def logged() -> list[dict[str, object]] | None:
        log = (await harness.client.get(f"/v1/webhooks/{hook['id']}/deliveries")).json()["items"]
        mine = [e for e in log if e["event_id"] == first_id]
        return mine if len(mine) == 3 else None

    entries = await eventually(logged, "three logged attempts")
    assert [e["attempt"] for e in reversed(entries)] == [1, 2, 3]
    assert [e["ok"] for e in reversed(entries)] == [False, False, True]
    assert entries[0]["final"] is True


async def test_a_rotated_secret_signs_beside_the_old_one_until_retired(
    harness: Harness, receiver: Receiver
) -> None:
    receiver.script.clear()
    url = f"http://127.0.0.1:{receiver.port}/ota"
    body = {"url": url, "secret": SECRET, "events": ["task_status"]}
    hook = (await harness.client.post("/v1/webhooks", json=body)).json()
    new_secret = "the-rotated-webhook-secret-42"
    rotated = await harness.client.post(
        f"/v1/webhooks/{hook['id']}/secret", json={"secret": new_secret}
    )
    assert rotated.status_code == 200
    assert rotated.json()["rotating"] is True
    assert not {"secret", "previous_secret"} & rotated.json().keys()
    again = await harness.client.post(
        f"/v1/webhooks/{hook['id']}/secret", json={"secret": "yet-another-secret-value"}
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "rotation_in_progress"

    device = f"rot-{uuid.uuid4().hex[:6]}"
    tid = await harness.create_task((await harness.upload(b"rotation"))["id"], [device])
    await harness.wait_releases(1)

    async def first() -> tuple[dict[str, str], bytes] | None:
        return (receiver.received[0][0], receiver.received[0][1]) if receiver.received else None

    headers, payload = await eventually(first, "a delivery after the rotation")
    assert len(headers["webhook-signature"].split(" ")) == 2
    now_s = int(time.time())
    assert verify([SECRET], headers, payload, now_s) == verify(
        [new_secret], headers, payload, now_s
    )

    retired = await harness.client.delete(f"/v1/webhooks/{hook['id']}/previous-secret")
    assert retired.status_code == 200
    assert retired.json()["rotating"] is False
    seen = len(receiver.received)
    harness.job_event(device, tid, "SUCCEEDED")
    await harness.wait_status(tid, "Success")

    async def later() -> tuple[dict[str, str], bytes] | None:
        for h, b, _ in receiver.received[seen:]:
            if orjson.loads(b)["status"] == "Success":
                return h, b
        return None

    headers, payload = await eventually(later, "the Success delivery after retiring")
    assert len(headers["webhook-signature"].split(" ")) == 1
    verify([new_secret], headers, payload, int(time.time()))
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify([SECRET], headers, payload, int(time.time()))


async def test_task_events_topic_carries_status_changes_and_device_results(
    harness: Harness, sched_redis: redis.Redis[bytes]
) -> None:
    run = uuid.uuid4().hex[:6]
    devices = [f"te-{run}-{i}" for i in range(2)]
    package = await harness.upload(b"task events")
    tid = await harness.create_task(package["id"], devices)
    await harness.wait_releases(2)
    harness.job_event(devices[0], tid, "SUCCEEDED")
    failed = harness.job_event(devices[1], tid, "FAILED", cause=28)
    # A redelivery (or a replay after Redis lost its last writes): its notification may
    # not have gone out before a crash, so it goes again, with the same id.
    harness.job_event(devices[1], tid, "FAILED", cause=28, at_ms=failed.at_ms)
    await harness.wait_status(tid, "PartialSuccess")
    consumer = make_consumer(harness.settings.common, group_id=None)
    try:
        tp = TopicPartition(harness.topics.task_events, 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        events: list[dict[str, object]] = []
        for _ in range(20):
            polled = await asyncio.to_thread(consumer.poll, 500)
            events += [orjson.loads(r.value) for batch in polled.values() for r in batch]
            statuses = [e["status"] for e in events if e["kind"] == "task_status"]
            if "PartialSuccess" in statuses:
                break
    finally:
        consumer.close()
    assert all(e["task_id"] == tid for e in events)
    assert [e["status"] for e in events if e["kind"] == "task_status"] == [
        "Processing",
        "PartialSuccess",
    ]
    # Each status change entered the webhooks' stream with the change itself: the same
    # notification there as on the topic, byte for byte.
    stream = [fields[b"body"] for _, fields in sched_redis.xrange(keys.NOTIFY_STREAM)]
    assert [b for b in stream if orjson.loads(b)["kind"] == "task_status"] == [
        orjson.dumps(e) for e in events if e["kind"] == "task_status"
    ]
    results = [e for e in events if e["kind"] == "device_result"]
    distinct: dict[str, set[bytes]] = {}
    for e in results:
        distinct.setdefault(str(e["id"]), set()).add(orjson.dumps(e))
    # Every copy of one result is the same notification, byte for byte.
    assert sorted(len(bodies) for bodies in distinct.values()) == [1, 1], results
    assert sorted(
        (str(e["device_id"]), str(e["status"]), e["cause"], e["at_ms"])
        for e in (orjson.loads(next(iter(bodies))) for bodies in distinct.values())
    ) == [(devices[0], "Success", None, ANY), (devices[1], "Fail", 28, failed.at_ms)]


async def test_status_notifications_pending_when_redis_is_emptied_are_told_after(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes]
) -> None:
    first = await start_harness(OTA_WEBHOOK_ATTEMPTS="50", OTA_WEBHOOK_BACKOFF_S="1")
    hooks = WebhookInbox()
    hooks.start()
    hook = {"url": hooks.url, "secret": SECRET, "events": ["task_status"]}
    assert (await first.client.post("/v1/webhooks", json=hook)).status_code == 201
    hooks.stop()  # refused from now on: every delivery is retried, later and later
    package = await first.upload(b"told after the loss")
    tid = await first.create_task(package["id"], [f"told-{uuid.uuid4().hex[:6]}"])
    await first.wait_releases(1)

    async def on_topic() -> set[str] | None:
        values = await asyncio.to_thread(read_since, first.settings.common, 0)
        notes = [orjson.loads(v) for v in values]
        ids = {n["id"] for n in notes if n["kind"] == "task_status" and n["task_id"] == tid}
        return ids or None

    told = await eventually(on_topic, "the task's status notifications on the topic")
    await first.stop()  # undelivered: they were only in the stream Redis loses

    sched_redis.flushdb()
    hooks = WebhookInbox(hooks.port)
    hooks.start()
    await start_harness(
        OTA_SCHEDULER_PORT=str(first.settings.http_port),
        OTA_SCHEDULER_GROUP=first.settings.consumer_group,
    )

    async def delivered() -> bool:
        return told <= {b["id"] for b in hooks.bodies if b.get("kind") == "task_status"}

    try:
        await eventually(delivered, "the status notifications to reach the webhook")
    finally:
        hooks.stop()
