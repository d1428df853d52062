"""The continuous-task scripts on the real Redis against a model: random sequences of
devices joining and leaving a followed group, re-checks (`Joins.drain`) and releases
(`TaskState.release`) leave the task's entries, release list and every count as the model
says; a device is released at most once, a removed device's list place counts as removed
from its wave, and a stale lease changes nothing."""

from __future__ import annotations

import random

import pytest
import redis.asyncio

from scheduler import keys
from scheduler.joins import Joins
from scheduler.matching import Followed
from scheduler.taskstate import PENDING, TaskState, pending_entry
from tests.integration.scheduler.conftest import ON_BOTH

pytestmark = ON_BOTH  # on a standalone Redis and on a Redis Cluster

GROUP = "model-group"
TARGET = Followed(groups=(GROUP,))
DEVICES = [f"m-{i}" for i in range(12)]


class Model:
    def __init__(self, initial: list[str]) -> None:
        self.members = set(initial)
        self.entries = dict.fromkeys(initial, PENDING)
        self.order = list(initial)
        self.queue: dict[str, int] = {}
        self.seq = 0
        self.cursor = 0
        self.joined = self.removed = self.removed_in_wave = 0

    def change(self, device: str, join: bool) -> None:
        (self.members.add if join else self.members.discard)(device)
        self.seq += 1
        self.queue[device] = self.seq

    def drain(self) -> None:
        for device in sorted(self.queue, key=lambda d: (self.queue[d], d)):
            if device in self.members:
                if device not in self.entries:
                    self.entries[device] = PENDING
                    self.order.append(device)
                    self.joined += 1
            elif self.entries.get(device) == PENDING:
                del self.entries[device]
                self.removed += 1
        self.queue.clear()

    def release(self, n: int) -> tuple[list[str], int]:
        """The list slice released and how many of it were pending (now released)."""
        part = self.order[self.cursor : self.cursor + n]
        newly = 0
        for device in part:
            state = self.entries.get(device)
            if state is None:
                self.removed_in_wave += 1
            elif state == PENDING:
                self.entries[device] = "RELEASED"
                newly += 1
        self.cursor += len(part)
        return part, newly


async def start(r: redis.asyncio.Redis[bytes], tid: str, initial: list[str]) -> None:
    if initial:
        await r.sadd(keys.group(GROUP), *initial)
        await r.rpush(keys.task_list(tid), *initial)
        await r.hset(keys.task_devices(tid), mapping=dict.fromkeys(initial, pending_entry()))
        await r.zadd(keys.task_state_index(tid, PENDING), dict.fromkeys(initial, 0))
    await r.hset(keys.task_counts(tid), f"s:{PENDING}", len(initial))
    await r.hset(keys.task_runtime(tid), mapping={"cursor": 0})


async def check(r: redis.asyncio.Redis[bytes], tid: str, model: Model) -> None:
    raw = await r.hgetall(keys.task_devices(tid))
    entries = {d.decode(): e.decode().split("|") for d, e in raw.items()}
    assert {d: e[0] for d, e in entries.items()} == model.entries
    assert all(e[1] == "1" for e in entries.values() if e[0] == "RELEASED")  # released once
    assert [d.decode() for d in await r.lrange(keys.task_list(tid), 0, -1)] == model.order
    pending = {d.decode() for d in await r.zrange(keys.task_state_index(tid, PENDING), 0, -1)}
    assert pending == {d for d, s in model.entries.items() if s == PENDING}
    counts = {k.decode(): int(v) for k, v in (await r.hgetall(keys.task_counts(tid))).items()}
    released = sum(1 for s in model.entries.values() if s == "RELEASED")
    assert counts.get("s:PENDING", 0) == len(pending)
    assert counts.get("s:RELEASED", 0) == released
    assert counts.get("joined", 0) == model.joined
    assert counts.get("removed", 0) == model.removed
    assert counts.get("w0:removed", 0) == model.removed_in_wave


# Weighted so that devices often leave while still pending (seeds 1-4, 6 and 7 remove some).
OPS, WEIGHTS = ["join", "leave", "drain", "release"], [3, 3, 3, 1]


@pytest.mark.parametrize("seed", range(8))
async def test_random_joins_leaves_and_releases_match_the_model(
    aredis: redis.asyncio.Redis[bytes], seed: int
) -> None:
    rng = random.Random(seed)
    tid = f"model-{seed}"
    initial = rng.sample(DEVICES, 3)
    model = Model(initial)
    await start(aredis, tid, initial)
    joins, state = Joins(aredis), TaskState(aredis)
    await joins.open(tid, TARGET)
    lease = await state.lease(tid, "model-owner", 60_000)
    assert lease is not None
    for _ in range(80):
        op = rng.choices(OPS, weights=WEIGHTS)[0]
        if op in ("join", "leave"):
            device = rng.choice(DEVICES)
            if op == "join":
                await aredis.sadd(keys.group(GROUP), device)
            else:
                await aredis.srem(keys.group(GROUP), device)
            told = await joins.changed([device], [GROUP])
            assert told == 1
            model.change(device, op == "join")
        elif op == "drain":
            judged, _, _ = await joins.drain(tid, lease, TARGET)
            assert judged == len(model.queue)
            model.drain()
        else:
            cursor = model.cursor
            part, newly = model.release(rng.randint(1, 3))
            recorded = await state.release(tid, lease, cursor, cursor + len(part), 0, part)
            assert recorded == newly
        await check(aredis, tid, model)


async def test_a_stale_lease_changes_nothing(aredis: redis.asyncio.Redis[bytes]) -> None:
    tid = "model-stale"
    await start(aredis, tid, ["m-0"])
    joins = Joins(aredis)
    await joins.open(tid, TARGET)
    await aredis.sadd(keys.group(GROUP), "m-1")
    await joins.changed(["m-1"], [GROUP])
    assert await joins.drain(tid, "someone-else|7", TARGET) == (1, -1, 0)
    model = Model(["m-0"])
    await check(aredis, tid, model)
    assert await aredis.zcard(keys.task_joins(tid)) == 1  # still queued for the holder


async def test_a_closed_task_is_told_nothing(aredis: redis.asyncio.Redis[bytes]) -> None:
    joins = Joins(aredis)
    await joins.open("model-closed", TARGET)
    await joins.close("model-closed", TARGET)
    assert await joins.changed(["m-1"], [GROUP]) == 0
    assert not await aredis.exists(keys.task_joins("model-closed"))
