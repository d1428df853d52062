"""Dead letters per reason: hourly counts of what the services refused, for the console.

Every service writes what it could not process to `ota.dead-letters` (a `DeadLetterRecord`
with its source and reason). The scheduler reads that topic in a consumer group of its
own and keeps, per hour of the record's Kafka timestamp, one Redis hash of counts by
`source|reason` (`keys.dead_letter_hour`). The overview sums the last 24 of them: a few
small hashes whatever the volume. A record whose value is not a dead letter is counted
under its source "unknown" and reason "not_a_dead_letter", never dropped silently.

Counting is exactly once per record: each batch is applied with one script call per
partition that skips offsets at or below the partition's last applied offset (kept in
`keys.DEAD_LETTER_OFFSETS`) and advances it in the same call, so a batch redelivered
after a rebalance or restart is not counted twice. Hours are kept `KEEP_HOURS`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio

from scheduler import keys

HOUR_MS = 3600 * 1000
KEEP_HOURS = 8 * 24  # the topic's retention (7 days) and a day more
SHOWN_HOURS = 24
UNKNOWN = ("unknown", "not_a_dead_letter")
_MAX_LABEL = 64


@dataclass(frozen=True, slots=True)
class Letter:
    """One record of the topic, reduced to what is counted."""

    partition: str  # "<topic>/<partition>"
    offset: int
    hour: int  # epoch hours of the record's timestamp
    source: str
    reason: str

    @property
    def field(self) -> str:
        return f"{self.source}|{self.reason}"


def _label(value: Any, fallback: str) -> str:
    if not isinstance(value, str) or not value:
        return fallback
    return value[:_MAX_LABEL].replace("|", "/")


def read(record: Any, now_ms: int) -> Letter:
    """What to count of one consumed record (pure): its source and reason, or UNKNOWN."""
    stamp = record.timestamp if isinstance(record.timestamp, int) and record.timestamp > 0 else 0
    hour = (stamp or now_ms) // HOUR_MS
    source, reason = UNKNOWN
    try:
        body = orjson.loads(record.value or b"")
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "dead_letter":
        source = _label(body.get("source"), UNKNOWN[0])
        reason = _label(body.get("reason"), UNKNOWN[1])
    return Letter(f"{record.topic}/{record.partition}", record.offset, hour, source, reason)


# KEYS[1]: the applied-offsets hash; KEYS[2..]: the hour hashes the batch touches.
# ARGV[1]: the partition ("<topic>/<partition>"); ARGV[2]: seconds to keep a new hour hash;
# then triples (index into KEYS, field, offset) in offset order. Counts each record whose
# offset is above the partition's applied offset, then records the highest offset seen.
# Returns how many records were counted.
APPLY = """
local applied = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local counted, highest = 0, applied
for i = 3, #ARGV, 3 do
  local offset = tonumber(ARGV[i + 2])
  if offset > applied then
    local key = KEYS[tonumber(ARGV[i])]
    redis.call('HINCRBY', key, ARGV[i + 1], 1)
    if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, ARGV[2]) end
    counted = counted + 1
    if offset > highest then highest = offset end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], highest)
return counted
"""


class DeadLetterCounts:
    """The consumer's handler (`__call__`) and the overview's read (`last_day`)."""

    def __init__(self, r: redis.asyncio.Redis[bytes]) -> None:
        self._r = r
        self._apply = r.register_script(APPLY)

    async def __call__(self, records: Sequence[Any]) -> None:
        now = int(time.time() * 1000)
        by_partition: dict[str, list[Letter]] = {}
        for record in records:
            letter = read(record, now)
            by_partition.setdefault(letter.partition, []).append(letter)
        for partition, letters in by_partition.items():
            await self.apply(partition, letters, now)

    async def apply(self, partition: str, letters: Sequence[Letter], now_ms: int) -> int:
        """Count one partition's letters (in offset order) once; returns how many counted."""
        hours = sorted({letter.hour for letter in letters})
        index = {hour: i + 2 for i, hour in enumerate(hours)}
        argv: list[str | int] = [partition, 0]
        for letter in letters:
            argv += [index[letter.hour], letter.field, letter.offset]
        # Seconds to keep the newest hour the batch touches; older hours of it live that long
        # too (a little longer than needed), which only keeps a few small hashes a bit longer.
        argv[1] = max(1, (hours[-1] + 1 + KEEP_HOURS) * 3600 - now_ms // 1000)
        key_names = [keys.DEAD_LETTER_OFFSETS, *(keys.dead_letter_hour(h) for h in hours)]
        counted: int = await self._apply(keys=key_names, args=argv)
        return counted

    async def last_day(self, now_ms: int) -> list[dict[str, Any]]:
        """[{source, reason, count}] over the last 24 hours, the most frequent first."""
        hour = now_ms // HOUR_MS
        pipe = self._r.pipeline(transaction=False)
        for h in range(hour - SHOWN_HOURS + 1, hour + 1):
            pipe.hgetall(keys.dead_letter_hour(h))
        total: dict[str, int] = {}
        for counts in await pipe.execute():
            for field, n in counts.items():
                name = field.decode()
                total[name] = total.get(name, 0) + int(n)
        rows = []
        for name, n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
            source, _, reason = name.partition("|")
            rows.append({"source": source, "reason": reason, "count": n})
        return rows
