"""The device registry: what devices reported (versions, presence, last seen), their
current job and timeline, and the groups and tags operators set.

Fed by the inbox (versions, presence) and job events (current job, timeline), both applied
idempotently: versions and presence move only forward in record time, and a timeline entry is
keyed by its event id so a replayed event is stored once. Operator groups and tags go to the
compacted `ota.devices` topic (key = device id, or `group:<name>` for a group) before Redis.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio

from ota.fields import ProtocolError
from ota.records import DeviceEventRecord, JobEventRecord, PresenceRecord, TaskType
from ota.reports import ProgressReport, decode_report
from ota.settings import Topics
from scheduler import keys, timeline
from scheduler.bus import Out, Producer
from scheduler.errors import NotFound, ValidationError
from scheduler.timeline_script import JOB_SCRIPT, job_args

NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
# Records per registry script call: bounds how long one call holds Redis.
CHUNK = 500

# Device reports and presence changes in log order, each only forward in record time.
# KEYS[1] all-devices zset, KEYS[2] online set, KEYS[3] and KEYS[4] the known firmware and
# software versions (the overview's census reads them instead of scanning the keyspace),
# KEYS[5] the open continuous tasks whose filter names versions or presence.
# ARGV[1] version index prefix, ARGV[2] the software task type, ARGV[3] a JSON array of
# [device hash, device id, at_ms, fw ('' unchanged), sw ('' unchanged), online ('1'/'0'/''),
# progress version ('' none: the version of whatever the device's current job upgrades)].
# Returns the devices whose version or presence changed, while KEYS[5] is not empty (else
# nobody asks, and nothing is collected).
_OBSERVE = """
local known = {fw = KEYS[3], sw = KEYS[4]}
local watched = redis.call('SCARD', KEYS[5]) > 0
local moved = {}
local function observe(dev, id, at, fw, sw, online, progress)
  redis.call('ZADD', KEYS[1], 0, id)
  local seen = tonumber(redis.call('HGET', dev, 'seen_ms') or '0')
  if tonumber(at) < seen then return end
  redis.call('HSET', dev, 'seen_ms', at)
  if progress ~= '' then
    if redis.call('HGET', dev, 'task_type') == ARGV[2] then sw = progress else fw = progress end
  end
  local changed = false
  local versions = {fw = fw, sw = sw}
  for _, kind in ipairs({'fw', 'sw'}) do
    local v = versions[kind]
    if v ~= '' then
      local old = redis.call('HGET', dev, kind)
      if old ~= v then
        if old then redis.call('SREM', ARGV[1] .. kind .. ':' .. old, id) end
        redis.call('SADD', known[kind], v)
        changed = true
      end
      redis.call('HSET', dev, kind, v)
      redis.call('SADD', ARGV[1] .. kind .. ':' .. v, id)
    end
  end
  if online ~= '' then
    if redis.call('HGET', dev, 'online') ~= online then changed = true end
    redis.call('HSET', dev, 'online', online)
    if online == '1' then redis.call('SADD', KEYS[2], id) else redis.call('SREM', KEYS[2], id) end
  end
  if changed and watched then moved[#moved + 1] = id end
end
for _, r in ipairs(cjson.decode(ARGV[3])) do
  observe(r[1], r[2], r[3], r[4], r[5], r[6], r[7])
end
return moved
"""

# A device hash and its timeline, newest first, read at one moment; a timeline stored as a
# sorted set (before it was a list) is read as well. KEYS[1] device hash, KEYS[2] timeline
_SHOW = """
local entries
if redis.call('TYPE', KEYS[2]).ok == 'zset' then
  entries = redis.call('ZREVRANGE', KEYS[2], 0, -1)
else
  entries = redis.call('LRANGE', KEYS[2], 0, -1)
end
return {redis.call('HGETALL', KEYS[1]), entries}
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


# Told (device ids, every group they entered or left) after devices' groups or tags
# changed in Redis: continuous tasks re-check those devices (scheduler/joins.py).
LabelsChanged = Callable[[Sequence[str], Sequence[str]], Awaitable[object]]
# Told the device ids whose version or presence changed, while an open continuous task's
# filter names either (scheduler/joins.py).
FactsChanged = Callable[[Sequence[str]], Awaitable[object]]


class Registry:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        producer: Producer,
        topics: Topics,
        timeline_cap: int,
        timeline_retention_ms: int,
        on_labels: LabelsChanged | None = None,
        on_facts: FactsChanged | None = None,
    ) -> None:
        self._r, self._producer, self._topics, self._cap = r, producer, topics, timeline_cap
        self._retention_ms = timeline_retention_ms
        self._on_labels, self._on_facts = on_labels, on_facts
        self._observe = r.register_script(_OBSERVE)
        self._job = r.register_script(JOB_SCRIPT)
        self._show = r.register_script(_SHOW)

    # ------------------------------------------------------------ fed by the logs

    async def observe(self, records: Sequence[DeviceEventRecord | PresenceRecord]) -> None:
        """Apply a batch of inbox records in log order, `CHUNK` per script call; then tell
        `on_facts` the devices whose version or presence changed."""
        moved: set[str] = set()
        for start in range(0, len(records), CHUNK):
            batch = orjson.dumps(
                [
                    [keys.device(r.device_id), r.device_id, str(r.at_ms), *observation(r)]
                    for r in records[start : start + CHUNK]
                ]
            )
            changed = await self._observe(
                keys=[
                    keys.DEVICES,
                    keys.ONLINE,
                    keys.known_versions("fw"),
                    keys.known_versions("sw"),
                    keys.CONTINUOUS_FACTS,
                ],
                args=[keys.P + "ver:", TaskType.SOFTWARE.value, batch],
            )
            moved.update(device.decode() for device in changed)
        if moved and self._on_facts is not None:
            await self._on_facts(sorted(moved))

    async def job_events(
        self,
        events: Sequence[tuple[JobEventRecord, str]],
        positions: Sequence[str] = (),
    ) -> None:
        """Record a batch of (job event, its task's type) in log order, `CHUNK` per call;
        `positions`: each event's `timeline.log_position` (none: not known)."""
        where = list(positions) or [""] * len(events)
        if len(where) != len(events):
            raise ValueError(f"{len(where)} log positions for {len(events)} job events")
        for start in range(0, len(events), CHUNK):
            batch = orjson.dumps(
                [
                    job_args(event, task_type, position)
                    for (event, task_type), position in zip(
                        events[start : start + CHUNK], where[start : start + CHUNK], strict=True
                    )
                ]
            )
            await self._job(keys=[keys.DEVICES], args=[self._cap, batch, self._retention_ms])

    # ------------------------------------------------------------ queries

    async def show(self, device_id: str) -> dict[str, Any]:
        # One script: the current job and the timeline from the same moment (a batch of job
        # events applied between two reads would show a timeline ahead of the job).
        flat, entries = await self._show(keys=[keys.device(device_id), keys.timeline(device_id)])
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        if not raw:
            raise NotFound(f"device {device_id!r} is not known", code="unknown_device")
        view = await self._summaries([device_id], [raw])
        view[0]["timeline"] = timeline.decode_all(entries)
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        view[0]["history"] = timeline.history(fields, self._topics.job_events, len(entries))
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
                    "cause_message": timeline.cause_message(cause),
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
        self, flt: DeviceFilter, *, after: str, limit: int, prefix: str = ""
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Devices in id order after `after`, optionally only ids starting with `prefix`."""
        if flt.empty:
            low = f"({after}" if after else (f"[{prefix}" if prefix else "-")
            high = f"[{prefix}\xff" if prefix else "+"  # ids are ASCII: U+00FF sorts after
            raw = await self._r.zrangebylex(keys.DEVICES, low, high, start=0, num=limit)
            ids = [m.decode() for m in raw]
        else:
            matched = await self.matching(flt)
            ids = sorted(d for d in matched if d > after and d.startswith(prefix))[:limit]
        pipe = self._r.pipeline(transaction=False)
        for device_id in ids:
            pipe.hgetall(keys.device(device_id))
        hashes = await pipe.execute()
        items = await self._summaries(ids, hashes)
        return items, (ids[-1] if len(ids) == limit else None)

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
        await self._labels_changed(members, [name])
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
        await self._labels_changed([*add, *remove], [name])
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
        touched = {*current["groups"], *(groups or ())} if groups is not None else set()
        await self._labels_changed([device_id], sorted(touched))
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

    async def _labels_changed(self, device_ids: Sequence[str], groups: Sequence[str]) -> None:
        if self._on_labels is not None and device_ids:
            await self._on_labels(device_ids, groups)

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


def observation(record: DeviceEventRecord | PresenceRecord) -> tuple[str, str, str, str]:
    """(fw, sw, online, progress version) a record tells the registry, '' for nothing.
    A device event tells what its report says (`ota.reports`, as the workers read it);
    one that is no valid report tells nothing."""
    if isinstance(record, PresenceRecord):
        return "", "", "1" if record.online else "0", ""
    try:
        report = decode_report(record.event_type, record.paras)
    except ProtocolError:
        return "", "", "", ""
    if isinstance(report, ProgressReport):
        return "", "", "", report.version
    return report.fw_version or "", report.sw_version or "", "", ""


def _strs(members: Any) -> set[str]:
    return {m.decode() for m in members}
