"""Tasks: create (or dry-run, scheduler/dryrun.py), read, list, a task's devices, operations.

The task document's system of record is the compacted topic `ota.tasks` (key = task
id); Redis holds the working copy, its device list, per-device states and counts
(`taskstate`). Status changes go through `transition`: the new document to Kafka, then
an optimistic check-and-set in Redis that also enters the change's notification in the
webhooks' stream, then its copy on the task-events topic. Releasing devices is the
reconciler's job; the API only changes what the reconciler reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, replace
from typing import Any, cast

import orjson
import redis.asyncio
from kafka.errors import KafkaError
from redis.exceptions import WatchError

from ota.clock import now_ms
from ota.jobstates import ACTIVE as ACTIVE_JOB_STATES
from ota.jobstates import CANCELLABLE, DeviceStatus, JobState
from ota.protocol import ProtocolError, check_device_id
from ota.records import TaskType, new_id
from ota.settings import Topics
from scheduler import keys, task_lists
from scheduler.bus import Out, Producer
from scheduler.devices import Registry
from scheduler.dryrun import DryRuns
from scheduler.errors import BadRequest, Conflict, Gone, NotFound, ValidationError
from scheduler.fields import Obj
from scheduler.joins import Joins
from scheduler.matching import Followed
from scheduler.notify import Notifier, add_to_stream, task_status_event
from scheduler.pacing import Hold
from scheduler.packages import Packages
from scheduler.policy import parse_policy, policy_json
from scheduler.rollback_plan import (
    RollbackOf,
    check_rollback_package,
    rollback_sources,
    unknown_rollback_package,
)
from scheduler.targets import MAX_LIST_IDS, Targets, check_followable, parse_targets, targets_json
from scheduler.task_retention import refuse_if_gone
from scheduler.taskdoc import TaskDoc, TaskPackage, load_task
from scheduler.taskstate import (
    PENDING,
    RELEASED,
    STATES,
    TaskState,
    causes,
    split_entry,
    tally,
)
from scheduler.taskstatus import FINISHED, TaskStatus
from scheduler.timeline import cause_message
from scheduler.waves import wave_ends

CHUNK = 5000
LIST_TTL_S = 24 * 3600
WRAP_UP_WAIT_S = 5.0  # a reconciler pass wraps a finished task up well within this
WRAP_UP_POLL_S = 0.05
_BODY_FIELDS = frozenset({"name", "type", "package_id", "targets", "policy", "dry_run"})


def device_status(state: str) -> DeviceStatus:
    if state in (PENDING, RELEASED):
        return DeviceStatus.WAITING
    return JobState(state).device_status


def states_for(status: str) -> tuple[str, ...]:
    """The task-device states a status filter selects: a state name or an IoTDA status."""
    if status in STATES:
        return (status,)
    try:
        wanted = DeviceStatus(status)
    except ValueError:
        names = ", ".join([*(s.value for s in DeviceStatus), *STATES])
        raise ValidationError(
            f"status={status!r} is not one of {names}", code="bad_value", field="status"
        ) from None
    return tuple(s for s in STATES if device_status(s) is wanted)


class Tasks:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        producer: Producer,
        topics: Topics,
        packages: Packages,
        registry: Registry,
        state: TaskState,
        notifier: Notifier,
        wake: asyncio.Event,
    ) -> None:
        self._r, self._producer, self._topics = r, producer, topics
        self._packages, self._registry, self._state = packages, registry, state
        self._notifier, self._wake = notifier, wake
        self._dry_runs = DryRuns(r)
        self._joins = Joins(r)

    # ------------------------------------------------------------ target lists

    async def upload_list(self, chunks: AsyncIterator[bytes]) -> dict[str, Any]:
        """A newline-separated device-id list for targets too large for one request."""
        lid = new_id()
        key = keys.target_list(lid)
        tmp = key + ":tmp"
        buffered, rest, count, line_no = [], b"", 0, 0
        try:
            async for chunk in chunks:
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for raw in lines:
                    line_no += 1
                    device = _list_line(raw, line_no)
                    if device:
                        buffered.append(device)
                if len(buffered) >= CHUNK:
                    count += await self._push(tmp, buffered)
                    buffered = []
            line_no += 1
            last = _list_line(rest, line_no)
            if last:
                buffered.append(last)
            count += await self._push(tmp, buffered)
            if count == 0:
                raise ValidationError("the device list is empty", code="empty_targets")
            if count > MAX_LIST_IDS:
                raise ValidationError(
                    f"the device list has {count} ids; the limit is {MAX_LIST_IDS}",
                    code="too_many",
                )
            await self._r.rename(tmp, key)  # type: ignore[no-untyped-call]
            await self._r.expire(key, LIST_TTL_S)
        finally:
            await self._r.delete(tmp)
        return {"list_id": lid, "count": count, "expires_in_s": LIST_TTL_S}

    async def _push(self, key: str, devices: list[str]) -> int:
        if not devices:
            return 0
        pipe = self._r.pipeline(transaction=False)
        pipe.rpush(key, *devices)
        pipe.expire(key, LIST_TTL_S)
        await pipe.execute()
        return len(devices)

    # ------------------------------------------------------------ create

    async def create(
        self, body: Any, rollback: RollbackOf | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Validate and create (or, with dry_run, only count). Returns (view, created).
        `rollback`: this task rolls another back (scheduler.rollbacks)."""
        now = now_ms()
        b = Obj(body, "", _BODY_FIELDS)
        name = b.text("name", "", max_len=128)
        raw_type = b.text("type", max_len=16)
        try:
            task_type = TaskType(raw_type)
        except ValueError:
            raise ValidationError(
                f"type={raw_type!r} must be firmware or software", code="bad_value", field="type"
            ) from None
        pid = b.text("package_id", max_len=64)
        targets = parse_targets(b.raw("targets"))
        policy = parse_policy(b.raw("policy", None), now)
        dry_run = b.flag("dry_run", False)
        try:
            package = await self._packages.get(pid)
        except NotFound as exc:
            raise ValidationError(exc.message, code="unknown_package", field="package_id") from None
        if package.type is not task_type:
            raise ValidationError(
                f"package {pid!r} is a {package.type.value} package; this is a {task_type.value} task",
                code="wrong_package_type",
                field="package_id",
            )
        if policy.rollback_package_id is not None:
            try:
                undo = await self._packages.get(policy.rollback_package_id)
            except NotFound:
                raise unknown_rollback_package(policy.rollback_package_id) from None
            check_rollback_package(undo, package)
        if rollback is not None:
            sources = rollback_sources(package.allowed_sources, rollback.undoes_version)
            package = replace(package, allowed_sources=sources)
        if policy.continuous:
            check_followable(targets)
        tid = new_id() if rollback is None else rollback.task_id
        follows = following(targets) if policy.continuous and not dry_run else None
        if follows is not None:
            # Listed before resolving: a device that joins meanwhile is queued, and the
            # reconciler's re-check adds it unless the resolved list already has it.
            await self._joins.open(tid, follows)
        try:
            devices = await self._resolve(targets, allow_empty=policy.continuous)
            preview, kept = await self._dry_runs.judge(devices, package, task_type, keep=dry_run)
        except BaseException:
            if follows is not None:
                await self._joins.close(tid, follows)
            raise
        if kept is not None:
            lasting = {"dry_run_id": kept["id"], "expires_in_s": kept["expires_in_s"]}
            return {"dry_run": True, **preview, **lasting, "lists": kept["lists"]}, False
        doc: TaskDoc = {
            "id": tid,
            "name": name,
            "type": task_type.value,
            "package_id": pid,
            "package": cast(TaskPackage, asdict(package.ref())),
            "policy": policy_json(policy),
            "targets": targets_json(targets),
            "devices": len(devices),
            "preview": preview,
            "status": TaskStatus.INITIALIZING.value,
            "reason": "",
            "created_ms": now,
            "updated_ms": now,
        }
        if rollback is not None:
            doc["rollback_of"] = rollback.of
        await self._r.hset(keys.CREATING, tid, f"{now} {pid}")  # until its status: creations.py
        await self._r.sadd(keys.package_users(pid), tid)
        if not await self._r.exists(keys.package(pid)):
            await self._r.srem(keys.package_users(pid), tid)
            if follows is not None:
                await self._joins.close(tid, follows)
            raise ValidationError(f"package {pid!r} was just deleted", code="unknown_package")
        await self._save(doc)
        await task_lists.record(self._producer, self._topics, tid, devices)
        await task_lists.materialise(self._r, tid, devices)
        await self._r.zadd(keys.TASKS, {tid: now})
        first = TaskStatus.WAITING if policy.schedule_ms is not None else TaskStatus.PROCESSING
        await self._r.sadd(keys.ACTIVE_TASKS, tid)
        doc = await self.transition(tid, {TaskStatus.INITIALIZING}, first, "")
        await self._r.hdel(keys.CREATING, tid)
        self._wake.set()
        return await self.view(tid), True

    async def _resolve(self, targets: Targets, *, allow_empty: bool = False) -> list[str]:
        ordered: dict[str, None] = dict.fromkeys(targets.device_ids)
        if targets.list_id is not None:
            key = keys.target_list(targets.list_id)
            if not await self._r.exists(key):
                raise ValidationError(
                    f"device list {targets.list_id!r} does not exist or has expired",
                    code="unknown_list",
                    field="targets.list_id",
                )
            # To its end: an uploaded list is capped on upload (MAX_LIST_IDS); a rollback's
            # list of a task's upgraded devices (scheduler.rollbacks) may be longer.
            start = 0
            while part := await self._r.lrange(key, start, start + 49_999):
                ordered.update(dict.fromkeys(d.decode() for d in part))
                start += len(part)
        for group in targets.groups:
            await self._registry.require_group(group)
            members = await self._r.smembers(keys.group(group))
            ordered.update(dict.fromkeys(sorted(m.decode() for m in members)))
        if targets.filter is not None:
            ordered.update(dict.fromkeys(sorted(await self._registry.matching(targets.filter))))
        if not ordered and not allow_empty:
            raise ValidationError(
                "targets resolve to no devices", code="empty_targets", field="targets"
            )
        return list(ordered)

    # ------------------------------------------------------------ documents

    async def _save(self, doc: TaskDoc) -> None:
        raw = orjson.dumps(doc)
        await self._producer.send([Out(self._topics.tasks, doc["id"], raw)])
        await self._r.set(keys.task(doc["id"]), raw)

    async def doc(self, tid: str) -> TaskDoc:
        raw = await self._r.get(keys.task(tid))
        if raw is None:
            raise NotFound(f"task {tid!r} does not exist", code="unknown_task")
        return load_task(raw)

    async def transition(
        self,
        tid: str,
        allowed: set[TaskStatus] | frozenset[TaskStatus],
        to: TaskStatus,
        reason: str,
        runtime: Mapping[str | bytes, bytes | float | int | str] | None = None,
    ) -> TaskDoc:
        """Change a task's status if it is in `allowed`; publish and notify the change."""
        previous = ""

        def change(doc: TaskDoc) -> None:
            nonlocal previous
            current = TaskStatus(doc["status"])
            if current not in allowed:
                raise Conflict(
                    f"task {tid} is {current.value}; this needs it to be "
                    + " or ".join(sorted(s.value for s in allowed)),
                    code="bad_task_status",
                )
            previous = doc["status"]
            doc.update({"status": to.value, "reason": reason})

        def told(doc: TaskDoc) -> dict[str, Any] | None:
            return task_status_event(doc, previous) if previous != to.value else None

        return await self.update(tid, change, runtime, told)

    async def update(
        self,
        tid: str,
        change: Callable[[TaskDoc], None],
        runtime: Mapping[str | bytes, bytes | float | int | str] | None = None,
        told: Callable[[TaskDoc], dict[str, Any] | None] | None = None,
    ) -> TaskDoc:
        """Apply `change` to a task's document as a check-and-set (again on a concurrent
        write; `change` may raise to refuse), with `runtime` fields in the same
        transaction. The new document is published first: a change Kafka does not take
        is not made (the topic is the documents' system of record). `told` makes the
        change's notification from the new document (None: none): its webhooks' stream
        entry goes in the same transaction, so no crash loses it, and its task-events
        copy is sent after, patiently."""
        key = keys.task(tid)
        note: dict[str, Any] | None = None
        async with self._r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(f"task {tid!r} does not exist", code="unknown_task")
                    doc = load_task(raw)
                    change(doc)
                    doc["updated_ms"] = now_ms()
                    note = told(doc) if told is not None else None
                    await self._producer.send([Out(self._topics.tasks, tid, orjson.dumps(doc))])
                    pipe.multi()
                    pipe.set(key, orjson.dumps(doc))
                    if runtime:
                        pipe.hset(keys.task_runtime(tid), mapping={**runtime})
                    if note is not None:
                        add_to_stream(pipe, orjson.dumps(note))
                    await pipe.execute()
                    break
                except WatchError:
                    continue  # published too; the document that wins is published after it
        if note is not None:
            await self._notifier.publish([note], patient=True)
        return doc

    # ------------------------------------------------------------ reads

    async def view(self, tid: str) -> dict[str, Any]:
        pipe = self._r.pipeline(transaction=False)
        pipe.get(keys.task(tid))
        pipe.hgetall(keys.task_counts(tid))
        pipe.hgetall(keys.task_runtime(tid))
        raw_doc, raw_counts, raw_runtime = await pipe.execute()
        if raw_doc is None:
            raise NotFound(f"task {tid!r} does not exist", code="unknown_task")
        # The view: a copy of the document with the counts, progress and runtime added
        # below; an API answer, not a TaskDoc.
        doc: dict[str, Any] = {**load_task(raw_doc)}
        counts = {k.decode(): int(v) for k, v in raw_counts.items()}
        runtime = {k.decode(): v.decode() for k, v in raw_runtime.items()}
        total = tally(counts)
        states = {s: counts.get(f"s:{s}", 0) for s in STATES if counts.get(f"s:{s}", 0)}
        statuses: dict[str, int] = {s.value: 0 for s in DeviceStatus}
        for s, n in states.items():
            statuses[device_status(s).value] += n
        policy = parse_policy(doc["policy"], None)
        ends = wave_ends(doc["devices"], policy.waves)
        waves = []
        for i, wave in enumerate(policy.waves):
            start = ends[i - 1] if i else 0
            waves.append(
                {
                    "index": i + 1,
                    "size": ends[i] - start,
                    "success_threshold_pct": wave.success_threshold_pct,
                    "approval": wave.approval,
                    **asdict(tally(counts, f"w{i}:")),
                }
            )
        doc["counts"] = {"states": states, "statuses": statuses}
        doc["failure_causes"] = [
            {"code": code, "message": cause_message(code), "count": n}
            for code, n in sorted(causes(counts).items(), key=lambda kv: -kv[1])
        ]
        doc["progress"] = {
            "total": total.total,
            "finished": total.finished,
            "succeeded": total.succeeded,
            "failed": total.failed,
            "cancelled": total.cancelled,
            # released and not finished: what policy.max_in_flight caps
            "in_flight": total.active,
            "percent": round(100.0 * total.finished / total.total, 2) if total.total else 100.0,
        }
        doc["waves"] = waves
        expires, rebuilt = runtime.get("devices_expire_ms"), runtime.get("rebuilt_ms")
        doc["runtime"] = {
            "released": int(runtime.get("cursor", "0")),
            "current_wave": int(runtime.get("wave", "0")) + 1,
            "hold": runtime.get("hold", ""),
            # a finished task's per-device states go then (null: kept)
            "devices_expire_ms": None if expires is None else int(expires),
            # when a start rebuilt it from Kafka after Redis was lost (null: never)
            "rebuilt_ms": None if rebuilt is None else int(rebuilt),
        }
        if policy.continuous:
            status = TaskStatus(doc["status"])
            doc["continuous"] = {
                "open": status not in FINISHED and policy.open_at(now_ms()),
                "end_time_ms": policy.end_ms,
                "joined": counts.get("joined", 0),
                "removed": counts.get("removed", 0),
            }
        return doc

    async def page(
        self, *, status: str | None, offset: int, limit: int
    ) -> tuple[list[TaskDoc], int | None]:
        if status is not None:
            try:
                TaskStatus(status)
            except ValueError:
                raise ValidationError(
                    f"status={status!r} is not a task status", code="bad_value", field="status"
                ) from None
        items: list[TaskDoc] = []
        position = offset
        while len(items) < limit:
            ids = await self._r.zrevrange(keys.TASKS, position, position + 4 * limit - 1)
            if not ids:
                return items, None
            docs = await self._r.mget([keys.task(i.decode()) for i in ids])
            for raw in docs:
                position += 1
                if raw is None:
                    continue
                doc = load_task(raw)
                if status is None or doc["status"] == status:
                    items.append(doc)
                    if len(items) == limit:
                        break
        return items, position

    async def devices(
        self, tid: str, *, status: str | None, after: str, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        await self.doc(tid)
        wanted = states_for(status) if status else STATES
        low = f"({after}" if after else "-"
        ids: list[str] = []
        for state in wanted:
            part = await self._r.zrangebylex(
                keys.task_state_index(tid, state), low, "+", start=0, num=limit
            )
            ids.extend(p.decode() for p in part)
        ids = sorted(ids)[:limit]
        if not ids:
            await refuse_if_gone(self._r, tid, Gone)
        entries = await self._r.hmget(keys.task_devices(tid), ids) if ids else []
        items = []
        for device, raw in zip(ids, entries, strict=True):
            if raw is None:
                continue
            state, attempt, _, cause, wave = split_entry(raw)
            items.append(
                {
                    "device_id": device,
                    "state": state,
                    "status": device_status(state).value,
                    "attempt": attempt,
                    "cause": cause,
                    "cause_message": cause_message(cause),
                    "wave": wave + 1 if wave >= 0 else None,
                }
            )
        return items, (ids[-1] if len(ids) == limit else None)

    # ------------------------------------------------------------ operations

    async def pause(self, tid: str) -> dict[str, Any]:
        await self.transition(
            tid,
            {TaskStatus.WAITING, TaskStatus.PROCESSING},
            TaskStatus.PAUSED,
            "paused by operator",
            {"hold": Hold.MANUAL},
        )
        return await self.view(tid)

    async def resume(self, tid: str) -> dict[str, Any]:
        runtime = await self._r.hgetall(keys.task_runtime(tid))
        hold = runtime.get(b"hold", b"").decode()
        wave = int(runtime.get(b"wave", b"0"))
        if hold in (Hold.APPROVAL, Hold.THRESHOLD):
            wave += 1  # approving, or overriding a missed threshold, starts the next wave
        doc = await self.doc(tid)
        schedule = doc["policy"].get("schedule_time_ms")
        to = TaskStatus.WAITING if schedule and schedule > now_ms() else TaskStatus.PROCESSING
        await self.transition(
            tid, {TaskStatus.PAUSED}, to, "resumed by operator", {"hold": "", "wave": wave}
        )
        self._wake.set()
        return await self.view(tid)

    async def cancel(self, tid: str) -> dict[str, Any]:
        counts = await self._state.counts(tid)
        await self.transition(
            tid,
            {TaskStatus.WAITING, TaskStatus.PROCESSING, TaskStatus.PAUSED},
            TaskStatus.STOPPED,
            "cancelled by operator",
            {"stopping": 1},
        )
        self._wake.set()
        cancellable = {RELEASED, *(s.value for s in CANCELLABLE)}
        in_flight = {s.value for s in ACTIVE_JOB_STATES} - cancellable
        return {
            "task": await self.view(tid),
            "not_started": counts.get(f"s:{PENDING}", 0),
            "cancel_requested": sum(counts.get(f"s:{s}", 0) for s in cancellable),
            "left_to_finish": sum(counts.get(f"s:{s}", 0) for s in in_flight),
            "left_to_finish_states": sorted(s for s in in_flight if counts.get(f"s:{s}", 0)),
        }

    async def retry(self, tid: str) -> dict[str, Any]:
        doc = await self.doc(tid)
        status = TaskStatus(doc["status"])
        if status not in FINISHED or status is TaskStatus.SUCCESS:
            raise Conflict(
                f"task {tid} is {status.value}; retry needs Fail, PartialSuccess or Stopped",
                code="bad_task_status",
            )
        if not await self.wrapped_up(tid):
            raise Conflict(f"task {tid} still has devices in flight", code="task_busy")
        pid = doc["package_id"]
        await self._r.sadd(keys.package_users(pid), tid)
        if not await self._r.exists(keys.package(pid)):
            await self._r.srem(keys.package_users(pid), tid)
            raise Conflict(f"package {pid!r} of task {tid} was deleted", code="unknown_package")
        waves = len(parse_policy(doc["policy"], None).waves)
        try:  # first: a rebuild after a lost Redis needs the list the retry makes
            some = await task_lists.record_retry(self._r, self._producer, self._topics, tid, waves)
        except KafkaError:
            await self._r.srem(keys.package_users(pid), tid)
            raise
        retried = await self._state.retry(tid, waves) if some else 0
        if retried <= 0:  # none, or the states expired
            await self._r.srem(keys.package_users(pid), tid)
            await refuse_if_gone(self._r, tid, Conflict)
            raise Conflict(
                f"task {tid} has no Fail, FailWaitRetry or Stopped devices", code="nothing_to_retry"
            )
        await self._r.sadd(keys.ACTIVE_TASKS, tid)
        await self.transition(tid, FINISHED, TaskStatus.PROCESSING, f"retrying {retried} devices")
        self._wake.set()
        return {"retried": retried, "task": await self.view(tid)}

    async def wrapped_up(self, tid: str) -> bool:
        """A task's status turns final a moment before the reconciler takes it off the
        active set (its last wrap-up step); a retry in that moment waits for it rather than
        refusing. A stopped task whose devices are still finishing stays busy."""
        deadline = asyncio.get_running_loop().time() + WRAP_UP_WAIT_S
        while await self._r.sismember(keys.ACTIVE_TASKS, tid):
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(WRAP_UP_POLL_S)
        return True


def following(targets: Targets) -> Followed:
    return Followed(groups=targets.groups, filter=targets.filter)


def _list_line(raw: bytes, line_no: int) -> str:
    text = raw.strip()
    if not text or text.startswith(b"#"):
        return ""
    try:
        device = text.decode()
        check_device_id(device)
    except (UnicodeDecodeError, ProtocolError) as exc:
        message = exc.message if isinstance(exc, ProtocolError) else "not UTF-8"
        raise BadRequest(f"line {line_no}: {message}", code="bad_device_id") from None
    return device
