"""Losing Redis: webhooks come back from their compacted topic with both secrets of a
rotation, a deleted one does not, no secret is in Kafka in clear, and a record that does
not open is skipped with its webhook id logged, not fatal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import redis
import redis.asyncio
from kafka import TopicPartition

from ota.kafka_clients import make_consumer
from ota.kafka_consumer import read_to_end
from scheduler import keys
from scheduler.bus import Producer
from scheduler.rebuild import restore
from scheduler.secretbox import WEBHOOK_SECRETS, SecretBox
from scheduler.webhook_record import open_record
from scheduler.webhook_signing import verify
from scheduler.webhooks import Webhooks
from tests.integration.scheduler.conftest import StartHarness
from tests.integration.scheduler.sched_harness import Harness
from tests.integration.scheduler.test_sched_notifications import Receiver

FIRST = "first-webhook-secret-0123"
SECOND = "rotated-webhook-secret-4567"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver(script=[])
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    async with server:
        yield r


async def _create(harness: Harness, url: str) -> str:
    made = await harness.client.post("/v1/webhooks", json={"url": url, "secret": FIRST})
    assert made.status_code == 201, made.text
    hid: str = made.json()["id"]
    return hid


def _records(harness: Harness) -> list[tuple[str, bytes | None]]:
    """Every record on the webhooks topic, in order."""
    topic = harness.topics.webhooks
    consumer = make_consumer(harness.settings.common, group_id=None, client_id="test-webhooks")
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return [
            (r.key.decode(), r.value)
            for _, batch in read_to_end(consumer, parts, poll_ms=500)
            for r in batch
            if r.key is not None
        ]
    finally:
        consumer.close()


async def test_webhooks_come_back_from_kafka_when_redis_is_lost(
    start_harness: StartHarness, sched_redis: redis.Redis[bytes], receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.port}/ota"
    first = await start_harness()
    kept = await _create(first, url)
    rotated = await first.client.post(f"/v1/webhooks/{kept}/secret", json={"secret": SECOND})
    assert rotated.status_code == 200, rotated.text
    gone = await _create(first, url)
    assert (await first.client.delete(f"/v1/webhooks/{gone}")).status_code == 204
    before = (await first.client.get("/v1/webhooks")).json()["items"]
    records = await asyncio.to_thread(_records, first)
    await first.stop()
    assert [(k, v is None) for k, v in records] == [
        (kept, False),
        (kept, False),
        (gone, False),
        (gone, True),
    ]
    assert not any(s.encode() in (v or b"") for s in (FIRST, SECOND) for _, v in records)

    sched_redis.flushdb()
    assert not sched_redis.exists(keys.WEBHOOKS)
    second = await start_harness(OTA_SCHEDULER_PORT=str(first.settings.http_port))
    after = (await second.client.get("/v1/webhooks")).json()["items"]
    assert after == before
    assert [(h["id"], h["rotating"]) for h in after] == [(kept, True)]
    answer = await second.client.post(f"/v1/webhooks/{kept}/test")
    assert answer.json()["ok"] is True, answer.text
    headers, body, _ = receiver.received[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    now_s = int(time.time())
    assert verify([FIRST], headers, body, now_s) == verify([SECOND], headers, body, now_s)
    assert (await second.client.get(f"/v1/webhooks/{gone}/deliveries")).status_code == 404


@pytest.fixture
async def webhooks(harness: Harness, aredis: redis.asyncio.Redis[bytes]) -> AsyncIterator[Webhooks]:
    """The registrations on the harness's topic, as a starting scheduler restores them."""
    producer = Producer(harness.settings.common)
    box = SecretBox(harness.settings.credential_keys, WEBHOOK_SECRETS)
    try:
        yield Webhooks(aredis, producer, harness.topics.webhooks, box)
    finally:
        await producer.close()


async def test_a_record_that_does_not_open_is_skipped_and_logged(
    harness: Harness,
    aredis: redis.asyncio.Redis[bytes],
    webhooks: Webhooks,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = await _create(harness, f"http://127.0.0.1:{receiver.port}/ota")
    forged = "f" * 32
    # The good webhook's sealed secret copied into another webhook's record.
    _, raw = (await asyncio.to_thread(_records, harness))[-1]
    assert raw is not None
    harness.produce_raw(
        harness.topics.webhooks, forged, orjson.dumps({**orjson.loads(raw), "id": forged})
    )
    await aredis.delete(keys.WEBHOOKS)

    with caplog.at_level(logging.ERROR, logger="scheduler.webhooks"):
        restored = await restore(aredis, harness.settings, webhooks)
    assert restored["webhooks"] == 1
    assert set(await aredis.hkeys(keys.WEBHOOKS)) == {good.encode()}
    [logged] = [r for r in caplog.records if r.getMessage() == "webhook not restored"]
    assert logged.__dict__["webhook"] == forged  # the log's `extra` fields
    assert "does not open" in logged.__dict__["reason"]
    again = await restore(aredis, harness.settings, webhooks)  # only what Redis lacks
    assert again["webhooks"] == again["webhooks_recorded"] == 0


async def test_start_up_records_old_webhooks_and_finishes_deletes(
    harness: Harness,
    aredis: redis.asyncio.Redis[bytes],
    webhooks: Webhooks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A registration only Redis holds (made before webhooks were recorded) is recorded on
    the topic, one Redis holds unreadable is logged and left; a tombstone whose delete
    never reached Redis removes it there."""
    old = {"id": "0" * 32, "url": "http://127.0.0.1:9/old", "secret": FIRST, "created_ms": 1}
    await aredis.hset(keys.WEBHOOKS, mapping={old["id"]: orjson.dumps(old), "b" * 32: b"{"})
    deleted = await _create(harness, "http://127.0.0.1:9/deleted")
    harness.produce_raw(harness.topics.webhooks, deleted, None)  # its Redis delete lost
    with caplog.at_level(logging.ERROR, logger="scheduler.webhooks"):
        restored = await restore(aredis, harness.settings, webhooks)
    assert (restored["webhooks_recorded"], restored["webhooks_deleted"]) == (1, 1)
    assert set(await aredis.hkeys(keys.WEBHOOKS)) == {old["id"].encode(), b"b" * 32}
    [logged] = [r for r in caplog.records if r.getMessage() == "webhook not recorded"]
    assert logged.__dict__["webhook"] == "b" * 32
    [(key, raw)] = [r for r in await asyncio.to_thread(_records, harness) if r[0] == old["id"]]
    assert raw is not None
    assert FIRST.encode() not in raw
    box = SecretBox(harness.settings.credential_keys, WEBHOOK_SECRETS)
    assert open_record(box, key, raw) == old


async def test_a_start_up_that_read_the_topic_before_a_delete_leaves_it_deleted(
    harness: Harness, aredis: redis.asyncio.Redis[bytes], webhooks: Webhooks
) -> None:
    """Another replica starting while a webhook is deleted: its read of the topic still has
    the registration, Redis no longer does; the delete's mark keeps it from coming back."""
    hid = await _create(harness, "http://127.0.0.1:9/racing")
    await aredis.rpush(keys.webhook_log(hid), b"{}")
    read_before = {k: v for k, v in await asyncio.to_thread(_records, harness)}
    assert read_before[hid] is not None
    assert (await harness.client.delete(f"/v1/webhooks/{hid}")).status_code == 204
    assert not await aredis.exists(keys.webhook_log(hid))  # the delivery log goes with it

    restored = await webhooks.restore(read_before)
    assert restored["webhooks"] == 0
    assert not await aredis.hexists(keys.WEBHOOKS, hid)
    listed = (await harness.client.get("/v1/webhooks")).json()["items"]
    assert hid not in {h["id"] for h in listed}
