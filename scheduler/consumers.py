"""Handlers for the two logs the scheduler reads, each with its own consumer group.

- inbox -> the device registry (versions, presence, last seen);
- job events -> per-task device states and counts (idempotent `TaskState.apply`),
  the device's current job and timeline, and a device-result notification when a
  device's job reaches a terminal state for the first time.
A record that cannot be decoded goes to the dead-letter topic with the reason and
never stops the partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio

from ota import metrics
from ota.jobstates import JobState
from ota.records import (
    FORMAT_VERSION,
    DeadLetterRecord,
    DeviceEventRecord,
    JobEventRecord,
    PresenceRecord,
    RecordError,
    decode,
    decode_inbox,
    encode,
)
from ota.settings import Topics
from scheduler import keys
from scheduler.bus import Out, Producer
from scheduler.devices import Registry
from scheduler.notify import Notifier, device_result_event
from scheduler.taskstate import TaskState

log = logging.getLogger(__name__)
CONSUMED = metrics.counter("scheduler", "records_total", "Records consumed", ("topic", "outcome"))
# Applied job transitions (duplicates not counted): rollout progress and failure causes.
JOB_TRANSITIONS = metrics.counter(
    "scheduler", "job_transitions_total", "Job state changes applied", ("state", "cause")
)
_TYPE_CACHE_MAX = 10_000
# Inbox records the registry has no use for, recognised by the prefix `ota.records.encode`
# writes, so the scheduler's own releases are not decoded again (the workers validate them).
_NOT_FOR_REGISTRY = tuple(
    b'{"v":%d,"kind":"%s",' % (FORMAT_VERSION, kind.encode())
    for kind in ("job_start", "job_cancel", "download", "timeout")
)


def dead_letter(record: Any, exc: RecordError) -> DeadLetterRecord:
    return DeadLetterRecord(
        source="scheduler",
        reason=exc.reason,
        message=exc.message,
        raw_b64=DeadLetterRecord.raw_bytes(record.value or b""),
        origin=f"{record.topic}/{record.partition}/{record.offset}",
        key=record.key.decode(errors="replace") if record.key else None,
    )


class InboxHandler:
    def __init__(self, registry: Registry, producer: Producer, topics: Topics) -> None:
        self._registry, self._producer, self._topics = registry, producer, topics

    async def __call__(self, records: Sequence[Any]) -> None:
        dead = []
        for record in records:
            if (record.value or b"").startswith(_NOT_FOR_REGISTRY):
                CONSUMED.labels("inbox", "skipped").inc()
                continue
            try:
                decoded = decode_inbox(record.value or b"")
            except RecordError as exc:
                dead.append(dead_letter(record, exc))
                CONSUMED.labels("inbox", "dead_letter").inc()
                continue
            if isinstance(decoded, DeviceEventRecord | PresenceRecord):
                await self._registry.observe(decoded)
            CONSUMED.labels("inbox", "ok").inc()
        await self._producer.send(
            Out(self._topics.dead_letters, "scheduler", encode(d)) for d in dead
        )


class JobEventHandler:
    def __init__(
        self,
        r: redis.asyncio.Redis[bytes],
        state: TaskState,
        registry: Registry,
        notifier: Notifier,
        producer: Producer,
        topics: Topics,
        wake: asyncio.Event,
    ) -> None:
        self._r, self._state, self._registry = r, state, registry
        self._notifier, self._producer, self._topics, self._wake = notifier, producer, topics, wake
        self._types: dict[str, str] = {}

    async def _task_type(self, tid: str) -> str:
        if tid not in self._types:
            raw = await self._r.get(keys.task(tid))
            if raw is None:
                return ""  # a task of another scheduler deployment, or deleted
            if len(self._types) >= _TYPE_CACHE_MAX:
                self._types.clear()
            self._types[tid] = orjson.loads(raw)["type"]
        return self._types[tid]

    async def __call__(self, records: Sequence[Any]) -> None:
        dead, notes = [], []
        changed = False
        for record in records:
            try:
                event: JobEventRecord = decode(record.value or b"", frozenset({"job_event"}))
                state = JobState(event.to_state)
            except RecordError as exc:
                dead.append(dead_letter(record, exc))
                CONSUMED.labels("job_events", "dead_letter").inc()
                continue
            except ValueError:
                bad = RecordError(
                    "bad_value", f"job_event.to_state={event.to_state!r} is not a job state"
                )
                dead.append(dead_letter(record, bad))
                CONSUMED.labels("job_events", "dead_letter").inc()
                continue
            task_type = await self._task_type(event.task_id)
            if task_type:
                result = await self._state.apply(
                    event.task_id,
                    event.device_id,
                    event.attempt,
                    event.job_version,
                    state.value,
                    event.cause,
                )
                changed |= result > 0
                if result > 0:
                    cause = "" if event.cause is None else str(event.cause)
                    JOB_TRANSITIONS.labels(state.value, cause).inc()
                if result == 2:
                    notes.append(
                        device_result_event(
                            event.task_id,
                            event.device_id,
                            state.value,
                            state.device_status.value,
                            event.cause,
                            event.attempt,
                        )
                    )
            await self._registry.job_event(event, task_type)
            CONSUMED.labels("job_events", "ok").inc()
        await self._producer.send(
            Out(self._topics.dead_letters, "scheduler", encode(d)) for d in dead
        )
        await self._notifier.emit(notes)
        if changed:
            self._wake.set()
