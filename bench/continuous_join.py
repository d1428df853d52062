"""What a device joining a group costs a continuous task, at a 1,000- and a
1,000,000-device group: the registry's side (`Joins.changed`: which open tasks follow the
group, one ZADD per task) and the reconciler's side (`Joins.drain`: the device's facts
and the script that appends it), each the median of --runs single joins; then one full
pass of 5,000 queued joiners. The peer is what a task that scanned its group on every
change would pay: one SMEMBERS of the group.

    .venv/bin/python bench/continuous_join.py [--sizes 1000,1000000] [--runs 200]

Redis db 15 (scratch) of the local stack (OTA_REDIS_URL, default redis://127.0.0.1:6379);
deletes the keys it made, nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time

import redis.asyncio

from scheduler import keys
from scheduler.joins import DRAIN_LIMIT, Joins
from scheduler.matching import Followed
from scheduler.taskstate import TaskState

DB = 15
FILL = 50_000


async def fill(r: redis.asyncio.Redis[bytes], group: str, size: int) -> None:
    for start in range(0, size, FILL):
        await r.sadd(
            keys.group(group), *(f"bench-{n}" for n in range(start, min(size, start + FILL)))
        )


async def one_size(r: redis.asyncio.Redis[bytes], size: int, runs: int) -> dict[str, float]:
    group, tid = f"bench-cont-{size}", f"bench-cont-task-{size}"
    target = Followed(groups=(group,))
    joins, state = Joins(r), TaskState(r)
    made = [keys.group(group), keys.continuous_group(group), keys.task_joins(tid), keys.lease(tid),
            keys.fence(tid), keys.task_devices(tid), keys.task_counts(tid), keys.task_list(tid),
            keys.task_state_index(tid, "PENDING"), keys.CONTINUOUS_SEQ]  # fmt: skip
    try:
        await fill(r, group, size)
        await joins.open(tid, target)
        lease = await state.lease(tid, "bench", 600_000)
        assert lease is not None
        changed, drained = [], []
        for n in range(runs):
            device = f"bench-new-{n}"
            await r.sadd(keys.group(group), device)
            t0 = time.perf_counter()
            await joins.changed([device], [group])
            t1 = time.perf_counter()
            judged, joined, _ = await joins.drain(tid, lease, target)
            t2 = time.perf_counter()
            assert (judged, joined) == (1, 1)
            changed.append(t1 - t0)
            drained.append(t2 - t1)
        batch = [f"bench-batch-{n}" for n in range(DRAIN_LIMIT)]
        await r.sadd(keys.group(group), *batch)
        await joins.changed(batch, [group])
        t0 = time.perf_counter()
        judged, joined, _ = await joins.drain(tid, lease, target)
        full_pass = time.perf_counter() - t0
        assert (judged, joined) == (DRAIN_LIMIT, DRAIN_LIMIT)
        t0 = time.perf_counter()
        await r.smembers(keys.group(group))
        scan = time.perf_counter() - t0
        return {
            "changed_ms": statistics.median(changed) * 1000,
            "drain_one_ms": statistics.median(drained) * 1000,
            "drain_5000_ms": full_pass * 1000,
            "smembers_ms": scan * 1000,
        }
    finally:
        for key in made:
            await r.unlink(key)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,1000000")
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    base = os.environ.get("OTA_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
    base = base.rpartition("/")[0] if base.rpartition("/")[2].isdigit() else base
    r: redis.asyncio.Redis[bytes] = redis.asyncio.Redis.from_url(f"{base}/{DB}")
    print(f"{platform.node()} {os.cpu_count()} cores, Redis db {DB}, {args.runs} joins per size")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            f = await one_size(r, size, args.runs)
            print(
                f"group {size:>9,}: changed {f['changed_ms']:.3f} ms, drain one {f['drain_one_ms']:.3f} ms"
                f" (medians); drain {DRAIN_LIMIT} {f['drain_5000_ms']:.0f} ms;"
                f" peer SMEMBERS of the group {f['smembers_ms']:.1f} ms"
            )
    finally:
        await r.aclose()  # type: ignore[attr-defined]  # stubs predate aclose


if __name__ == "__main__":
    asyncio.run(main())
