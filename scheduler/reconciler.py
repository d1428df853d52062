"""The pacing reconciler: every few seconds (or when woken), for each active task it
holds the lease of, release the next devices, judge waves and abort criteria, pause,
stop or finish the task. Decisions come from the pure `pacing.decide`.

Exactly one replica paces a task: the lease (`taskstate.lease`) carries a fencing
token that the release script checks, so a replica that lost its lease mid-step
cannot record anything. Releases are produced to the inbox first and recorded after;
a crash between the two re-releases the same devices with the same record ids
(deterministic per task, device and attempt), which the workers recognise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import redis.asyncio
from kafka.errors import KafkaError

from ota import metrics
from ota.clock import now_ms
from ota.jobstates import ACTIVE as ACTIVE_JOB_STATES
from ota.records import (
    JobCancelRecord,
    JobSpec,
    PackageRef,
    TaskType,
    encode,
)
from ota.settings import Topics
from scheduler import keys, task_lists
from scheduler.bus import Out, Producer
from scheduler.creations import stop_interrupted
from scheduler.errors import Conflict, NotFound
from scheduler.flush_mark import check_mark
from scheduler.joins import DRAIN_LIMIT, Joins
from scheduler.matching import followed
from scheduler.pacing import MAX_BATCH, PaceInput, decide
from scheduler.policy import StoredPolicies, TaskPolicy
from scheduler.rollbacks import REQUESTED as ROLLBACK_REQUESTED
from scheduler.rollbacks import Rollbacks
from scheduler.settings import SchedulerSettings
from scheduler.startrecords import StartEncoder
from scheduler.taskdoc import TaskDoc
from scheduler.tasks import Tasks
from scheduler.taskstate import PENDING, RELEASED, TaskState, causes, split_entry, tally
from scheduler.taskstatus import FINISHED, TaskStatus
from scheduler.waves import wave_ends

log = logging.getLogger(__name__)
RELEASED_TOTAL = metrics.counter("scheduler", "released_total", "Devices released into the inbox")
CANCELS_TOTAL = metrics.counter("scheduler", "cancels_total", "Job cancel records produced")
JOINS_TOTAL = metrics.counter(
    "scheduler",
    "continuous_devices_total",
    "Devices that joined a continuous task, or were removed before their release",
    ("change",),
)
PACE_ERRORS = metrics.counter("scheduler", "pace_errors_total", "Reconciler steps that failed")
RECORD_SLICE = 1000
# What a step may fail with while Redis or Kafka is away, or when Kafka refuses a record
# for good (too large, not authorised): counted and logged, never the end of the service.
STEP_ERRORS = (redis.RedisError, KafkaError)
CREATION_CHECK_S = 5.0  # how often a replica looks for creations cut short (creations.py)
_RECORD_NS = uuid.UUID("5b0c3a52-8e7e-4a4f-9a0b-0f6d1f0c7a11")


def start_record_id(task_id: str, device_id: str, attempt: int) -> str:
    """The same release of the same device always has the same record id."""
    return uuid.uuid5(_RECORD_NS, f"{task_id}/{device_id}/{attempt}").hex


def job_spec(doc: TaskDoc, policy: TaskPolicy) -> JobSpec:
    pkg = doc["package"]
    # Unpacked, so that a field older documents lack takes the PackageRef default.
    ref: dict[str, Any] = {**pkg, "allowed_sources": tuple(pkg["allowed_sources"])}
    return JobSpec(
        task_id=doc["id"],
        task_type=TaskType(doc["type"]),
        package=PackageRef(**ref),
        windows=policy.windows,
        retry_count=policy.retry_count,
        retry_interval_s=policy.retry_interval_min * 60,
        retry_rules=policy.retry_rules,
        require_online=policy.require_online,
        on_conflict=policy.on_conflict,
        presigned_url=policy.presigned_url,
        success=policy.success,
    )


class Reconciler:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        producer: Producer,
        topics: Topics,
        tasks: Tasks,
        state: TaskState,
        settings: SchedulerSettings,
        wake: asyncio.Event,
    ) -> None:
        self._r, self._producer, self._topics = r, producer, topics
        self._tasks, self._state, self._wake = tasks, state, wake
        self._owner = settings.instance_id
        self._interval = settings.reconcile_interval_s
        self._ttl_ms = int(settings.lease_ttl_s * 1000)
        self._devices_retention_ms = settings.task_devices_retention_ms
        self._next_creation_check = 0.0
        self._joins = Joins(r)
        self._policies = StoredPolicies()
        self._rollbacks = Rollbacks(r, tasks, producer, topics, wake)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    busy = await self.tick()
                except STEP_ERRORS:
                    PACE_ERRORS.inc()
                    log.exception("reconciler pass failed; retrying")
                    busy = False
                if busy:
                    await asyncio.sleep(0)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval)
        finally:
            # Hand the tasks over at once rather than after the lease TTL.
            with contextlib.suppress(redis.RedisError):
                for raw in await self._r.smembers(keys.ACTIVE_TASKS):
                    await self._state.unlease(raw.decode(), self._owner)

    async def tick(self) -> bool:
        """One pass over the active tasks; True when some task has more to release now."""
        if time.monotonic() >= self._next_creation_check:
            self._next_creation_check = time.monotonic() + CREATION_CHECK_S
            await check_mark(self._r)
            await stop_interrupted(self._r, self._tasks, now_ms())
        busy = False
        for raw in await self._r.smembers(keys.ACTIVE_TASKS):
            tid = raw.decode()
            try:
                busy |= await self.pace(tid)
            except (Conflict, NotFound) as exc:
                log.info(
                    "task changed under the reconciler", extra={"task_id": tid, "why": str(exc)}
                )
            except STEP_ERRORS:  # the next pass tries again; the other tasks go on
                PACE_ERRORS.inc()
                log.exception("reconciler step failed", extra={"task_id": tid})
        return busy

    async def pace(self, tid: str) -> bool:
        lease = await self._state.lease(tid, self._owner, self._ttl_ms)
        if lease is None:
            return False
        try:
            doc = await self._tasks.doc(tid)
        except NotFound:
            await self._r.srem(keys.ACTIVE_TASKS, tid)
            return False
        rt = {
            k.decode(): v.decode()
            for k, v in (await self._r.hgetall(keys.task_runtime(tid))).items()
        }
        status = TaskStatus(doc["status"])
        policy = self._policies.of(tid, doc["policy"])
        more_joins = False
        if policy.continuous:
            more_joins = await self._follow(tid, doc, policy, lease, status, rt)
        counts = await self._state.counts(tid)
        total = tally(counts)
        if rt.get("stopping") == "1":
            return await self._stop(tid, doc, lease, rt, total.pending + total.active == 0)
        if status in FINISHED:
            await self._finish(tid, doc)
            return False
        length = await self._r.llen(keys.task_list(tid))
        ends = wave_ends(doc["devices"], policy.waves)
        ends[-1] = max(ends[-1], length)
        cursor = int(rt.get("cursor", "0"))
        snapshot = PaceInput(
            status=status,
            policy=policy,
            ends=tuple(ends),
            cursor=cursor,
            wave=int(rt.get("wave", "0")),
            hold=rt.get("hold", ""),
            tokens=float(rt.get("tokens", "0")),
            bucket_ms=int(rt.get("bucket_ms", "0")),
            stopping=False,
            tally=total,
            wave_tallies=tuple(tally(counts, f"w{i}:") for i in range(len(policy.waves))),
            causes=causes(counts),
            wave_removed=tuple(counts.get(f"w{i}:removed", 0) for i in range(len(policy.waves))),
        )
        step = decide(snapshot, now_ms())
        if step.abort:
            stop: dict[str | bytes, bytes | float | int | str] = {"stopping": 1}
            if policy.rollback_on_abort:
                stop[ROLLBACK_REQUESTED] = 1  # started by _finish once the devices have
            await self._tasks.transition(tid, {status}, TaskStatus.STOPPED, step.reason, stop)
            return True
        if step.status is not None and step.status is not status:
            runtime: dict[str | bytes, bytes | float | int | str] = {"wave": step.wave}
            if step.status is TaskStatus.PAUSED:
                runtime["hold"] = step.hold
            await self._tasks.transition(tid, {status}, step.status, step.reason, runtime)
            if step.status in FINISHED:
                await self._finish(tid, doc)
                return False
            if step.status is TaskStatus.PAUSED:
                return False
        # Written only when it changed: a pass over a paused task must not put back the
        # wave it read while the operator's resume moves it on.
        moved = (step.wave, step.tokens, step.bucket_ms)
        if moved != (snapshot.wave, snapshot.tokens, snapshot.bucket_ms):
            await self._r.hset(
                keys.task_runtime(tid),
                mapping={"wave": step.wave, "tokens": step.tokens, "bucket_ms": step.bucket_ms},
            )
        if step.release:
            await self._release(tid, doc, policy, lease, cursor, step.release, step.wave)
        return step.release >= MAX_BATCH or more_joins

    async def _follow(
        self,
        tid: str,
        doc: TaskDoc,
        policy: TaskPolicy,
        lease: str,
        status: TaskStatus,
        rt: dict[str, str],
    ) -> bool:
        """Keep an open continuous task listed and take in its queued devices; unlist a
        closed one. True when more devices are queued than one pass judges."""
        target = followed(doc["targets"])
        if status in FINISHED or rt.get("stopping") == "1" or not policy.open_at(now_ms()):
            await self._joins.close(tid, target)
            return False
        await self._joins.open(tid, target)
        judged, joined, removed = await self._joins.drain(tid, lease, target)
        if joined < 0:
            return False
        if joined or removed:
            JOINS_TOTAL.labels(change="joined").inc(joined)
            JOINS_TOTAL.labels(change="removed").inc(removed)
            log.info(
                "continuous task re-checked devices",
                extra={"task_id": tid, "joined": joined, "removed": removed},
            )
        return judged >= DRAIN_LIMIT

    async def _release(
        self,
        tid: str,
        doc: TaskDoc,
        policy: TaskPolicy,
        lease: str,
        cursor: int,
        n: int,
        wave: int,
    ) -> None:
        ids = [
            d.decode() for d in await self._r.lrange(keys.task_list(tid), cursor, cursor + n - 1)
        ]
        entries = await self._r.hmget(keys.task_devices(tid), ids) if ids else []
        starts = StartEncoder(job_spec(doc, policy))
        now = now_ms()
        slices: list[list[Out]] = []
        chosen: set[str] = set()  # a retried device is listed twice (task_lists.py)
        for start in range(0, len(ids), RECORD_SLICE):
            out = []
            for device, raw in zip(
                ids[start : start + RECORD_SLICE],
                entries[start : start + RECORD_SLICE],
                strict=True,
            ):
                if raw is None:
                    continue
                state, attempt, *_ = split_entry(raw)
                if state != PENDING or device in chosen:
                    continue
                chosen.add(device)
                record_id = start_record_id(tid, device, attempt + 1)
                out.append(
                    Out(
                        self._topics.inbox,
                        device,
                        starts.encode(device, attempt + 1, record_id, now),
                    )
                )
            slices.append(out)
        # Slice k is recorded only after Kafka acknowledged it, while slice k + 1 is
        # already on its way: the produce and the recording overlap, and no single
        # script holds Redis for long.
        if not slices:
            return
        sending = asyncio.ensure_future(self._producer.send(slices[0], patient=True))
        try:
            for k in range(len(slices)):
                await sending
                if k + 1 < len(slices):
                    sending = asyncio.ensure_future(
                        self._producer.send(slices[k + 1], patient=True)
                    )
                at = cursor + k * RECORD_SLICE
                part = ids[k * RECORD_SLICE : (k + 1) * RECORD_SLICE]
                recorded = await self._state.release(tid, lease, at, at + len(part), wave, part)
                if recorded < 0:
                    log.warning(
                        "release not recorded: lease or cursor moved", extra={"task_id": tid}
                    )
                    return
                RELEASED_TOTAL.inc(recorded)
        finally:
            await sending  # produced but not recorded: the next holder releases it again

    async def _stop(
        self, tid: str, doc: TaskDoc, lease: str, rt: dict[str, str], idle: bool
    ) -> bool:
        if rt.get("cancel_done") != "1":
            states = [RELEASED, *(s.value for s in ACTIVE_JOB_STATES)]
            devices: set[str] = set()
            for state in states:
                members = await self._r.zrange(keys.task_state_index(tid, state), 0, -1)
                devices.update(m.decode() for m in members)
            # A replica that lost the lease may have produced the next batch unrecorded.
            cursor = int(rt.get("cursor", "0"))
            ahead = await self._r.lrange(keys.task_list(tid), cursor, cursor + MAX_BATCH - 1)
            devices.update(d.decode() for d in ahead)
            now = now_ms()
            await self._producer.send(
                (
                    Out(
                        self._topics.inbox,
                        d,
                        encode(JobCancelRecord(device_id=d, task_id=tid, at_ms=now)),
                    )
                    for d in sorted(devices)
                ),
                patient=True,
            )
            CANCELS_TOTAL.inc(len(devices))
            while (moved := await self._state.cancel_pending(tid, lease)) > 0:
                pass
            if moved < 0:
                return False
            await self._r.hset(keys.task_runtime(tid), "cancel_done", 1)
            counts = tally(await self._state.counts(tid))
            idle = counts.pending + counts.active == 0
        if idle:
            await self._finish(tid, doc)
        return False

    async def _finish(self, tid: str, doc: TaskDoc) -> None:
        if self._policies.of(tid, doc["policy"]).continuous:
            await self._joins.close(tid, followed(doc["targets"]))
        # A finished task is not rebuilt after a lost Redis (scheduler/task_rebuild.py); a
        # retry recorded its longer list (task_lists.record_retry).
        listed = max(doc["devices"], await self._r.llen(keys.task_list(tid)))
        await task_lists.forget(self._producer, self._topics, tid, listed)
        await self._r.srem(keys.package_users(doc["package_id"]), tid)
        await self._r.delete(keys.lease(tid))
        # Before leaving the active set, so that a start cut short by Redis is tried again.
        await self._rollbacks.on_finish(tid, doc)
        if self._devices_retention_ms:
            # Before leaving the active set: a retry (which keeps them) waits for that.
            await self._state.expire_devices(tid, now_ms() + self._devices_retention_ms)
        # Last: leaving the active set is what lets a retry start (Tasks.retry),
        # which adds the task to its package's users again.
        await self._r.srem(keys.ACTIVE_TASKS, tid)
        # And after: an operator's request that saw the task still active left it to us.
        await self._rollbacks.on_finish(tid, doc)
