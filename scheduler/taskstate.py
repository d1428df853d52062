"""Per-task device states and counts in Redis, changed only by these Lua scripts.

Each device of a task has one entry `state|attempt|job_version|cause|wave` (a state is
PENDING before release, RELEASED until the worker's first job event, then a JobState
name). Counts per state, per failure cause and per wave bucket change in the same
script as the entry, so they always agree with the entries:
- `apply` takes a job event only if it is newer than the entry (attempt, then
  job_version): a replayed or reordered event changes nothing, so nothing double-counts.
  It takes a task's events of a whole consumer batch in one call, in log order;
- `release` records released devices only for the current lease holder (fencing token)
  and the expected cursor, so a stale pacer can never move a task;
- `cancel_pending` and `retry` move devices back and forth for cancel and retry;
- a continuous task's devices join and leave through `scheduler.joins`: a device that
  left before its release has no entry, and its place in the list counts as removed
  from the wave it would have been released in (`w<k>:removed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio

from ota.jobstates import JobState
from scheduler import keys
from scheduler.taskstatus import Tally

# Events per apply script call: bounds how long one call holds Redis.
APPLY_CHUNK = 500

PENDING = "PENDING"
RELEASED = "RELEASED"  # produced to the inbox, no job event yet (IoTDA: Waiting)
STATES = (PENDING, RELEASED, *(s.value for s in JobState))
# The states a retry of a finished task puts back to PENDING, in the order it appends them.
RETRIED = tuple(s.value for s in (JobState.FAILED, JobState.WAITING_RETRY, JobState.CANCELLED))

_BUCKET = {
    PENDING: "pending",
    JobState.SUCCEEDED.value: "succeeded",
    JobState.FAILED.value: "failed",
    JobState.CANCELLED.value: "cancelled",
}


FINISHED_BUCKETS = frozenset({"succeeded", "failed", "cancelled"})


def bucket(state: str) -> str:
    return _BUCKET.get(state, "active")


NOTIFY_STREAM_MAXLEN = 1_000_000  # approximate: old entries go once delivered long ago

# What applying one job event did (the apply script's results).
IGNORED, APPLIED, TERMINAL, TERMINAL_AGAIN = 0, 1, 2, 3

_COMMON = """
local function split(entry)
  local s, a, v, c, w = string.match(entry, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  return s, tonumber(a), tonumber(v), c, tonumber(w)
end
local function bucket(state)
  if state == 'PENDING' then return 'pending' end
  if state == 'SUCCEEDED' then return 'succeeded' end
  if state == 'FAILED' then return 'failed' end
  if state == 'CANCELLED' then return 'cancelled' end
  return 'active'
end
-- Move one device from its old entry to a new one, keeping every count in step.
-- idx is the key prefix of the per-state device indexes.
local function move(devs, counts, idx, device, old, new)
  local s0, a0, v0, c0, w0 = split(old)
  local s1, a1, v1, c1, w1 = split(new)
  redis.call('HSET', devs, device, new)
  if s0 ~= s1 then
    redis.call('HINCRBY', counts, 's:' .. s0, -1)
    redis.call('HINCRBY', counts, 's:' .. s1, 1)
    redis.call('ZREM', idx .. s0, device)
    redis.call('ZADD', idx .. s1, 0, device)
  end
  if s0 == 'FAILED' and c0 ~= '' then redis.call('HINCRBY', counts, 'c:' .. c0, -1) end
  if s1 == 'FAILED' and c1 ~= '' then redis.call('HINCRBY', counts, 'c:' .. c1, 1) end
  if w0 >= 0 then redis.call('HINCRBY', counts, 'w' .. w0 .. ':' .. bucket(s0), -1) end
  if w1 >= 0 then redis.call('HINCRBY', counts, 'w' .. w1 .. ':' .. bucket(s1), 1) end
end
"""

# Job events of one task, in log order. KEYS: devs hash, counts hash, notification stream.
# ARGV: index prefix, a JSON array of events [device, attempt, job_version, state, cause,
# notification] (all strings, as separate arguments would be; one argument is far cheaper
# to send), the stream's approximate length cap. An event that ends a device's job adds
# its notification (if any) to the stream in the same script, so the webhook dispatcher
# sees each result exactly once, whatever is redelivered or replayed later.
# Returns one result per event: 0 ignored (unknown device, older or same event),
# 1 applied, 2 applied and terminal, 3 the device's current terminal event again (a
# redelivery: the Kafka copy of its notification may not have gone out before a crash).
_APPLY = (
    _COMMON
    + """
local function apply(device, a1, v1, state, cause, note)
  local old = redis.call('HGET', KEYS[1], device)
  if not old then return 0 end
  local s0, a0, v0, c0, w0 = split(old)
  local b = bucket(state)
  local terminal = b == 'succeeded' or b == 'failed' or b == 'cancelled'
  if a1 == a0 and v1 == v0 and s0 == state and terminal then return 3 end
  if a1 < a0 or (a1 == a0 and v1 <= v0) then return 0 end
  if s0 == 'PENDING' then w0 = -1 end
  local new = state .. '|' .. a1 .. '|' .. v1 .. '|' .. cause .. '|' .. w0
  move(KEYS[1], KEYS[2], ARGV[1], device, old, new)
  if not terminal then return 1 end
  if note ~= '' then redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'body', note) end
  return 2
end
-- A finished task's states expire (expire_devices): an index a late event starts
-- expires with them.
local expire_at = redis.call('PEXPIRETIME', KEYS[1])
local out = {}
for _, e in ipairs(cjson.decode(ARGV[2])) do
  local result = apply(e[1], tonumber(e[2]), tonumber(e[3]), e[4], e[5], e[6])
  if expire_at > 0 and result > 0 then redis.call('PEXPIREAT', ARGV[1] .. e[4], expire_at) end
  out[#out + 1] = result
end
return out
"""
)

# KEYS: lease, runtime hash, devs hash, counts hash.
# ARGV: lease value, expected cursor, new cursor, wave, index prefix, device ids...
# Returns the number of devices recorded, -1 lost lease, -2 cursor moved.
_RELEASE = (
    _COMMON
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if (redis.call('HGET', KEYS[2], 'cursor') or '0') ~= ARGV[2] then return -2 end
redis.call('HSET', KEYS[2], 'cursor', ARGV[3])
local n = 0
for i = 6, #ARGV do
  local old = redis.call('HGET', KEYS[3], ARGV[i])
  if old then
    local s, a, v, c, w = split(old)
    if s == 'PENDING' then
      move(KEYS[3], KEYS[4], ARGV[5], ARGV[i], old, 'RELEASED|' .. (a + 1) .. '|0||' .. ARGV[4])
      n = n + 1
    end
  else
    -- removed from a continuous task before its release: its wave is judged without it
    redis.call('HINCRBY', KEYS[4], 'w' .. ARGV[4] .. ':removed', 1)
  end
end
return n
"""
)

# KEYS: lease, devs hash, counts hash, pending index. ARGV: lease value, index prefix, limit.
# Returns how many pending devices became CANCELLED (call again until 0), -1 lost lease.
_CANCEL_PENDING = (
    _COMMON
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local ids = redis.call('ZRANGE', KEYS[4], 0, tonumber(ARGV[3]) - 1)
for _, d in ipairs(ids) do
  local old = redis.call('HGET', KEYS[2], d)
  local s, a, v, c, w = split(old)
  move(KEYS[2], KEYS[3], ARGV[2], d, old, 'CANCELLED|' .. a .. '|' .. v .. '||' .. w)
end
return #ids
"""
)

# Put Fail, FailWaitRetry and Stopped devices back to PENDING and append them to the list.
# KEYS: devs, counts, list, runtime, joins. ARGV: index prefix, retry wave, how many
# states to retry, those states, then every state (whose indexes a retry keeps).
# Returns how many devices will be retried, -1 when the per-device states expired.
_RETRY = (
    _COMMON
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local last = 3 + tonumber(ARGV[3])
local n = 0
for i = 4, last do
  local ids = redis.call('ZRANGE', ARGV[1] .. ARGV[i], 0, -1)
  for _, d in ipairs(ids) do
    local old = redis.call('HGET', KEYS[1], d)
    local s, a, v, c, w = split(old)
    move(KEYS[1], KEYS[2], ARGV[1], d, old, 'PENDING|' .. a .. '|' .. v .. '||-1')
    redis.call('RPUSH', KEYS[3], d)
    n = n + 1
  end
end
if n > 0 then
  redis.call('HSET', KEYS[4], 'wave', ARGV[2], 'hold', '', 'stopping', '0', 'cancel_done', '0')
  -- running again: its states stay until it finishes again
  redis.call('HDEL', KEYS[4], 'devices_expire_ms')
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[3])
  redis.call('PERSIST', KEYS[5])
  for i = last + 1, #ARGV do redis.call('PERSIST', ARGV[1] .. ARGV[i]) end
end
return n
"""
)

# A finished task's per-device states go at ARGV[1] (ms); its runtime hash (KEYS[1]) says
# when. KEYS: runtime, then devs, list, joins and every state index.
_EXPIRE = """
redis.call('HSET', KEYS[1], 'devices_expire_ms', ARGV[1])
for i = 2, #KEYS do redis.call('PEXPIREAT', KEYS[i], ARGV[1]) end
return 1
"""

# KEYS: lease, fence counter. ARGV: owner, ttl ms. Returns the lease value or nil.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
  return false
end
local value = ARGV[1] .. '|' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

# KEYS: lease. ARGV: owner. Gives the lease up if this owner holds it (graceful shutdown).
_UNLEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Transition:
    """One job event as `TaskState.apply` records it."""

    device: str
    attempt: int
    job_version: int
    state: str
    cause: int | None


def _text(value: int | None) -> str:
    return "" if value is None else str(value)


def index_prefix(tid: str) -> str:
    return keys.task_state_index(tid, "")


def pending_entry() -> str:
    return f"{PENDING}|0|0||-1"


def split_entry(raw: bytes) -> tuple[str, int, int, int | None, int]:
    state, attempt, version, cause, wave = raw.decode().split("|")
    return state, int(attempt), int(version), int(cause) if cause else None, int(wave)


class TaskState:
    def __init__(self, r: redis.asyncio.Redis[bytes]) -> None:
        self._r = r
        self._apply = r.register_script(_APPLY)
        self._release = r.register_script(_RELEASE)
        self._cancel = r.register_script(_CANCEL_PENDING)
        self._retry = r.register_script(_RETRY)
        self._expire = r.register_script(_EXPIRE)
        self._lease = r.register_script(_LEASE)
        self._unlease = r.register_script(_UNLEASE)

    async def apply(
        self, tid: str, transitions: Sequence[Transition], notes: Sequence[str] = ()
    ) -> list[int]:
        """Apply one task's job events in log order, `APPLY_CHUNK` per script call; one
        result per event (IGNORED, APPLIED, TERMINAL, TERMINAL_AGAIN). `notes`, if given,
        holds one notification body per event ('' for none): an event that ends a device's
        job adds its note to the notification stream in the same script."""
        results: list[int] = []
        bodies = notes or [""] * len(transitions)
        for start in range(0, len(transitions), APPLY_CHUNK):
            end = start + APPLY_CHUNK
            events = orjson.dumps(
                [
                    [t.device, str(t.attempt), str(t.job_version), t.state, _text(t.cause), n]
                    for t, n in zip(transitions[start:end], bodies[start:end], strict=True)
                ]
            )
            out = await self._apply(
                keys=[keys.task_devices(tid), keys.task_counts(tid), keys.NOTIFY_STREAM],
                args=[index_prefix(tid), events, NOTIFY_STREAM_MAXLEN],
            )
            results += (int(x) for x in out)
        return results

    async def lease(self, tid: str, owner: str, ttl_ms: int) -> str | None:
        value = await self._lease(keys=[keys.lease(tid), keys.fence(tid)], args=[owner, ttl_ms])
        return None if value is None else value.decode()

    async def unlease(self, tid: str, owner: str) -> bool:
        return bool(await self._unlease(keys=[keys.lease(tid)], args=[owner]))

    async def release(
        self, tid: str, lease: str, cursor: int, new_cursor: int, wave: int, devices: Sequence[str]
    ) -> int:
        result = await self._release(
            keys=[
                keys.lease(tid),
                keys.task_runtime(tid),
                keys.task_devices(tid),
                keys.task_counts(tid),
            ],
            args=[lease, cursor, new_cursor, wave, index_prefix(tid), *devices],
        )
        return int(result)

    async def cancel_pending(self, tid: str, lease: str, limit: int = 1000) -> int:
        result = await self._cancel(
            keys=[
                keys.lease(tid),
                keys.task_devices(tid),
                keys.task_counts(tid),
                keys.task_state_index(tid, PENDING),
            ],
            args=[lease, index_prefix(tid), limit],
        )
        return int(result)

    async def retry(self, tid: str, wave: int) -> int:
        """Put the task's failed and stopped devices back to PENDING; how many, or -1
        when its per-device states are gone (scheduler/task_retention.py)."""
        result = await self._retry(
            keys=[
                keys.task_devices(tid),
                keys.task_counts(tid),
                keys.task_list(tid),
                keys.task_runtime(tid),
                keys.task_joins(tid),
            ],
            args=[index_prefix(tid), wave, len(RETRIED), *RETRIED, *STATES],
        )
        return int(result)

    async def expire_devices(self, tid: str, at_ms: int) -> None:
        """Let a finished task's per-device states, list and indexes expire at `at_ms`
        (a retry keeps them again); its document, counts and runtime stay."""
        per_device = [keys.task_devices(tid), keys.task_list(tid), keys.task_joins(tid)]
        indexes = [keys.task_state_index(tid, s) for s in STATES]
        await self._expire(keys=[keys.task_runtime(tid), *per_device, *indexes], args=[at_ms])

    async def counts(self, tid: str) -> dict[str, int]:
        raw = await self._r.hgetall(keys.task_counts(tid))
        return {k.decode(): int(v) for k, v in raw.items()}


def tally(counts: Mapping[str, int], prefix: str = "s:") -> Tally:
    """Sum per-state counts (prefix s:) or a wave's bucket counts (prefix w<k>:) into a Tally."""
    if prefix == "s:":
        sums = {"pending": 0, "active": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
        for state in STATES:
            sums[bucket(state)] += counts.get(f"s:{state}", 0)
        return Tally(**sums)
    return Tally(
        **{
            b: counts.get(prefix + b, 0)
            for b in ("pending", "active", "succeeded", "failed", "cancelled")
        }
    )


def causes(counts: Mapping[str, int]) -> dict[int, int]:
    return {int(k[2:]): v for k, v in counts.items() if k.startswith("c:") and v}
