"""Dead letters per reason: the scheduler reads the dead-letter topic and counts what every
service refused by source and reason (its own refusals included), once per record even
when a batch is applied again after a redelivery."""

from __future__ import annotations

import time
import uuid

import redis
import redis.asyncio
from kafka.consumer.fetcher import ConsumerRecord

from ota.records import DeadLetterRecord, encode
from scheduler import keys
from scheduler.deadletters import HOUR_MS, DeadLetterCounts, read
from tests.integration.scheduler.conftest import ON_BOTH
from tests.integration.scheduler.sched_harness import Harness, eventually


def letter(source: str, reason: str) -> bytes:
    return encode(DeadLetterRecord(source=source, reason=reason, message="x", raw_b64=""))


def consumed(offset: int, value: bytes, stamp_ms: int, partition: int = 0) -> ConsumerRecord:
    return ConsumerRecord(
        "ota.dead-letters",
        partition,
        -1,
        offset,
        stamp_ms,
        0,
        b"gateway",
        value,
        [],
        None,
        len(b"gateway"),
        len(value),
        -1,
    )


@ON_BOTH
async def test_a_batch_applied_again_is_not_counted_twice(
    aredis: redis.asyncio.Redis[bytes],
) -> None:
    counts = DeadLetterCounts(aredis)
    now = int(time.time() * 1000)
    batch = [
        consumed(0, letter("gateway", "invalid_json"), now),
        consumed(1, letter("gateway", "invalid_json"), now),
        consumed(2, letter("worker", "state_corrupt"), now - 2 * HOUR_MS),
        consumed(3, b"\xff not json", now),
        consumed(4, letter("edge", "too_old"), now - 30 * HOUR_MS),  # outside the last day
    ]
    await counts(batch)
    await counts(batch)  # redelivered after a crash before the commit
    await counts([*batch[3:], consumed(5, letter("gateway", "invalid_json"), now)])
    assert await counts.last_day(now) == [
        {"source": "gateway", "reason": "invalid_json", "count": 3},
        {"source": "unknown", "reason": "not_a_dead_letter", "count": 1},
        {"source": "worker", "reason": "state_corrupt", "count": 1},
    ]
    assert await aredis.hget(keys.DEAD_LETTER_OFFSETS, "ota.dead-letters/0") == b"5"
    ttl = await aredis.ttl(keys.dead_letter_hour(now // HOUR_MS))
    assert 7 * 24 * 3600 < ttl <= 9 * 24 * 3600


def test_a_label_cannot_forge_the_separator() -> None:
    found = read(consumed(7, letter("gate|way", "a" * 200), 1), 0)
    assert (found.source, found.reason, found.hour) == ("gate/way", "a" * 64, 0)
    assert read(consumed(8, b"[1]", -1), 5 * HOUR_MS).field == "unknown|not_a_dead_letter"


@ON_BOTH
async def test_the_scheduler_counts_what_every_service_dead_lettered(
    harness: Harness, aredis: redis.asyncio.Redis[bytes]
) -> None:
    device = f"dl-{uuid.uuid4().hex[:6]}"
    harness.produce_raw(harness.topics.dead_letters, "gateway", letter("gateway", "invalid_json"))
    harness.produce_raw(harness.topics.inbox, device, b"{not json")  # refused

    async def seen() -> list[dict[str, object]] | None:
        rows = await DeadLetterCounts(aredis).last_day(int(time.time() * 1000))
        sources = {row["source"] for row in rows}
        return rows if {"gateway", "scheduler"} <= sources else None

    rows = await eventually(seen, "the dead letters to be counted")
    assert {"source": "gateway", "reason": "invalid_json", "count": 1} in rows
    assert {"source": "scheduler", "reason": "invalid_json", "count": 1} in rows
