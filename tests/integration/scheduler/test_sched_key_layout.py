"""The first start of the tagged layout moves the scheduler's untagged keys (real Redis)."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio

from scheduler import keys
from scheduler.credentials import PENDING, record_key
from scheduler.key_layout import VERSION, move_old_keys
from tests.integration.scheduler.sched_harness import Harness


async def test_old_keys_move_once_with_values_and_ttls_and_the_store_stays(
    aredis: redis.asyncio.Redis[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    await aredis.hset("ota:sched:dev:d-1", mapping={"fw": "1.0", "online": "1"})
    await aredis.rpush("ota:sched:dev:d-1:tl", b"e1", b"e2")
    await aredis.set("ota:sched:lease:t-1", b"replica|7", ex=300)
    await aredis.hset("ota:sched:dry:{r-1}:summary", "targeted", "3")
    await aredis.set("ota:sched:restored", b"1")
    await aredis.hset(record_key("d-1"), mapping={"kid": "c1", "box": "x"})
    await aredis.sadd(PENDING, "d-1")
    await aredis.set("ota:sched:task:t-2:counts", b"old")  # an old scheduler wrote it late
    await aredis.set(keys.task_counts("t-2"), b"new")

    with caplog.at_level(logging.WARNING, logger="scheduler.key_layout"):
        await move_old_keys(aredis)

    assert await aredis.hgetall(keys.device("d-1")) == {b"fw": b"1.0", b"online": b"1"}
    assert await aredis.lrange(keys.timeline("d-1"), 0, -1) == [b"e1", b"e2"]
    assert await aredis.get(keys.lease("t-1")) == b"replica|7"
    assert 0 < await aredis.ttl(keys.lease("t-1")) <= 300
    assert await aredis.hget(keys.dry_run("r-1", "summary"), "targeted") == b"3"
    assert await aredis.exists(keys.RESTORED)
    assert await aredis.hget(record_key("d-1"), "kid") == b"c1"  # the broker reads it there
    assert await aredis.sismember(PENDING, "d-1")
    assert await aredis.get(keys.task_counts("t-2")) == b"new"  # never overwritten
    assert await aredis.get("ota:sched:task:t-2:counts") == b"old"
    assert not await aredis.exists("ota:sched:dev:d-1", "ota:sched:lease:t-1")
    assert await aredis.get(keys.LAYOUT) == VERSION
    assert "moved 5 scheduler keys" in caplog.text
    assert "1 left where they were" in caplog.text

    await aredis.set("ota:sched:dev:d-2", b"written after the move")
    await move_old_keys(aredis)  # the layout is marked: nothing is scanned or moved
    assert await aredis.get("ota:sched:dev:d-2") == b"written after the move"


async def test_a_start_on_the_old_layout_finds_its_tasks(
    aredis: redis.asyncio.Redis[bytes], harness: Harness
) -> None:
    package = await harness.upload(b"layout" * 100)
    tid = await harness.create_task(package["id"], ["layout-1"])
    await harness.wait_releases(1)
    await harness.stop()
    # Back to the untagged layout, as a scheduler of the old one would have left it.
    async for key in aredis.scan_iter(match=keys.P + "*"):
        await aredis.rename(key, key.replace(keys.P.encode(), b"ota:sched:", 1))
    await harness.start()
    assert (await harness.task(tid))["id"] == tid
    harness.job_event("layout-1", tid, "SUCCEEDED", job_version=5)
    await harness.wait_status(tid, "Success")
