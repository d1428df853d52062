"""Dry runs: what creating a task would do to each device it targets, kept as paged lists.

Every task creation judges its resolved devices against the registry (`DryRuns.judge`):
a device whose current job is active in another task is in *conflict* (its job would
fail with TASK_CONFLICT, or queue under `on_conflict: wait`); otherwise one the registry
knows on the package's version, or on a version outside the package's allowed sources,
is *skipped* (its job would end at the version answer without an upgrade); every other
device, including one that never reported a version, gets the upgrade. A dry run also
keeps three lists for a while, under an id: `targeted` (every device in release order,
with its outcome), `skipped` (with the reason) and `conflict` (with the other task).
Pages read a slice of one list, so a million-device target costs one pass at creation
and a bounded read per page, never a million-row response.

The judging runs in Redis (`_JUDGE`, a chunk per call): reading a million device
hashes through a Python pipeline costs seconds of client CPU that the script does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import redis.asyncio

from ota.jobstates import ACTIVE as ACTIVE_JOB_STATES
from ota.records import TaskType, new_id
from scheduler import keys
from scheduler.errors import NotFound, ValidationError
from scheduler.packages import Package

# Devices per script call: about 20 ms of Redis time at 5,000.
CHUNK = 5000
TTL_S = 3600


class Category(StrEnum):
    TARGETED = "targeted"
    SKIPPED = "skipped"
    CONFLICT = "conflict"


class Outcome(StrEnum):
    UPGRADE = "upgrade"
    SKIPPED = "skipped"
    CONFLICT = "conflict"


class SkipReason(StrEnum):
    ALREADY_ON_TARGET = "already_on_target"
    SOURCE_VERSION_NOT_ALLOWED = "source_version_not_allowed"


# Judge a chunk of devices; with ARGV[1] = '1' also append them to the dry run's lists.
# Entries are tab-separated (device ids and task ids hold no tab; a reported version,
# which might, is always the last field).
# KEYS[1] targeted list ("device\toutcome\tversion"), KEYS[2] skipped list
# ("device\treason\tversion"), KEYS[3] conflict list ("device\ttask\tstate")
# ARGV[1] keep '1'|'0', ARGV[2] TTL of the lists in s, ARGV[3] device hash prefix,
# ARGV[4] version field (fw|sw), ARGV[5] the package's version, ARGV[6] its allowed source
# versions joined by '\n' ('' allows any), ARGV[7] active job states joined by '\n',
# ARGV[8..] device ids. Returns {already on target, unsupported source, in conflict,
# never reported, skipped}; the first two count devices in conflict too.
_JUDGE = """
local keep = ARGV[1] == '1'
local allowed, active = {}, {}
local any_source = ARGV[6] == ''
for v in string.gmatch(ARGV[6], '[^\\n]+') do allowed[v] = true end
for s in string.gmatch(ARGV[7], '[^\\n]+') do active[s] = true end
local on_target, unsupported, conflict, unseen = 0, 0, 0, 0
local targeted, skipped, conflicts = {}, {}, {}
for i = 8, #ARGV do
  local id = ARGV[i]
  local row = redis.call('HMGET', ARGV[3] .. id, ARGV[4], 'task', 'state')
  local version, outcome, reason = row[1], nil, nil
  if row[3] and active[row[3]] then
    conflict = conflict + 1
    outcome = 'conflict'
    conflicts[#conflicts + 1] = id .. '\\t' .. (row[2] or '') .. '\\t' .. row[3]
  end
  if not version then
    unseen = unseen + 1
    version = ''
  elseif version == ARGV[5] then
    on_target = on_target + 1
    reason = 'already_on_target'
  elseif not any_source and not allowed[version] then
    unsupported = unsupported + 1
    reason = 'source_version_not_allowed'
  end
  if reason and not outcome then
    outcome = 'skipped'
    skipped[#skipped + 1] = id .. '\\t' .. reason .. '\\t' .. version
  end
  targeted[#targeted + 1] = id .. '\\t' .. (outcome or 'upgrade') .. '\\t' .. version
end
if keep then
  local lists = {targeted, skipped, conflicts}
  for k = 1, 3 do
    if #lists[k] > 0 then
      redis.call('RPUSH', KEYS[k], unpack(lists[k]))
      redis.call('EXPIRE', KEYS[k], ARGV[2])
    end
  end
end
return {on_target, unsupported, conflict, unseen, #skipped}
"""

_ACTIVE = "\n".join(sorted(s.value for s in ACTIVE_JOB_STATES))


def check_category(raw: str) -> Category:
    try:
        return Category(raw)
    except ValueError:
        names = ", ".join(c.value for c in Category)
        raise ValidationError(
            f"category={raw!r} is not one of {names}", code="bad_value", field="category"
        ) from None


def item(category: Category, entry: bytes) -> dict[str, Any]:
    """One list entry as the API shows it."""
    device, second, rest = entry.decode().split("\t", 2)
    if category is Category.CONFLICT:
        return {"device_id": device, "task_id": second or None, "state": rest}
    version = rest or None
    if category is Category.SKIPPED:
        return {"device_id": device, "reason": second, "version": version}
    return {"device_id": device, "outcome": second, "version": version}


class DryRuns:
    def __init__(self, r: redis.asyncio.Redis[bytes]) -> None:
        self._r = r
        self._judge = r.register_script(_JUDGE)

    async def judge(
        self, devices: Sequence[str], package: Package, task_type: TaskType, *, keep: bool
    ) -> tuple[dict[str, int], dict[str, Any] | None]:
        """The preview counts of `devices`; with `keep`, also the stored dry run's summary
        (its id, lifetime and the size of each list)."""
        did = new_id()
        lists = [keys.dry_run(did, c.value) for c in Category]
        fixed = [
            "1" if keep else "0",
            str(TTL_S),
            keys.device(""),
            "fw" if task_type is TaskType.FIRMWARE else "sw",
            package.version,
            "\n".join(package.allowed_sources),
            _ACTIVE,
        ]
        on_target = unsupported = conflict = unseen = skipped = 0
        for start in range(0, len(devices), CHUNK):
            part = devices[start : start + CHUNK]
            counts = await self._judge(keys=lists, args=[*fixed, *part])
            on_target += counts[0]
            unsupported += counts[1]
            conflict += counts[2]
            unseen += counts[3]
            skipped += counts[4]
        preview = {
            "targeted": len(devices),
            "already_on_target": on_target,
            "unsupported_source": unsupported,
            "in_conflict": conflict,
            "never_reported": unseen,
            "skipped": skipped,
        }
        if not keep:
            return preview, None
        sizes = {
            Category.TARGETED.value: len(devices),
            Category.SKIPPED.value: skipped,
            Category.CONFLICT.value: conflict,
        }
        # Written last: a dry run is readable only once its lists are complete; the
        # lists' lifetimes restart with it so that none ends before the summary.
        summary_key = keys.dry_run(did, "summary")
        pipe = self._r.pipeline(transaction=False)
        fields: dict[str | bytes, bytes | float | int | str] = {"package_id": package.id}
        fields.update(sizes)
        pipe.hset(summary_key, mapping=fields)
        for key in (summary_key, *lists):
            pipe.expire(key, TTL_S)
        await pipe.execute()
        return preview, {"id": did, "expires_in_s": TTL_S, "lists": sizes}

    async def summary(self, did: str) -> dict[str, Any]:
        raw = await self._r.hgetall(keys.dry_run(did, "summary"))
        if not raw:
            raise NotFound(
                f"dry run {did!r} does not exist or has expired (they last {TTL_S} s)",
                code="unknown_dry_run",
            )
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        ttl = await self._r.ttl(keys.dry_run(did, "summary"))
        return {
            "id": did,
            "package_id": fields["package_id"],
            "expires_in_s": max(ttl, 0),
            "lists": {c.value: int(fields[c.value]) for c in Category},
        }

    async def page(
        self, did: str, category: Category, *, offset: int, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Entries of one list from `offset`; the next offset, or None at the end."""
        size = (await self.summary(did))["lists"][category.value]
        if offset >= size:
            return [], None
        entries = await self._r.lrange(
            keys.dry_run(did, category.value), offset, offset + limit - 1
        )
        following = offset + len(entries)
        return [item(category, e) for e in entries], (following if following < size else None)
