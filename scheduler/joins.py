"""Continuous tasks in Redis: who follows which group, and devices joining and leaving.

An open continuous task is listed under each group it targets (`keys.continuous_group`)
and, when it has a filter, in `keys.CONTINUOUS_FILTER` (and in `keys.CONTINUOUS_FACTS`
when the filter names versions or presence). The registry calls `changed` after it
changed devices' groups or tags: each device goes into the re-check set of every task
following one of the groups touched, and of every task with a filter
(`keys.task_joins`, scored by a change number); it calls `facts_changed` with the
devices whose version or presence changed, queued for the tasks whose filter names
them. That is work in proportion to the change and the number of open continuous
tasks, never to a group's size.

The reconciler, holding the task's lease, calls `follow` on each pass: it keeps the
task listed while it is open (so a lost index entry comes back from the task document
within a pass) and judges a slice of its re-check set (`drain`): a device that matches
now and is not in the task joins it as PENDING, appended to the release list, so the
task's rate, in-flight cap, maintenance window and waves pace it like the rest; a
PENDING device that matches no more is removed; a released device keeps its job. A
device changed again while it was judged keeps its newer entry for the next pass. Once
the task closes (end time, cancel, finish) `close` unlists it and drops the set.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import redis.asyncio

from scheduler import keys
from scheduler.matching import Facts, Followed, matches
from scheduler.taskstate import PENDING, pending_entry

DRAIN_LIMIT = 5000  # devices judged per pass; the loop comes back at once for more
_CHUNK = 5000

# Judged devices of one task. KEYS: lease, devs hash, counts, release list, pending
# index, re-check zset. ARGV: lease value, pending entry, a JSON array of [device, change
# number, '1' joins / '0' leaves]. A device whose change number moved since it was read
# is left for the next pass. Returns {joined, removed}, or {-1, 0} for a lost lease.
_DRAIN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local joined, removed = 0, 0
for _, j in ipairs(cjson.decode(ARGV[3])) do
  local d = j[1]
  if tonumber(redis.call('ZSCORE', KEYS[6], d)) == tonumber(j[2]) then
    redis.call('ZREM', KEYS[6], d)
    if j[3] == '1' then
      if redis.call('HSETNX', KEYS[2], d, ARGV[2]) == 1 then
        redis.call('RPUSH', KEYS[4], d)
        redis.call('ZADD', KEYS[5], 0, d)
        joined = joined + 1
      end
    else
      local e = redis.call('HGET', KEYS[2], d)
      if e and string.sub(e, 1, 8) == 'PENDING|' then
        redis.call('HDEL', KEYS[2], d)
        redis.call('ZREM', KEYS[5], d)
        removed = removed + 1
      end
    end
  end
end
if joined > 0 then
  redis.call('HINCRBY', KEYS[3], 's:PENDING', joined)
  redis.call('HINCRBY', KEYS[3], 'joined', joined)
end
if removed > 0 then
  redis.call('HINCRBY', KEYS[3], 's:PENDING', -removed)
  redis.call('HINCRBY', KEYS[3], 'removed', removed)
end
return {joined, removed}
"""


class Joins:
    def __init__(self, r: redis.asyncio.Redis[bytes]) -> None:
        self._r = r
        self._drain = r.register_script(_DRAIN)

    # ------------------------------------------------------------ the index

    async def open(self, tid: str, target: Followed) -> None:
        """List the task under what it follows (idempotent)."""
        pipe = self._r.pipeline(transaction=False)
        for group in target.groups:
            pipe.sadd(keys.continuous_group(group), tid)
        if target.filter is not None:
            pipe.sadd(keys.CONTINUOUS_FILTER, tid)
        if target.watches_facts:
            pipe.sadd(keys.CONTINUOUS_FACTS, tid)
        await pipe.execute()

    async def close(self, tid: str, target: Followed) -> None:
        """Unlist the task and drop its re-check set (idempotent)."""
        pipe = self._r.pipeline(transaction=False)
        for group in target.groups:
            pipe.srem(keys.continuous_group(group), tid)
        pipe.srem(keys.CONTINUOUS_FILTER, tid)
        pipe.srem(keys.CONTINUOUS_FACTS, tid)
        pipe.delete(keys.task_joins(tid))
        await pipe.execute()

    async def requeue(self, tid: str, target: Followed) -> int:
        """After the task was rebuilt from Kafka (scheduler/rebuild.py): list it again and
        queue every device that may match it now, its groups' members (every known device
        when it has a filter), so the devices that had joined and were not released yet
        join again and new members join. Devices whose version or presence comes back
        later are queued as it does (`facts_changed`). How many were queued."""
        await self.open(tid, target)
        followers = [{tid.encode()}]
        seq = await self._r.incr(keys.CONTINUOUS_SEQ)
        queued = 0
        if target.filter is None:
            for group in target.groups:
                members = [
                    m.decode() async for m in self._r.sscan_iter(keys.group(group), count=_CHUNK)
                ]
                queued += len(members)
                await self._queue(members, followers, seq)
            return queued
        part: list[str] = []
        async for device, _ in self._r.zscan_iter(keys.DEVICES, count=_CHUNK):
            part.append(device.decode())
            if len(part) >= _CHUNK:
                await self._queue(part, followers, seq)
                queued, part = queued + len(part), []
        await self._queue(part, followers, seq)
        return queued + len(part)

    # ------------------------------------------------------------ the registry's side

    async def changed(self, device_ids: Sequence[str], groups: Sequence[str]) -> int:
        """Devices whose groups or tags changed (`groups`: every group they entered or
        left): queue them for each open continuous task that may care. Returns the
        number of tasks told."""
        if not device_ids:
            return 0
        pipe = self._r.pipeline(transaction=False)
        pipe.smembers(keys.CONTINUOUS_FILTER)
        for group in set(groups):
            pipe.smembers(keys.continuous_group(group))
        pipe.incr(keys.CONTINUOUS_SEQ)
        *followers, seq = await pipe.execute()
        return await self._queue(device_ids, followers, seq)

    async def facts_changed(self, device_ids: Sequence[str]) -> int:
        """Devices whose version or presence changed: queue them for each open continuous
        task whose filter names versions or presence. Returns the number of tasks told."""
        if not device_ids:
            return 0
        pipe = self._r.pipeline(transaction=False)
        pipe.smembers(keys.CONTINUOUS_FACTS)
        pipe.incr(keys.CONTINUOUS_SEQ)
        followers, seq = await pipe.execute()
        return await self._queue(device_ids, [followers], seq)

    async def _queue(
        self, device_ids: Sequence[str], followers: Sequence[set[bytes]], seq: int
    ) -> int:
        """Put the devices into the re-check set of every task in `followers` under change
        number `seq` (one round trip per chunk)."""
        tasks = sorted({t.decode() for members in followers for t in members})
        for start in range(0, len(device_ids), _CHUNK):
            part: dict[str | bytes, int] = dict.fromkeys(device_ids[start : start + _CHUNK], seq)
            pipe = self._r.pipeline(transaction=False)
            for tid in tasks:
                pipe.zadd(keys.task_joins(tid), part)
            await pipe.execute()
        return len(tasks)

    # ------------------------------------------------------------ the reconciler's side

    async def drain(self, tid: str, lease: str, target: Followed) -> tuple[int, int, int]:
        """Judge up to DRAIN_LIMIT queued devices: (judged, joined, removed); joined is
        -1 when the lease was lost (nothing changed)."""
        raw = await self._r.zrange(keys.task_joins(tid), 0, DRAIN_LIMIT - 1, withscores=True)
        if not raw:
            return 0, 0, 0
        queued = [(d.decode(), int(score)) for d, score in raw]
        facts = await self.facts([d for d, _ in queued], target)
        judged = [
            [d, str(n), "1" if matches(target, f) else "0"]
            for (d, n), f in zip(queued, facts, strict=True)
        ]
        joined, removed = await self._drain(
            keys=[
                keys.lease(tid),
                keys.task_devices(tid),
                keys.task_counts(tid),
                keys.task_list(tid),
                keys.task_state_index(tid, PENDING),
                keys.task_joins(tid),
            ],
            args=[lease, pending_entry(), orjson.dumps(judged)],
        )
        return len(raw), int(joined), int(removed)

    async def facts(self, devices: Sequence[str], target: Followed) -> list[Facts]:
        """Each device's facts, as far as the target asks (one pipeline)."""
        groups = sorted(target.group_names)
        tags = sorted(target.tag_names)
        pipe = self._r.pipeline(transaction=False)
        for d in devices:
            pipe.hmget(keys.device(d), ["fw", "sw", "online"])
            for g in groups:
                pipe.sismember(keys.group(g), d)
            for t in tags:
                pipe.sismember(keys.tag(t), d)
        replies = await pipe.execute()
        width = 1 + len(groups) + len(tags)
        out = []
        for i in range(len(devices)):
            (fw, sw, online), *flags = replies[i * width : (i + 1) * width]
            out.append(
                Facts(
                    fw=None if fw is None else fw.decode(),
                    sw=None if sw is None else sw.decode(),
                    groups=frozenset(
                        g for g, m in zip(groups, flags[: len(groups)], strict=True) if m
                    ),
                    tags=frozenset(t for t, m in zip(tags, flags[len(groups) :], strict=True) if m),
                    online=online == b"1",
                )
            )
        return out
