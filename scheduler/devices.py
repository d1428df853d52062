"""The device registry: what devices reported (versions, presence, last seen), their
current job and timeline, and the groups and tags operators set.

Fed by the inbox (versions, presence) and job events (current job, timeline), both
applied idempotently: versions and presence move only forward in record time, and a
timeline entry is keyed by its event id so a replayed event is stored once. Operator
groups and tags go to the compacted `ota.devices` topic (key = device id, or
`group:<name>` for a group) before Redis.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio

from ota.catalog import FailureCause
from ota.records import DeviceEventRecord, JobEventRecord, PresenceRecord, TaskType
from ota.settings import Topics
from scheduler import keys
from scheduler.bus import Out, Producer
from scheduler.errors import NotFound, ValidationError

NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
MAX_PAGE = 1000

# Apply a device report or presence change, only forward in record time.
# KEYS[1] device hash, KEYS[2] all-devices zset, KEYS[3] online set
# ARGV: device id, at_ms, fw ('' unchanged), sw ('' unchanged), online ('1'/'0'/''), index prefix
_OBSERVE = """
redis.call('ZADD', KEYS[2], 0, ARGV[1])
local seen = tonumber(redis.call('HGET', KEYS[1], 'seen_ms') or '0')
if tonumber(ARGV[2]) < seen then return 0 end
redis.call('HSET', KEYS[1], 'seen_ms', ARGV[2])
local kinds = {'fw', 'sw'}
for i = 1, 2 do
  local v = ARGV[2 + i]
  if v ~= '' then
    local old = redis.call('HGET', KEYS[1], kinds[i])
    if old and old ~= v then redis.call('SREM', ARGV[6] .. kinds[i] .. ':' .. old, ARGV[1]) end
    redis.call('HSET', KEYS[1], kinds[i], v)
    redis.call('SADD', ARGV[6] .. kinds[i] .. ':' .. v, ARGV[1])
  end
end
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'online', '1'); redis.call('SADD', KEYS[3], ARGV[1])
elseif ARGV[5] == '0' then
  redis.call('HSET', KEYS[1], 'online', '0'); redis.call('SREM', KEYS[3], ARGV[1])
end
return 1
"""

# Record a job event as the device's current job (if newer) and on its timeline.
# The timeline keeps the job-events log's order (one partition per device): each entry's
# score is its at_ms raised above the newest entry's, because records stamped by
# different services (gateway, edge, sweeper) may reach the log out of time order. A
# replayed entry keeps its place (NX). Within one task, newer means a later attempt or a
# higher job version; time decides only between different tasks.
# KEYS[1] device hash, KEYS[2] timeline zset, KEYS[3] all-devices zset
# ARGV: device id, at_ms, task id, attempt, job_version, state, cause, task type, entry, cap
_JOB = """
redis.call('ZADD', KEYS[3], 0, ARGV[1])
local score = tonumber(ARGV[2])
local newest = redis.call('ZREVRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) >= score then score = tonumber(newest[2]) + 1 end
if redis.call('ZSCORE', KEYS[2], ARGV[9]) == false then
  redis.call('ZADD', KEYS[2], score, ARGV[9])
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[10]) - 1)
end
if redis.call('HGET', KEYS[1], 'task') == ARGV[3] then
  local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '0')
  local version = tonumber(redis.call('HGET', KEYS[1], 'job_version') or '0')
  if tonumber(ARGV[4]) < attempt or (tonumber(ARGV[4]) == attempt and tonumber(ARGV[5]) <= version) then
    return 0
  end
else
  local at = tonumber(redis.call('HGET', KEYS[1], 'job_at_ms') or '0')
  if tonumber(ARGV[2]) < at then return 0 end
end
redis.call('HSET', KEYS[1], 'job_at_ms', ARGV[2], 'task', ARGV[3], 'attempt', ARGV[4],
  'job_version', ARGV[5], 'state', ARGV[6], 'cause', ARGV[7])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'task_type', ARGV[8]) end
return 1
"""


def check_name(value: str, what: str, field: str) -> str:
    if not NAME.fullmatch(value):
        raise ValidationError(
            f"{what} {value[:70]!r} must be 1-64 of letters, digits and _ . : -",
            code="bad_name",
            field=field,
        )
    return value


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    fw_versions: tuple[str, ...] = ()
    sw_versions: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    online: bool | None = None

    @property
    def empty(self) -> bool:
        return self == DeviceFilter()


class Registry:
    def __init__(
        self, r: redis.asyncio.Redis[bytes], producer: Producer, topics: Topics, timeline_cap: int
    ) -> None:
        self._r, self._producer, self._topics, self._cap = r, producer, topics, timeline_cap
        self._observe = r.register_script(_OBSERVE)
        self._job = r.register_script(_JOB)

    # ------------------------------------------------------------ fed by the logs

    async def observe(self, record: DeviceEventRecord | PresenceRecord) -> None:
        fw = sw = online = ""
        if isinstance(record, PresenceRecord):
            online = "1" if record.online else "0"
        else:
            paras = record.paras
            if record.event_type in ("version_report", "sdk_info_report"):
                fw, sw = _text(paras.get("fw_version")), _text(paras.get("sw_version"))
            elif record.event_type == "upgrade_progress_report":
                # The report's version belongs to whatever the device's current job upgrades.
                kind = await self._r.hget(keys.device(record.device_id), "task_type")
                version = _text(paras.get("version"))
                if kind == TaskType.SOFTWARE.value.encode():
                    sw = version
                else:
                    fw = version
        await self._observe(
            keys=[keys.device(record.device_id), keys.DEVICES, keys.ONLINE],
            args=[record.device_id, record.at_ms, fw, sw, online, keys.P + "ver:"],
        )

    async def job_event(self, event: JobEventRecord, task_type: str) -> None:
        entry = orjson.dumps(
            {
                "id": event.id,
                "at_ms": event.at_ms,
                "task_id": event.task_id,
                "attempt": event.attempt,
                "job_version": event.job_version,
                "from": event.from_state,
                "to": event.to_state,
                "cause": event.cause,
                "cause_message": _cause_message(event.cause),
                "detail": dict(event.detail),
            }
        )
        await self._job(
            keys=[keys.device(event.device_id), keys.timeline(event.device_id), keys.DEVICES],
            args=[
                event.device_id,
                event.at_ms,
                event.task_id,
                event.attempt,
                event.job_version,
                event.to_state,
                "" if event.cause is None else event.cause,
                task_type,
                entry,
                self._cap,
            ],
        )

    # ------------------------------------------------------------ queries

    async def show(self, device_id: str) -> dict[str, Any]:
        raw = await self._r.hgetall(keys.device(device_id))
        if not raw:
            raise NotFound(f"device {device_id!r} is not known", code="unknown_device")
        entries = await self._r.zrevrange(keys.timeline(device_id), 0, -1)
        view = await self._summaries([device_id], [raw])
        view[0]["timeline"] = [orjson.loads(e) for e in entries]
        return view[0]

    async def _summaries(
        self, ids: Sequence[str], hashes: Sequence[dict[bytes, bytes]]
    ) -> list[dict[str, Any]]:
        groups = sorted(g.decode() for g in await self._r.smembers(keys.GROUPS))
        tags = sorted(t.decode() for t in await self._r.smembers(keys.TAGS))
        pipe = self._r.pipeline(transaction=False)
        for device_id in ids:
            for g in groups:
                pipe.sismember(keys.group(g), device_id)
            for t in tags:
                pipe.sismember(keys.tag(t), device_id)
        flags = await pipe.execute()
        out = []
        width = len(groups) + len(tags)
        for i, (device_id, h) in enumerate(zip(ids, hashes, strict=True)):
            mine = flags[i * width : (i + 1) * width]
            f = {k.decode(): v.decode() for k, v in h.items()}
            job = None
            if "task" in f:
                cause = int(f["cause"]) if f.get("cause") else None
                job = {
                    "task_id": f["task"],
                    "state": f.get("state"),
                    "attempt": int(f.get("attempt", "0")),
                    "cause": cause,
                    "cause_message": _cause_message(cause),
                    "at_ms": int(f.get("job_at_ms", "0")),
                }
            out.append(
                {
                    "device_id": device_id,
                    "fw_version": f.get("fw"),
                    "sw_version": f.get("sw"),
                    "online": f.get("online") == "1",
                    "last_seen_ms": int(f["seen_ms"]) if "seen_ms" in f else None,
                    "groups": [g for g, m in zip(groups, mine[: len(groups)], strict=True) if m],
                    "tags": [t for t, m in zip(tags, mine[len(groups) :], strict=True) if m],
                    "current_job": job,
                }
            )
        return out

    async def matching(self, flt: DeviceFilter) -> set[str]:
        """Every device id matching all parts of the filter (versions within a part: any)."""
        for g in flt.groups:
            await self.require_group(g)
        parts: list[set[str]] = []
        for kind, values in (("fw", flt.fw_versions), ("sw", flt.sw_versions)):
            if values:
                parts.append(_strs(await self._r.sunion([keys.version(kind, v) for v in values])))
        if flt.groups:
            parts.append(_strs(await self._r.sunion([keys.group(g) for g in flt.groups])))
        if flt.tags:
            parts.append(_strs(await self._r.sunion([keys.tag(t) for t in flt.tags])))
        if flt.online is True:
            parts.append({m.decode() for m in await self._r.smembers(keys.ONLINE)})
        if not parts:
            everyone = {m.decode() for m in await self._r.zrange(keys.DEVICES, 0, -1)}
            parts.append(everyone)
        result = set.intersection(*parts)
        if flt.online is False:
            result -= {m.decode() for m in await self._r.smembers(keys.ONLINE)}
        return result

    async def page(
        self, flt: DeviceFilter, *, after: str, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        if flt.empty:
            low = f"({after}" if after else "-"
            raw = await self._r.zrangebylex(keys.DEVICES, low, "+", start=0, num=limit)
            ids = [m.decode() for m in raw]
        else:
            ids = sorted(d for d in await self.matching(flt) if d > after)[:limit]
        pipe = self._r.pipeline(transaction=False)
        for device_id in ids:
            pipe.hgetall(keys.device(device_id))
        hashes = await pipe.execute()
        items = await self._summaries(ids, hashes)
        return items, (ids[-1] if len(ids) == limit else None)

    async def states(self, device_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        pipe = self._r.pipeline(transaction=False)
        for device_id in device_ids:
            pipe.hmget(keys.device(device_id), ["fw", "sw", "task", "state"])
        rows: list[dict[bytes, bytes]] = []
        for fw, sw, task, state in await pipe.execute():
            rows.append({b"fw": fw, b"sw": sw, b"task": task, b"state": state})
        return rows

    # ------------------------------------------------------------ operator edits

    async def require_group(self, name: str) -> None:
        if not await self._r.sismember(keys.GROUPS, name):
            raise ValidationError(
                f"group {name!r} does not exist", code="unknown_group", field="groups"
            )

    async def groups(self) -> list[dict[str, Any]]:
        names = sorted(g.decode() for g in await self._r.smembers(keys.GROUPS))
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.scard(keys.group(name))
        sizes = await pipe.execute()
        return [{"name": n, "devices": s} for n, s in zip(names, sizes, strict=True)]

    async def create_group(self, name: str) -> bool:
        check_name(name, "group name", "name")
        if await self._r.sismember(keys.GROUPS, name):
            return False
        await self._producer.send(
            [Out(self._topics.devices, f"group:{name}", orjson.dumps({"name": name}))]
        )
        await self._r.sadd(keys.GROUPS, name)
        return True

    async def delete_group(self, name: str) -> None:
        if not await self._r.sismember(keys.GROUPS, name):
            raise NotFound(f"group {name!r} does not exist", code="unknown_group")
        members = [m.decode() for m in await self._r.smembers(keys.group(name))]
        await self._producer.send([Out(self._topics.devices, f"group:{name}", None)])
        await self._r.srem(keys.GROUPS, name)
        await self._r.delete(keys.group(name))
        await self._publish_membership(members)

    async def change_group(self, name: str, add: Sequence[str], remove: Sequence[str]) -> None:
        if not await self._r.sismember(keys.GROUPS, name):
            raise NotFound(f"group {name!r} does not exist", code="unknown_group")
        pipe = self._r.pipeline(transaction=True)
        if add:
            pipe.sadd(keys.group(name), *add)
            pipe.zadd(keys.DEVICES, dict.fromkeys(add, 0))
        if remove:
            pipe.srem(keys.group(name), *remove)
        await pipe.execute()
        await self._publish_membership([*add, *remove])

    async def set_labels(
        self, device_id: str, groups: Sequence[str] | None, tags: Sequence[str] | None
    ) -> dict[str, Any]:
        for g in groups or ():
            await self.require_group(g)
        for t in tags or ():
            check_name(t, "tag", "tags")
        current = (await self._summaries([device_id], [{}]))[0]
        pipe = self._r.pipeline(transaction=True)
        pipe.zadd(keys.DEVICES, {device_id: 0})
        if groups is not None:
            for g in set(current["groups"]) - set(groups):
                pipe.srem(keys.group(g), device_id)
            for g in groups:
                pipe.sadd(keys.group(g), device_id)
        if tags is not None:
            for t in set(current["tags"]) - set(tags):
                pipe.srem(keys.tag(t), device_id)
            for t in tags:
                pipe.sadd(keys.tag(t), device_id)
                pipe.sadd(keys.TAGS, t)
        await pipe.execute()
        await self._publish_membership([device_id])
        return (
            await self.show(device_id)
            if await self._r.exists(keys.device(device_id))
            else {
                "device_id": device_id,
                "groups": list(groups or current["groups"]),
                "tags": list(tags or current["tags"]),
            }
        )

    async def _publish_membership(self, device_ids: Sequence[str]) -> None:
        if not device_ids:
            return
        views = await self._summaries(list(device_ids), [{} for _ in device_ids])
        await self._producer.send(
            Out(
                self._topics.devices,
                v["device_id"],
                orjson.dumps({"groups": v["groups"], "tags": v["tags"]}),
            )
            for v in views
        )


def _strs(members: Any) -> set[str]:
    return {m.decode() for m in members}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _cause_message(cause: int | None) -> str | None:
    if cause is None:
        return None
    try:
        return FailureCause(cause).message
    except ValueError:
        return f"unknown cause {cause}"
