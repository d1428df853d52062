"""The webhook dispatcher delivers what its own consumer read and never acknowledged (a
round cut short by Redis going away, or a crashed predecessor with the same instance id)
as soon as it runs, not after the minute another replica would wait to claim it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio

from scheduler import keys
from scheduler.webhooks import GROUP, Dispatcher, Webhooks
from tests.faults.webhook_inbox import SECRET, WebhookInbox
from tests.integration.scheduler.conftest import ON_BOTH

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

CONSUMER = "sched-backlog-test"


@pytest.fixture
async def fresh_stream(aredis: redis.asyncio.Redis[bytes]) -> AsyncIterator[None]:
    await aredis.delete(keys.NOTIFY_STREAM, keys.WEBHOOKS)
    yield
    await aredis.delete(keys.NOTIFY_STREAM, keys.WEBHOOKS)


async def test_entries_read_and_never_acknowledged_are_delivered_at_once(
    aredis: redis.asyncio.Redis[bytes], webhooks: Webhooks, fresh_stream: None
) -> None:
    inbox = WebhookInbox()
    inbox.start()
    await webhooks.create({"url": inbox.url, "secret": SECRET, "events": ["device_result"]})
    dispatcher = Dispatcher(
        aredis, webhooks, consumer=CONSUMER, attempts=3, backoff_s=0.1, timeout_s=5
    )
    await dispatcher.ensure_group()
    devices = {f"backlog-{i}" for i in range(3)}
    for n, device in enumerate(sorted(devices)):
        note = {
            "kind": "device_result",
            "id": f"n{n}",
            "task_id": "t",
            "device_id": device,
            "attempt": 1,
            "state": "SUCCEEDED",
        }
        await aredis.xadd(keys.NOTIFY_STREAM, {"body": orjson.dumps(note)})
    # Read by this consumer and never acknowledged: what a cut-short round leaves behind.
    read = await aredis.xreadgroup(GROUP, CONSUMER, {keys.NOTIFY_STREAM: ">"}, count=10)
    assert sum(len(batch) for _, batch in read) == 3

    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:
        # Far less than CLAIM_IDLE_MS (60 s): only reading its own backlog gets them out.
        assert await asyncio.to_thread(inbox.wait_for, devices, 15), inbox.device_results()
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(running, 10)
        inbox.stop()
    pending = await aredis.xpending(keys.NOTIFY_STREAM, GROUP)
    assert pending["pending"] == 0
