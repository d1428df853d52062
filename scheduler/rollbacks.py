"""Rollback: a linked task that installs a task's `rollback_package_id` on the devices
the task upgraded (and, with `rollback_on_failed_confirmation`, on those whose health
confirmation failed).

A rollback starts once the task's devices have all finished, so that it sees every
upgraded device and never races the task's own jobs: an operator's request on a
running task stops it first (like a cancel) and leaves the request in the task's
runtime hash; so does an abort with `rollback_on_abort`. The reconciler's wrap-up of a
finished task (`on_finish`) then starts the rollback; a request on a task whose devices
have all finished starts it at once.

One rollback per task: its id is claimed with HSETNX in the task's runtime hash before
the task is created, so concurrent requests (API replicas, the reconciler) make one;
every later request answers that one. The link is stored on both documents:
`rollback_task_id` on the task, `rollback_of` on the rollback, so it survives a rebuild
from the tasks topic.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio

from ota.jobstates import JobState
from ota.records import new_id
from ota.settings import Topics
from scheduler import keys
from scheduler.bus import Producer
from scheduler.errors import Conflict, NotFound, SchedulerError
from scheduler.policy import parse_policy
from scheduler.rollback_plan import RollbackOf, rollback_policy, rolled_back_by_cause
from scheduler.task_retention import refuse_if_gone
from scheduler.taskdoc import TaskDoc
from scheduler.tasks import CHUNK, LIST_TTL_S, Tasks
from scheduler.taskstate import split_entry
from scheduler.taskstatus import ACTIVE as RUNNING
from scheduler.taskstatus import TaskStatus

log = logging.getLogger(__name__)

# Fields of the task's runtime hash (keys.task_runtime).
REQUESTED = "rollback"  # "1": roll back the upgraded devices when the task wraps up
CLAIM = "rollback_task_id"  # the rollback task's id, set once


class Rollbacks:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        tasks: Tasks,
        producer: Producer,
        topics: Topics,
        wake: asyncio.Event,
    ) -> None:
        self._r, self._tasks, self._producer, self._topics = r, tasks, producer, topics
        self._wake = wake

    async def request(self, tid: str) -> tuple[dict[str, Any], int]:
        """An operator's rollback: (body, HTTP status). 201 created now, 200 the task's
        existing rollback, 202 accepted: it starts once the task's devices finish."""
        doc = await self._tasks.doc(tid)
        if doc.get("rollback_task_id") or await self._r.hget(keys.task_runtime(tid), CLAIM):
            return await self._answer(tid, created=False)
        if parse_policy(doc["policy"], None).rollback_package_id is None:
            raise Conflict(
                f"task {tid} names no policy.rollback_package_id to roll back to",
                code="no_rollback_package",
            )
        if TaskStatus(doc["status"]) in RUNNING:
            try:
                await self._tasks.transition(
                    tid,
                    RUNNING,
                    TaskStatus.STOPPED,
                    "stopped for a rollback by operator",
                    {"stopping": 1, REQUESTED: 1},
                )
                self._wake.set()
                return await self._answer(tid, created=False)
            except Conflict:
                pass  # it finished meanwhile: roll back what it did
        progress = (await self._tasks.view(tid))["progress"]
        if progress["finished"] < progress["total"]:
            # A stopped task whose devices still finish: its wrap-up starts the rollback.
            # The reconciler looks for the request again after taking the task off the
            # active set, so a task seen active here is left to it; one seen inactive is
            # ours (a claim settles a race with that second look).
            await self._r.hset(keys.task_runtime(tid), REQUESTED, 1)
            if await self._r.sismember(keys.ACTIVE_TASKS, tid):
                return await self._answer(tid, created=False)
        # Every device finished: the rollback sees them all, whether or not the reconciler
        # has wrapped the task up yet; started here, not left to its wrap-up.
        try:
            created = await self.start(tid, upgraded=True)
        except SchedulerError:
            await self._r.hdel(keys.task_runtime(tid), REQUESTED)
            raise
        if created is None:
            if await self._r.hget(keys.task_runtime(tid), CLAIM):
                return await self._answer(tid, created=False)  # the reconciler's, underway
            await self._r.hdel(keys.task_runtime(tid), REQUESTED)
            raise Conflict(
                f"task {tid} upgraded no devices to roll back", code="nothing_to_roll_back"
            )
        return await self._answer(tid, created=True)

    async def on_finish(self, tid: str, doc: TaskDoc) -> None:
        """The reconciler's wrap-up of a finished task: start its rollback if one was
        asked for (operator, abort) or failed confirmations call for one."""
        requested, claimed = await self._r.hmget(keys.task_runtime(tid), [REQUESTED, CLAIM])
        if claimed or doc.get("rollback_task_id"):
            return
        policy = parse_policy(doc["policy"], None)
        if requested != b"1" and not policy.rollback_on_failed_confirmation:
            return
        try:
            await self.start(tid, upgraded=requested == b"1")
        except SchedulerError as exc:  # e.g. the rollback package was deleted since
            log.warning("rollback not started", extra={"task_id": tid, "why": exc.message})

    async def start(self, tid: str, *, upgraded: bool) -> dict[str, Any] | None:
        """Create the rollback task now (every device of the task finished), over the
        upgraded devices when asked for (operator, abort) and those whose confirmation
        failed when the policy says so; its view, the existing one's if another caller
        won the claim (None while that one is being created), None if no device needs it."""
        doc = await self._tasks.doc(tid)
        policy = parse_policy(doc["policy"], None)
        assert policy.rollback_package_id is not None
        await refuse_if_gone(self._r, tid, Conflict)
        devices = await self._devices(tid, upgraded, policy.rollback_on_failed_confirmation)
        if not devices:
            return None
        rid = new_id()
        if not await self._r.hsetnx(keys.task_runtime(tid), CLAIM, rid):
            return await self._linked(tid, doc)
        list_id = new_id()
        list_key = keys.target_list(list_id)
        try:
            for at in range(0, len(devices), CHUNK):
                await self._r.rpush(list_key, *devices[at : at + CHUNK])
            await self._r.expire(list_key, LIST_TTL_S)
            body = {
                "name": f"rollback of {doc['name'] or tid}"[:128],
                "type": doc["type"],
                "package_id": policy.rollback_package_id,
                "targets": {"list_id": list_id},
                "policy": rollback_policy(doc["policy"]),
            }
            view, _ = await self._tasks.create(
                body, RollbackOf(rid, tid, doc["package"]["version"])
            )
        except SchedulerError as exc:
            await self._r.hdel(keys.task_runtime(tid), CLAIM)
            raise Conflict(
                f"the rollback of task {tid} could not start: {exc.message}",
                code="rollback_not_started",
            ) from exc
        finally:
            await self._r.delete(list_key)
        await self._link(tid, rid)
        log.info("rollback started", extra={"task_id": tid, "rollback_task_id": rid})
        return view

    async def summary(self, view: dict[str, Any]) -> dict[str, Any]:
        """A task's view with its rollback's status and progress, when it has one."""
        rid = view.get("rollback_task_id")
        if rid:
            try:
                linked = await self._tasks.view(rid)
            except NotFound:
                return view
            view["rollback"] = {
                "id": rid,
                "status": linked["status"],
                "progress": linked["progress"],
            }
        return view

    async def _devices(self, tid: str, upgraded: bool, failed_confirmation: bool) -> list[str]:
        out: list[str] = []
        if upgraded:
            index = keys.task_state_index(tid, JobState.SUCCEEDED.value)
            out.extend(d.decode() for d in await self._r.zrange(index, 0, -1))
        if failed_confirmation:
            index = keys.task_state_index(tid, JobState.FAILED.value)
            failed = [d.decode() for d in await self._r.zrange(index, 0, -1)]
            for at in range(0, len(failed), CHUNK):
                part = failed[at : at + CHUNK]
                entries = await self._r.hmget(keys.task_devices(tid), part)
                for device, raw in zip(part, entries, strict=True):
                    if raw is not None and rolled_back_by_cause(split_entry(raw)[3], True):
                        out.append(device)
        return sorted(out)

    async def _linked(self, tid: str, doc: TaskDoc) -> dict[str, Any] | None:
        rid = (
            doc.get("rollback_task_id")
            or (await self._r.hget(keys.task_runtime(tid), CLAIM) or b"").decode()
        )
        if not rid:
            return None
        try:
            return await self._tasks.view(rid)
        except NotFound:  # claimed, being created
            return None

    async def _answer(self, tid: str, *, created: bool) -> tuple[dict[str, Any], int]:
        rollback = await self._linked(tid, await self._tasks.doc(tid))
        body = {"task": await self.summary(await self._tasks.view(tid)), "rollback_task": rollback}
        return body, 201 if created else 200 if rollback is not None else 202

    async def _link(self, tid: str, rid: str) -> None:
        """Record the rollback on the task's document and publish the document."""
        await self._tasks.update(tid, lambda doc: doc.update({"rollback_task_id": rid}))
