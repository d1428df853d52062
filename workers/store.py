"""The worker's Redis state for one inbox partition, and the Lua scripts that change it.

Keys (all under `ota:{p<partition>}:`, one Redis Cluster slot per partition):
  d:<device_id>  string  the device's packed state (workers.codec); expires `retention`
                         after its last record once no job needs it
  s:<digest>     hash    a job spec its devices share: v packed spec, n in-flight devices
                         referring to it, x latest expiry of a finished one; no TTL while
                         n > 0, else expires at x (with the last device that needs it)
  deadlines      zset    device_id -> earliest deadline of its jobs (epoch ms)
  offset         string  the last inbox offset applied to this partition's state
  outbox         hash    offset -> records produced by the batch ending there, until Kafka
                         acknowledged them (at-least-once across a crash after the write)
  fired          zset    device_id -> lease expiry: deadlines popped by the sweeper whose
                         timeout records are not yet acknowledged by Kafka

and one key for every partition, `ota:deadline-pause` (string, workers.outages'
`encode_pause`, expiring when the pause's memory ends): the last Kafka outage a sweeper
saw, for the sweepers that did not; and `ota:broker-outage` (ota.broker_outage), the last
device broker outage a gateway saw, which the sweepers read.

The state, the deadlines and the offset change only through APPLY, which compares the
partition's offset with the one the batch was computed from: a second owner (a worker
that lost the partition in a rebalance) or a redelivered batch then writes nothing.

Scripts are called by digest inside pipelines (ota/redis_scripts.py). Every script and
multi-key command names keys of one partition only, so on a Redis Cluster each touches
one slot; a pipeline over several partitions is split per master by the client.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import redis
from redis.client import Pipeline

from ota import broker_outage
from ota.broker_outage import BrokerOutage
from ota.records import JobSpec
from ota.redis_clients import partition_tag
from ota.redis_scripts import ScriptRunner, Step, call, command
from workers.batch import DeviceWrite, Output, SpecWrite
from workers.codec import StateCorruptError, cached_spec, stored_digests, unpack_spec
from workers.outages import Pause, decode_pause, encode_pause

NO_OFFSET = -1
PAUSE_KEY = "ota:deadline-pause"
_HEAD = struct.Struct(">BII")  # outbox record: target topic, key length, value length

# KEYS[1] offset, KEYS[2] deadlines, KEYS[3] outbox, then the n device keys written, then
# the m spec keys. ARGV[1] expected offset (-1: none yet), ARGV[2] new offset, ARGV[3]
# outbox blob ("" none), ARGV[4] n, then per device 4 values: packed state, expire-at ms
# (0: keep), deadline ms ("": none), device id (the deadline member); then per spec 3
# values: packed spec, change of its in-flight count, expiry floor ms (0: none).
# Returns {1} when written, {0, stored offset} when the expected offset is not the stored one.
APPLY = """
local stored = redis.call('GET', KEYS[1]) or '-1'
if stored ~= ARGV[1] then return {0, stored} end
local n = tonumber(ARGV[4])
for i = 1, n do
  local key, a = KEYS[3 + i], 1 + 4 * i
  redis.call('SET', key, ARGV[a])
  if ARGV[a + 1] ~= '0' then redis.call('PEXPIREAT', key, ARGV[a + 1]) end
  if ARGV[a + 2] == '' then
    redis.call('ZREM', KEYS[2], ARGV[a + 3])
  else
    redis.call('ZADD', KEYS[2], ARGV[a + 2], ARGV[a + 3])
  end
end
for j = 1, #KEYS - 3 - n do
  local key, a = KEYS[3 + n + j], 5 + 4 * n + 3 * (j - 1)
  redis.call('HSETNX', key, 'v', ARGV[a])
  local refs = redis.call('HINCRBY', key, 'n', ARGV[a + 1])
  local floor = redis.call('HGET', key, 'x') or '0'
  if tonumber(ARGV[a + 2]) > tonumber(floor) then
    floor = ARGV[a + 2]
    redis.call('HSET', key, 'x', floor)
  end
  if refs > 0 then redis.call('PERSIST', key) else redis.call('PEXPIREAT', key, floor) end
end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], ARGV[3]) end
return {1}
"""

# KEYS[1] deadlines, KEYS[2] fired
# ARGV[1] now ms, ARGV[2] most entries to return, ARGV[3] lease ms, ARGV[4] the latest
# deadline due (now, or earlier while deadlines are pushed after a Kafka outage)
# Leases (moves to `fired`, due again at now + lease) the entries of `fired` whose lease ran
# out and then the due deadlines; returns them. A crash before their timeouts reach Kafka
# only delays them by the lease.
POP_DUE = """
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
local room = limit - #out
if room > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, room)
  if #due > 0 then
    redis.call('ZREM', KEYS[1], unpack(due))
    for _, m in ipairs(due) do out[#out + 1] = m end
  end
end
local lease = now + tonumber(ARGV[3])
for _, m in ipairs(out) do redis.call('ZADD', KEYS[2], lease, m) end
return out
"""

# KEYS[1] fired; ARGV[1] the lease expiry given by POP_DUE, ARGV[2..] members.
# Drops the leases still at that expiry (a later POP_DUE may have renewed them).
ACK_FIRED = """
local n = 0
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Snapshot:
    offset: int
    states: dict[str, bytes | None]


@dataclass(frozen=True)
class Write:
    """One partition's batch for APPLY (see `Store.apply`)."""

    partition: int
    expected_offset: int
    new_offset: int
    writes: Sequence[DeviceWrite]
    outbox: bytes
    specs: Sequence[SpecWrite] = ()


class PartitionKeys:
    def __init__(self, partition: int) -> None:
        tag = partition_tag(partition)
        self.partition = partition
        self.device_prefix = f"{tag}d:"
        self.spec_prefix = f"{tag}s:"
        self.deadlines = f"{tag}deadlines"
        self.offset = f"{tag}offset"
        self.outbox = f"{tag}outbox"
        self.fired = f"{tag}fired"

    def device(self, device_id: str) -> str:
        return self.device_prefix + device_id

    def spec(self, digest: str) -> str:
        return self.spec_prefix + digest


class Store:
    """Reads and writes the state of the partitions a process owns."""

    def __init__(self, client: redis.Redis[bytes]) -> None:
        self.client = client
        self._apply, self._pop, self._ack = _SCRIPTS
        self._scripts = ScriptRunner(client, _SCRIPTS)
        self._keys: dict[int, PartitionKeys] = {}

    def keys(self, partition: int) -> PartitionKeys:
        keys = self._keys.get(partition)
        if keys is None:
            keys = self._keys[partition] = PartitionKeys(partition)
        return keys

    def offset(self, partition: int) -> int:
        raw = self.client.get(self.keys(partition).offset)
        return NO_OFFSET if raw is None else int(raw)

    def snapshot(self, partition: int, device_ids: Sequence[str]) -> Snapshot:
        """The partition's offset, then these devices' states."""
        return self.snapshots([(partition, device_ids)])[0]

    def snapshots(
        self,
        wanted: Sequence[tuple[int, Sequence[str]]],
        clear: Sequence[tuple[int, int]] = (),
    ) -> list[Snapshot]:
        """`snapshot` for several partitions in one round trip, which also drops the
        outbox entries `clear` names (partition, batch offset).

        No MULTI (a cluster refuses one over several slots): a partition's offset is read
        before its states, on one connection, so states newer than that offset mean a
        write came between, which moved the offset, and APPLY refuses the batch."""
        steps = [command("HDEL", self.keys(p).outbox, str(offset)) for p, offset in clear]
        for partition, device_ids in wanted:
            keys = self.keys(partition)
            steps.append(command("GET", keys.offset))
            if device_ids:
                steps.append(command("MGET", *[keys.device(d) for d in device_ids]))
        replies = iter(self._run(steps, resend_all=True)[len(clear) :])
        snapshots = []
        for _, device_ids in wanted:
            raw = next(replies)
            values = next(replies) if device_ids else []
            offset = NO_OFFSET if raw is None else int(raw)
            snapshots.append(Snapshot(offset, dict(zip(device_ids, values, strict=True))))
        return snapshots

    def apply(
        self,
        partition: int,
        expected_offset: int,
        new_offset: int,
        writes: Sequence[DeviceWrite],
        outbox: bytes,
        specs: Sequence[SpecWrite] = (),
    ) -> int | None:
        """Write a batch if the partition is still at `expected_offset`; else return the
        offset found (another owner or an earlier run got there first)."""
        plan = Write(partition, expected_offset, new_offset, writes, outbox, specs)
        return self.apply_many([plan])[0]

    def apply_many(self, plans: Sequence[Write]) -> list[int | None]:
        """`apply` for several partitions in one round trip; each is atomic on its own."""
        steps: list[Step] = []
        for plan in plans:
            keys = self.keys(plan.partition)
            args: list[bytes | str | int] = [
                plan.expected_offset,
                plan.new_offset,
                plan.outbox,
                len(plan.writes),
            ]
            for write in plan.writes:
                args += [
                    write.value,
                    write.expire_at_ms,
                    "" if write.deadline_ms is None else write.deadline_ms,
                    write.device_id,
                ]
            for spec in plan.specs:
                args += [spec.ref.packed, spec.refs, spec.expire_floor_ms]
            keys_of = [
                keys.offset,
                keys.deadlines,
                keys.outbox,
                *(keys.device(w.device_id) for w in plan.writes),
                *(keys.spec(s.ref.digest) for s in plan.specs),
            ]
            steps.append(call(self._apply, keys_of, args))
        return [None if int(r[0]) == 1 else int(r[1]) for r in self._run(steps)]

    def drop_outboxes(self, batches: Sequence[tuple[int, int]]) -> None:
        """Drops the outbox entries of these (partition, batch offset)s."""
        self._run([command("HDEL", self.keys(p).outbox, str(offset)) for p, offset in batches])

    def clear_outbox(self, partition: int, offsets: Sequence[int]) -> None:
        if offsets:
            self.client.hdel(self.keys(partition).outbox, *[str(o) for o in offsets])

    def share_pause(self, pause: Pause) -> None:
        """Tell the other sweepers (and those started later) of a Kafka outage's pause."""
        self.client.set(PAUSE_KEY, encode_pause(pause), pxat=pause.until_ms)

    def shared_pause(self) -> Pause | None:
        """The pause a sweeper shared and whose memory has not ended (None: none, or not
        readable)."""
        raw = self.client.get(PAUSE_KEY)
        return None if raw is None else decode_pause(raw)

    def broker_outage(self) -> BrokerOutage | None:
        """The last device broker outage a gateway recorded (None: none remembered, or not
        readable)."""
        raw = self.client.get(broker_outage.KEY)
        return None if raw is None else broker_outage.decode(raw)

    def pending_outbox(self, partition: int) -> list[tuple[int, list[Output]]]:
        """Batches written but maybe not produced, oldest first."""
        raw = self.client.hgetall(self.keys(partition).outbox)
        return sorted((int(offset), decode_outputs(blob)) for offset, blob in raw.items())

    def pop_due_many(
        self, partitions: Sequence[int], now_ms: int, due_by_ms: int, limit: int, lease_ms: int
    ) -> list[tuple[list[str], int | None]]:
        """POP_DUE for each partition, in one round trip: the device ids leased (deadlines
        at or before `due_by_ms`, and leases that ran out by `now_ms`), each with the
        earliest deadline left in the partition (None: none)."""
        steps: list[Step] = []
        for partition in partitions:
            keys = self.keys(partition)
            args = [now_ms, limit, lease_ms, due_by_ms]
            steps.append(call(self._pop, [keys.deadlines, keys.fired], args))
            steps.append(partial(_first_deadline, keys.deadlines))
        replies = self._run(steps)
        out: list[tuple[list[str], int | None]] = []
        for i in range(len(partitions)):
            members, first = replies[2 * i], replies[2 * i + 1]
            out.append(([m.decode() for m in members], int(first[0][1]) if first else None))
        return out

    def states_many(self, wanted: Sequence[tuple[int, Sequence[str]]]) -> list[list[bytes | None]]:
        """The stored states of these devices, per partition, in one round trip."""
        return self._run(
            [
                command("MGET", *[self.keys(partition).device(d) for d in device_ids])
                for partition, device_ids in wanted
            ]
        )

    def ack_fired_many(self, leases: Sequence[tuple[int, int, Sequence[str]]]) -> None:
        """ACK_FIRED for each (partition, lease expiry given by POP_DUE, device ids), in
        one round trip."""
        self._run(
            [
                call(self._ack, [self.keys(partition).fired], [lease_until_ms, *device_ids])
                for partition, lease_until_ms, device_ids in leases
                if device_ids
            ]
        )

    def _run(self, steps: Sequence[Step], *, resend_all: bool = False) -> list[Any]:
        # Every round trip goes through the runner: it rides out a cluster failover.
        return self._scripts.run(steps, resend_all=resend_all)

    def specs(self, partition: int, values: Iterable[bytes | None]) -> dict[str, JobSpec]:
        """The specs the stored device `values` refer to (from the process's cache, else
        from Redis); a spec missing or unreadable is left out (its devices are corrupt)."""
        found: dict[str, JobSpec] = {}
        missing: list[str] = []
        for raw in values:
            if raw is None:
                continue
            for digest in stored_digests(raw):
                if digest not in found:
                    spec = cached_spec(digest)
                    if spec is None:
                        missing.append(digest)
                    else:
                        found[digest] = spec
        if missing:
            keys = self.keys(partition)
            missing = list(dict.fromkeys(missing))
            packs = self._run([command("HGET", keys.spec(digest), "v") for digest in missing])
            for digest, packed in zip(missing, packs, strict=True):
                if packed is not None:
                    try:
                        found[digest] = unpack_spec(digest, packed)
                    except StateCorruptError:
                        continue
        return found


_SCRIPTS = (APPLY, POP_DUE, ACK_FIRED)


def _first_deadline(key: str, pipe: Pipeline[bytes]) -> None:
    pipe.zrange(key, 0, 0, withscores=True)


def encode_outputs(outputs: Sequence[Output]) -> bytes:
    """The outbox form: per record its target (1 byte), key and value, length-prefixed."""
    if not outputs:
        return b""
    parts = []
    for o in outputs:
        parts += [_HEAD.pack(o.topic, len(o.key), len(o.value)), o.key, o.value]
    return b"".join(parts)


def decode_outputs(blob: bytes) -> list[Output]:
    outputs, at = [], 0
    while at < len(blob):
        topic, key_len, value_len = _HEAD.unpack_from(blob, at)
        at += _HEAD.size
        key, value = blob[at : at + key_len], blob[at + key_len : at + key_len + value_len]
        at += key_len + value_len
        outputs.append(Output(topic, key, value))
    return outputs
