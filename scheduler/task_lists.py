"""A task's device list: recorded in Kafka when the task is created, laid out in Redis.

The list, as its targets resolved at creation, is the order devices are released in;
Redis holds it with each device's state (`taskstate`), and the compacted topic
`ota.task-devices` holds it too (key `<task id>/<chunk number>`, `CHUNK_IDS` ids per
record) for as long as the task runs, so that a running task can be rebuilt after
Redis is lost (scheduler/task_rebuild.py). The reconciler's wrap-up of a finished task
tombstones its records (`forget`): the topic holds only the lists of running tasks.

A retry appends the task's failed and stopped devices to its list, so it records the
whole list again first (`record_retry`): each record is then `{"of": <the list's
length>, "ids": [...]}`, a device of the retry's wave as `[id, attempt]`, an attempt
below the one that wave releases it at (the one it failed at): by it the rebuild tells
whether the retry had released the device again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson
import redis.asyncio

from ota.settings import Topics
from scheduler import keys
from scheduler.bus import Out, Producer
from scheduler.taskstate import PENDING, RETRIED, STATES, pending_entry, split_entry

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
    """Tombstone the task's list records (`count`: the longest list it recorded)."""
    await producer.send(
        (Out(topics.task_devices, chunk_key(tid, i), None) for i in range(chunks(count))),
        patient=True,
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    """A task's list as the topic holds it."""

    ids: list[str]  # in release order, a retried device again at its retry's place
    length: int | None = None  # the length a retry recorded (None: the task's creation's)
    # the devices of a retry's wave -> an attempt below the one it releases them at
    retried: dict[str, int] = field(default_factory=dict)

    def whole(self, created_with: int) -> bool:
        return len(self.ids) == (created_with if self.length is None else self.length)


async def record_retry(
    r: redis.asyncio.Redis[bytes], producer: Producer, topics: Topics, tid: str, wave: int
) -> int:
    """Record on `ota.task-devices`, in place of the earlier records, the whole list a
    retry of the task in `wave` makes (`retry_items`); how many devices it retries (0:
    none, and nothing recorded). Raises KafkaError when Kafka did not take it."""
    items, retried = await retry_items(r, tid, wave)
    if retried:
        await producer.send(
            Out(
                topics.task_devices,
                chunk_key(tid, i),
                orjson.dumps({"of": len(items), "ids": items[at : at + CHUNK_IDS]}),
            )
            for i, at in enumerate(range(0, len(items), CHUNK_IDS))
        )
    return retried


async def retry_items(
    r: redis.asyncio.Redis[bytes], tid: str, wave: int
) -> tuple[list[str | list[str | int]], int]:
    """The list a retry in `wave` makes, and how many devices it retries: the task's list,
    then its devices in the `RETRIED` states, in the order the retry script appends them
    (state by state, each index in id order; the states are read with the list, which
    holds every device of the task). A device of the retry's wave is
    `[id, attempt]`: one retried now with the attempt it failed at, one an earlier retry
    released with an attempt below the one it has (the rebuild puts it in that wave)."""
    listed: list[str | list[str | int]] = []
    failed: dict[str, dict[bytes, int]] = {state: {} for state in RETRIED}  # id -> attempt
    while part := await r.lrange(keys.task_list(tid), len(listed), len(listed) + WRITE_CHUNK - 1):
        entries = await r.hmget(keys.task_devices(tid), part)
        for device, entry in zip(part, entries, strict=True):
            state, attempt, _, _, in_wave = split_entry(entry or pending_entry().encode())
            if state in failed:
                failed[state][device] = attempt
            released = in_wave == wave and attempt > 0
            listed.append([device.decode(), attempt - 1] if released else device.decode())
    # Each state's index is in id order (score 0), as the script reads it.
    again: list[str | list[str | int]] = [
        [device.decode(), failed[state][device]]
        for state in RETRIED
        for device in sorted(failed[state])
    ]
    return [*listed, *again], len(again)


@dataclass(frozen=True, slots=True)
class _Chunk:
    ids: list[str]
    of: int | None  # a retry's record: the whole list's length
    retried: dict[str, int]


def assemble(latest: Mapping[str, bytes | None]) -> dict[str, Recorded]:
    """Each task's list from the topic's latest records (key -> value, None a tombstone).
    A task whose chunks are not numbered 0..n-1 (a creation cut short), are not all of one
    form and length (a retry's recording cut short), or hold anything but lists of ids is
    left out (and so stopped as lost, not rebuilt wrongly)."""
    parts: dict[str, dict[int, _Chunk]] = {}
    broken: set[str] = set()
    for key, raw in latest.items():
        tid, _, index = key.rpartition("/")
        if raw is None or not tid or not index.isdigit():
            continue
        chunk = _chunk(raw)
        if chunk is None:
            log.warning("a task's device list record does not read", extra={"key": key})
            broken.add(tid)
            continue
        parts.setdefault(tid, {})[int(index)] = chunk
    lists: dict[str, Recorded] = {}
    for tid, numbered in parts.items():
        lengths = {chunk.of for chunk in numbered.values()}
        if tid in broken or sorted(numbered) != list(range(len(numbered))) or len(lengths) > 1:
            continue
        ordered = [numbered[i] for i in range(len(numbered))]
        retried = {d: a for chunk in ordered for d, a in chunk.retried.items()}
        ids = [d for chunk in ordered for d in chunk.ids]
        lists[tid] = Recorded(ids, lengths.pop(), retried)
    return lists


def _chunk(raw: bytes) -> _Chunk | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, list):
        return _Chunk(value, None, {}) if all(isinstance(d, str) for d in value) else None
    if not isinstance(value, dict) or set(value) != {"of", "ids"}:
        return None
    of, items = value["of"], value["ids"]
    if type(of) is not int or not isinstance(items, list):
        return None
    ids: list[str] = []
    retried: dict[str, int] = {}
    for item in items:
        if isinstance(item, str):
            ids.append(item)
        elif (
            isinstance(item, list)
            and len(item) == 2
            and isinstance(item[0], str)
            and type(item[1]) is int
            and item[1] >= 0
        ):
            ids.append(item[0])
            retried[item[0]] = item[1]
        else:
            return None
    return _Chunk(ids, of, retried)


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
