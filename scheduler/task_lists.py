"""A task's device list: recorded in Kafka when the task is created, laid out in Redis.

The list, as its targets resolved at creation, is the order devices are released in;
Redis holds it with each device's state (`taskstate`), and the compacted topic
`ota.task-devices` holds it too (key `<task id>/<chunk number>`, `CHUNK_IDS` ids per
record) for as long as the task runs, so that a running task can be rebuilt after
Redis is lost (scheduler/task_rebuild.py). The reconciler's wrap-up of a finished task
tombstones its records (`forget`): the topic holds only the lists of running tasks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import orjson
import redis.asyncio

from ota.settings import Topics
from scheduler import keys
from scheduler.bus import Out, Producer
from scheduler.taskstate import PENDING, STATES, pending_entry

log = logging.getLogger(__name__)
# Ids per record: 2,000 ids of at most 128 characters (ota.protocol) stay well under
# Kafka's 1 MB.
CHUNK_IDS = 2_000
WRITE_CHUNK = 5_000  # devices per Redis pipeline


def chunk_key(tid: str, index: int) -> str:
    return f"{tid}/{index:06d}"


def chunks(count: int) -> int:
    return -(-count // CHUNK_IDS)


async def record(producer: Producer, topics: Topics, tid: str, devices: Sequence[str]) -> None:
    """Record the list on `ota.task-devices`; raises KafkaError when Kafka did not take it."""
    await producer.send(
        Out(
            topics.task_devices, chunk_key(tid, i), orjson.dumps(list(devices[at : at + CHUNK_IDS]))
        )
        for i, at in enumerate(range(0, len(devices), CHUNK_IDS))
    )


async def forget(producer: Producer, topics: Topics, tid: str, count: int) -> None:
    """Tombstone the task's list records (`count`: the devices it was created with)."""
    await producer.send(
        (Out(topics.task_devices, chunk_key(tid, i), None) for i in range(chunks(count))),
        patient=True,
    )


def assemble(latest: Mapping[str, bytes | None]) -> dict[str, list[str]]:
    """Each task's list from the topic's latest records (key -> value, None a tombstone).
    A task whose chunks are not numbered 0..n-1 (a creation cut short) or hold anything but
    a JSON list of ids is left out (and so stopped as lost, not rebuilt wrongly)."""
    parts: dict[str, dict[int, list[str]]] = {}
    broken: set[str] = set()
    for key, raw in latest.items():
        tid, _, index = key.rpartition("/")
        if raw is None or not tid or not index.isdigit():
            continue
        ids = _ids(raw)
        if ids is None:
            log.warning("a task's device list record does not read", extra={"key": key})
            broken.add(tid)
            continue
        parts.setdefault(tid, {})[int(index)] = ids
    lists: dict[str, list[str]] = {}
    for tid, numbered in parts.items():
        if tid not in broken and sorted(numbered) == list(range(len(numbered))):
            lists[tid] = [d for i in range(len(numbered)) for d in numbered[i]]
    return lists


def _ids(raw: bytes) -> list[str] | None:
    try:
        ids = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(ids, list) or not all(isinstance(d, str) for d in ids):
        return None
    return ids


async def lay_out(
    r: redis.asyncio.Redis[bytes],
    tid: str,
    devices: Sequence[str],
    entries: Mapping[str, str] | None = None,
) -> None:
    """Write the list, each device's entry (`entries`, pending when absent) and its state
    index, replacing whatever the task had. Counts and runtime are the caller's."""
    pending = pending_entry()
    given = entries or {}
    indexes = [keys.task_state_index(tid, state) for state in STATES]
    await r.delete(keys.task_list(tid), keys.task_devices(tid), *indexes)
    for start in range(0, len(devices), WRITE_CHUNK):
        part = devices[start : start + WRITE_CHUNK]
        mapping = {d: given.get(d, pending) for d in part}
        by_state: dict[str, dict[str, int]] = {}
        for device, entry in mapping.items():
            by_state.setdefault(entry.split("|", 1)[0], {})[device] = 0
        pipe = r.pipeline(transaction=False)
        pipe.rpush(keys.task_list(tid), *part)
        pipe.hset(keys.task_devices(tid), mapping=mapping)  # type: ignore[arg-type]
        for state, members in by_state.items():
            pipe.zadd(keys.task_state_index(tid, state), members)  # type: ignore[arg-type]
        await pipe.execute()


async def materialise(r: redis.asyncio.Redis[bytes], tid: str, devices: Sequence[str]) -> None:
    """A new task's devices, every one pending, and its runtime at the start."""
    await lay_out(r, tid, devices)
    await r.hset(keys.task_counts(tid), f"s:{PENDING}", len(devices))
    await r.hset(
        keys.task_runtime(tid),
        mapping={"cursor": 0, "wave": 0, "hold": "", "stopping": 0, "cancel_done": 0},
    )
