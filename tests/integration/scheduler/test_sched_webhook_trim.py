"""The notification stream keeps only what some consumer group has not read and
acknowledged: the dispatcher trims the rest (a finished device's notification costs no
memory once delivered), never an entry still pending or unread in any group."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio

from scheduler import keys
from scheduler.webhooks import GROUP, Dispatcher, Webhooks
from tests.integration.scheduler.sched_harness import eventually

OTHER = "another-reader"  # a second consumer group on the stream, reading at its own pace


@pytest.fixture
async def fresh_stream(aredis: redis.asyncio.Redis[bytes]) -> AsyncIterator[None]:
    await aredis.delete(keys.NOTIFY_STREAM, keys.WEBHOOKS)
    yield
    await aredis.delete(keys.NOTIFY_STREAM, keys.WEBHOOKS)


async def present(r: redis.asyncio.Redis[bytes], eid: bytes) -> bool:
    return bool(await r.xrange(keys.NOTIFY_STREAM, eid.decode(), eid.decode()))


async def test_delivered_notifications_are_trimmed(
    aredis: redis.asyncio.Redis[bytes], webhooks: Webhooks, fresh_stream: None
) -> None:
    dispatcher = Dispatcher(
        aredis, webhooks, consumer="trim-test", attempts=1, backoff_s=0.1, timeout_s=5
    )
    await dispatcher.ensure_group()
    await aredis.xgroup_create(keys.NOTIFY_STREAM, OTHER, id="0")
    note = {"kind": "device_result", "task_id": "t", "state": "SUCCEEDED"}
    ids = [
        await aredis.xadd(keys.NOTIFY_STREAM, {"body": orjson.dumps(note | {"id": f"n{i}"})})
        for i in range(250)
    ]
    # The other group has read nothing: nothing goes, whatever the dispatcher delivered.
    stop = asyncio.Event()
    running = asyncio.create_task(dispatcher.run(stop))
    try:

        async def all_acknowledged() -> bool:
            groups = await aredis.xinfo_groups(keys.NOTIFY_STREAM)  # type: ignore[no-untyped-call]
            mine = next(g for g in groups if g["name"] == GROUP.encode())
            return bool(mine["last-delivered-id"] == ids[-1] and mine["pending"] == 0)

        await eventually(all_acknowledged, "the dispatcher through the stream (no webhooks)")
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(running, 10)
    await dispatcher.trim_delivered()
    assert await aredis.xlen(keys.NOTIFY_STREAM) == 250

    # The other group reads everything and acknowledges all but one: up to that one go.
    read = await aredis.xreadgroup(OTHER, "c", {keys.NOTIFY_STREAM: ">"}, count=1000)
    assert [eid for eid, _ in read[0][1]] == ids
    await aredis.xack(keys.NOTIFY_STREAM, OTHER, *ids[:120], *ids[121:])  # type: ignore[no-untyped-call]
    await dispatcher.trim_delivered()
    assert await present(aredis, ids[120])
    assert await aredis.xlen(keys.NOTIFY_STREAM) < 250
    assert not await present(aredis, ids[0])

    await aredis.xack(keys.NOTIFY_STREAM, OTHER, ids[120])  # type: ignore[no-untyped-call]
    await dispatcher.trim_delivered()
    assert not await present(aredis, ids[120])
    assert await present(aredis, ids[-1])  # the last delivered one marks the place
