"""Handlers for the two logs the scheduler reads, each with its own consumer group.

- inbox -> the device registry (versions, presence, last seen);
- job events -> per-task device states and counts (idempotent `TaskState.apply`),
  the device's current job and timeline, and a device-result notification when a
  device's job reaches a terminal state for the first time.
Each polled batch is decoded first, then applied with one script call per task (counts)
and one for the registry, in log order, instead of Redis round trips per record.
A record that cannot be decoded goes to the dead-letter topic with the reason and
never stops the partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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
from scheduler import keys, taskstate, timeline
from scheduler.bus import Out, Producer
from scheduler.devices import Registry
from scheduler.flush_mark import check_mark
from scheduler.notify import Notifier, device_result_event
from scheduler.taskdoc import load_task
from scheduler.taskstate import TaskState, Transition

log = logging.getLogger(__name__)
CONSUMED = metrics.counter("scheduler", "records_total", "Records consumed", ("topic", "outcome"))
# Applied job transitions (duplicates not counted): rollout progress and failure causes.
JOB_TRANSITIONS = metrics.counter(
    "scheduler", "job_transitions_total", "Job state changes applied", ("state", "cause")
)
_TYPE_CACHE_MAX = 10_000
_JOB_EVENT = frozenset({"job_event"})
_JOB_STATES = frozenset(s.value for s in JobState)
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


@dataclass(frozen=True, slots=True)
class Parsed:
    """A consumer batch sorted out: what to apply, in log order, and what to dead-letter."""

    items: list[Any]
    dead: list[DeadLetterRecord]
    skipped: int = 0
    positions: list[str] = field(default_factory=list)  # per item: its log position


def parse_inbox(records: Sequence[Any]) -> Parsed:
    """The batch's device reports and presence changes; the releases, cancels, downloads
    and timeouts the registry has no use for are skipped before decoding."""
    items: list[Any] = []
    dead: list[DeadLetterRecord] = []
    skipped = 0
    for record in records:
        value = record.value or b""
        if value.startswith(_NOT_FOR_REGISTRY):
            skipped += 1
            continue
        try:
            decoded = decode_inbox(value)
        except RecordError as exc:
            dead.append(dead_letter(record, exc))
            continue
        if isinstance(decoded, DeviceEventRecord | PresenceRecord):
            items.append(decoded)
        else:
            skipped += 1
    return Parsed(items, dead, skipped)


def parse_job_events(records: Sequence[Any]) -> Parsed:
    """The batch's job events (items: JobEventRecord, with their positions in the log);
    any other record is dead-lettered."""
    items: list[Any] = []
    positions: list[str] = []
    dead: list[DeadLetterRecord] = []
    for record in records:
        try:
            event: JobEventRecord = decode(record.value or b"", _JOB_EVENT)
        except RecordError as exc:
            dead.append(dead_letter(record, exc))
            continue
        if event.to_state not in _JOB_STATES:
            bad = RecordError(
                "bad_value", f"job_event.to_state={event.to_state!r} is not a job state"
            )
            dead.append(dead_letter(record, bad))
            continue
        items.append(event)
        positions.append(timeline.log_position(record.partition, record.offset))
    return Parsed(items, dead, positions=positions)


def by_task(events: Sequence[JobEventRecord]) -> dict[str, list[int]]:
    """Positions of the batch's events per task, in log order (a task's counts depend only
    on its own events, so each task's events are applied in one call)."""
    out: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        out.setdefault(event.task_id, []).append(i)
    return out


class InboxHandler:
    def __init__(self, registry: Registry, producer: Producer, topics: Topics) -> None:
        self._registry, self._producer, self._topics = registry, producer, topics

    async def __call__(self, records: Sequence[Any]) -> None:
        parsed = parse_inbox(records)
        await self._registry.observe(parsed.items)
        await self._producer.send(
            Out(self._topics.dead_letters, "scheduler", encode(d)) for d in parsed.dead
        )
        _count("inbox", ok=len(parsed.items), skipped=parsed.skipped, dead=len(parsed.dead))


class TaskTypes:
    """Each task's type, '' for a task Redis does not hold (another deployment's, or
    deleted): the tasks not seen yet read with one MGET. A task's type never changes, so
    it is kept, for up to `_TYPE_CACHE_MAX` tasks."""

    def __init__(self, r: redis.asyncio.Redis[bytes]) -> None:
        self._r = r
        self._known: dict[str, str] = {}

    async def of(self, tids: Iterable[str]) -> dict[str, str]:
        wanted = set(tids)
        missing = sorted(wanted - self._known.keys())
        if missing:
            raws = await self._r.mget([keys.task(tid) for tid in missing])
            if len(self._known) + len(missing) > _TYPE_CACHE_MAX:
                self._known.clear()
            for tid, raw in zip(missing, raws, strict=True):
                if raw is not None:
                    self._known[tid] = load_task(raw)["type"]
        return {tid: self._known.get(tid, "") for tid in wanted}


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
        self._types = TaskTypes(r)

    async def __call__(self, records: Sequence[Any]) -> None:
        # Not into an emptied Redis: the batch stays uncommitted for the rebuild's start.
        await check_mark(self._r)
        parsed = parse_job_events(records)
        events: list[JobEventRecord] = parsed.items
        types = await self._types.of(e.task_id for e in events)
        results = [0] * len(events)
        # A device result's notification, for each event that would end a job: the apply
        # script adds it to the webhooks' stream with the state change itself.
        notes = [
            device_result_event(e, JobState(e.to_state).device_status.value)
            if taskstate.bucket(e.to_state) in taskstate.FINISHED_BUCKETS
            else None
            for e in events
        ]
        for tid, positions in by_task(events).items():
            if not types[tid]:
                continue
            applied = await self._state.apply(
                tid,
                [
                    Transition(e.device_id, e.attempt, e.job_version, e.to_state, e.cause)
                    for e in (events[i] for i in positions)
                ],
                [_body(notes[i]) for i in positions],
            )
            for i, result in zip(positions, applied, strict=True):
                results[i] = result
        await self._registry.job_events([(e, types[e.task_id]) for e in events], parsed.positions)
        told: dict[str, dict[str, Any]] = {}  # by id: a batch may hold an event twice
        transitions: Counter[tuple[str, str]] = Counter()
        for event, result, note in zip(events, results, notes, strict=True):
            if result in (taskstate.APPLIED, taskstate.TERMINAL):
                transitions[event.to_state, "" if event.cause is None else str(event.cause)] += 1
            if note is not None and result in (taskstate.TERMINAL, taskstate.TERMINAL_AGAIN):
                told[note["id"]] = note
        await self._producer.send(
            Out(self._topics.dead_letters, "scheduler", encode(d)) for d in parsed.dead
        )
        await self._notifier.publish(list(told.values()))  # the stream has them already
        for (state, cause), n in transitions.items():
            JOB_TRANSITIONS.labels(state, cause).inc(n)
        _count("job_events", ok=len(events), skipped=0, dead=len(parsed.dead))
        if transitions:
            self._wake.set()


def _count(topic: str, *, ok: int, skipped: int, dead: int) -> None:
    for outcome, n in (("ok", ok), ("skipped", skipped), ("dead_letter", dead)):
        if n:
            CONSUMED.labels(topic, outcome).inc(n)


def _body(note: dict[str, Any] | None) -> str:
    return "" if note is None else orjson.dumps(note).decode()
