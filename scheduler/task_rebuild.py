"""Rebuild a running task's per-device states, counts and runtime after Redis was lost.

Both inputs are in Kafka: the device list recorded at creation or by the task's last
retry (scheduler/task_lists.py) and the task's job events (`ota.job-events`). Each
device takes its newest event (attempt, then job version: the rule `TaskState.apply`
follows), in the wave its place in the list was released in (a release never crosses a
wave's end), and the counts are summed from the entries, so they agree with them exactly
as the scripts keep them.
A retried task lists its retried devices twice; they take one entry each, in the retry's
wave (the last), pending again while their newest event is of the attempt they failed
at. The cursor stops at the first device still pending: the release skips the devices
after it that are not, and releases the others again under the same record id (a worker
ignores a start it already has), so no device is started twice. The events read
are those the job-event group had applied (its committed offsets); it applies the later
ones itself, with their notifications. Of the ones read, only the device results of the
last `OTA_REBUILD_RENOTIFY_S` are told again (`results_since`): their webhook deliveries
may have been pending in the stream Redis lost.

A continuous task's list is the recorded one, then the devices that joined it later and
were released (they have job events); scheduler/rebuild.py then has it take in its
current members again, so the devices that had joined and were not released yet join
again (its "removed" count starts again from 0).

Not rebuilt exactly, and so stopped as lost instead (scheduler/rebuild.py): a task with
no complete recorded list (one created before the list was recorded; a creation or a
retry whose recording was cut short), and one whose job events may be gone: a
partition of the topic whose first remaining record is newer than the task, after older
ones were deleted.
A paused task comes back paused by the operator: resuming it judges its current wave
again, so an approval or an override already given may be asked for again.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio
from kafka import TopicPartition

from ota.clock import now_ms
from ota.jobstates import JobState
from ota.kafka_clients import make_consumer
from ota.kafka_consumer import RecordConsumer, read_to_end
from ota.records import JobEventRecord
from ota.settings import CommonSettings
from scheduler import keys
from scheduler.consumers import parse_job_events
from scheduler.notify import add_to_stream, device_result_event
from scheduler.pacing import Hold
from scheduler.policy import parse_policy
from scheduler.task_lists import WRITE_CHUNK, lay_out
from scheduler.taskdoc import TaskDoc
from scheduler.taskstate import FINISHED_BUCKETS, PENDING, bucket
from scheduler.taskstatus import TaskStatus
from scheduler.waves import wave_ends

POLL_MS = 500
CLOCK_SLACK_MS = 300_000  # record times are the workers' clocks, a task's the scheduler's
NEVER_MS = 2**62  # a partition emptied by retention: no task can tell what it lost
LOCK_MS = 60_000  # one replica rebuilds a task; another waits, or takes over a crashed one
LOCK_POLL_S = 0.5
_FAILED = JobState.FAILED.value


@dataclass(frozen=True, slots=True)
class Latest:
    """A device's newest job event in a task."""

    attempt: int
    job_version: int
    state: str
    cause: int | None
    at_ms: int = 0

    def newer_than(self, other: Latest) -> bool:
        return (self.attempt, self.job_version) > (other.attempt, other.job_version)


@dataclass(frozen=True, slots=True)
class Rebuilt:
    entries: dict[str, str]  # devices with an event; the others are pending
    counts: dict[str, int]
    cursor: int
    wave: int


def rebuild(
    devices: Sequence[str],
    latest: Mapping[str, Latest],
    ends: Sequence[int],
    retried: Mapping[str, int] | None = None,
) -> Rebuilt:
    """The task's entries and counts from its list and its devices' newest events;
    `ends` as the reconciler computes them (scheduler.waves.wave_ends); `retried`: the
    devices of a retry's wave (the last), each with an attempt below the one that wave
    releases it at (scheduler/task_lists.py `retry_items`)."""
    again = retried or {}
    last_wave = len(ends) - 1  # a retry's: its devices are released in it
    entries: dict[str, str] = {}
    counts: Counter[str] = Counter()
    cursor: int | None = None
    seen: set[str] = set()
    for place, device in enumerate(devices):
        if device in seen:  # a retried device's second place: one entry per device
            continue
        seen.add(device)
        got, below = latest.get(device), again.get(device)
        if got is None or (below is not None and got.attempt <= below):
            # not released (again) yet: pending, as the release or the retry left it
            if below is not None:
                version = 0 if got is None else got.job_version
                entries[device] = f"{PENDING}|{below}|{version}||-1"
            counts[f"s:{PENDING}"] += 1
            cursor = place if cursor is None else cursor
            continue
        wave = last_wave if below is not None else bisect_right(ends, place)
        cause = "" if got.cause is None else str(got.cause)
        entries[device] = f"{got.state}|{got.attempt}|{got.job_version}|{cause}|{wave}"
        counts[f"s:{got.state}"] += 1
        if got.state == _FAILED and cause:
            counts[f"c:{cause}"] += 1
        counts[f"w{wave}:{bucket(got.state)}"] += 1
    at = len(devices) if cursor is None else cursor
    if again:
        return Rebuilt(entries, dict(counts), at, last_wave)
    return Rebuilt(entries, dict(counts), at, bisect_right(ends, at - 1) if at else 0)


@dataclass(frozen=True, slots=True)
class Replayed:
    latest: dict[str, dict[str, Latest]]  # task id -> device -> newest event
    complete_from_ms: int  # a task created before this may have lost events (0: none lost)
    last_at_ms: int  # the newest event's time: about when the events stopped being applied


def replay(
    settings: CommonSettings, group_id: str, tids: Collection[str], since_ms: int
) -> Replayed:
    """Read `ota.job-events` up to the offsets the scheduler's job-event consumer group
    (`group_id`) committed, keeping each device's newest event in the tasks `tids`
    (created at `since_ms` or later; a blocking call: run it in an executor). The group
    applies the events after those, with their notifications, once the scheduler runs.
    The read starts at `since_ms` (less `CLOCK_SLACK_MS`) when every partition still holds
    all it got from then on, else at the topic's start."""
    topic = settings.topics.job_events
    needles = [b'"task_id":"%s"' % t.encode() for t in tids]
    latest: dict[str, dict[str, Latest]] = {t: {} for t in tids}
    complete_from = last_at = 0
    consumer = make_consumer(settings, group_id=group_id, client_id="ota-scheduler-task-rebuild")
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts or not needles:
            return Replayed(latest, 0, 0)
        ends = {tp: consumer.committed(tp) or 0 for tp in parts}  # never joins the group
        # From the beginning when retention took records that late: judged below.
        start: int | None = since_ms - CLOCK_SLACK_MS
        if not kept_since(consumer, parts, since_ms - CLOCK_SLACK_MS):
            start = None
        first: dict[TopicPartition, tuple[int, int]] = {}
        read = read_to_end(consumer, parts, poll_ms=POLL_MS, since_ms=start, until=ends)
        for tp, records in read:
            first.setdefault(tp, (records[0].offset, records[0].timestamp))
            wanted = [r for r in records if any(n in (r.value or b"") for n in needles)]
            for event in parse_job_events(wanted).items:
                seen = latest.get(event.task_id)
                if seen is None:
                    continue
                got = Latest(
                    event.attempt, event.job_version, event.to_state, event.cause, event.at_ms
                )
                last_at = max(last_at, event.at_ms)
                old = seen.get(event.device_id)
                if old is None or got.newer_than(old):
                    seen[event.device_id] = got
        for tp, end in ends.items():
            offset, stamp = first.get(tp, (end, 0))
            if start is None and offset > 0:  # records were deleted, none newer than it
                complete_from = max(complete_from, stamp if tp in first else NEVER_MS)
    finally:
        consumer.close()
    return Replayed(latest, complete_from, last_at)


def kept_since(consumer: RecordConsumer, parts: list[TopicPartition], since_ms: int) -> bool:
    """Whether every partition still holds every record stamped `since_ms` or later.
    Retention deletes the oldest records first, so a partition that lost some still does
    when a record older than `since_ms` is left in it."""
    firsts = consumer.offsets_for_times(dict.fromkeys(parts, 0))
    froms = consumer.offsets_for_times(dict.fromkeys(parts, since_ms))
    ends = consumer.end_offsets(parts)
    for tp in parts:
        first, at = firsts.get(tp), froms.get(tp)
        low = ends[tp] if first is None else first.offset
        if low == 0:
            continue  # nothing deleted
        if first is None or (at is not None and at.offset == low):
            return False  # emptied, or its oldest record kept is already that late
    return True


def results_since(tid: str, latest: Mapping[str, Latest], since_ms: int) -> list[bytes]:
    """The device-result notifications of the devices whose newest event ended their job
    at or after `since_ms`, as the apply script adds them to the webhooks' stream."""
    notes = []
    for device, got in latest.items():
        if got.at_ms < since_ms or bucket(got.state) not in FINISHED_BUCKETS:
            continue
        event = JobEventRecord(
            device_id=device,
            task_id=tid,
            attempt=got.attempt,
            job_version=got.job_version,
            from_state=got.state,
            to_state=got.state,
            cause=got.cause,
            at_ms=got.at_ms,
        )
        status = JobState(got.state).device_status.value
        notes.append(orjson.dumps(device_result_event(event, status)))
    return notes


async def resume(
    r: redis.asyncio.Redis[bytes],
    owner: str,
    raw: bytes,
    doc: TaskDoc,
    devices: Sequence[str],
    latest: Mapping[str, Latest],
    renotify_from_ms: int,
    *,
    joined: int = 0,
    retried: Mapping[str, int] | None = None,
) -> int | None:
    """Lay a running task's rebuilt state out in Redis, then put its document (`raw`, read
    as `doc`) back and list it for the reconciler, in one transaction (the document is
    what says a task is restored), with the device results from `renotify_from_ms` on
    added to the webhooks' stream again (same ids: receivers deduplicate). `joined`: how
    many of `devices` joined a continuous task after its creation (its count); `retried`:
    a retry's devices, as `rebuild` takes them. How many results were added; None
    when another replica restored the task meanwhile."""
    tid = doc["id"]
    lock = keys.task_rebuild_lock(tid)
    while not await r.set(lock, owner, nx=True, px=LOCK_MS):
        if await r.exists(keys.task(tid)):
            return None
        await asyncio.sleep(LOCK_POLL_S)
    try:
        if await r.exists(keys.task(tid)):
            return None
        ends = wave_ends(doc["devices"], parse_policy(doc["policy"], None).waves)
        ends[-1] = max(ends[-1], len(devices))
        built = rebuild(devices, latest, ends, retried)
        counts = built.counts | ({"joined": joined} if joined else {})
        await lay_out(r, tid, devices, built.entries)
        paused = TaskStatus(doc["status"]) is TaskStatus.PAUSED
        runtime = {
            "cursor": built.cursor,
            "wave": built.wave,
            "hold": Hold.MANUAL if paused else Hold.NONE,
            "stopping": 0,
            "cancel_done": 0,
            "rebuilt_ms": now_ms(),
        }
        pipe = r.pipeline(transaction=True)
        pipe.delete(keys.task_counts(tid), keys.task_runtime(tid))
        if counts:
            pipe.hset(keys.task_counts(tid), mapping=counts)  # type: ignore[arg-type]
        pipe.hset(keys.task_runtime(tid), mapping=runtime)  # type: ignore[arg-type]
        pipe.set(keys.task(tid), raw)
        pipe.zadd(keys.TASKS, {tid: doc["created_ms"]})
        pipe.sadd(keys.package_users(doc["package_id"]), tid)
        pipe.sadd(keys.ACTIVE_TASKS, tid)
        # Before the document: a start cut short in between tells them again (same ids).
        notes = results_since(tid, latest, renotify_from_ms)
        for at in range(0, len(notes), WRITE_CHUNK):
            stream = r.pipeline(transaction=False)
            for note in notes[at : at + WRITE_CHUNK]:
                add_to_stream(stream, note)
            await stream.execute()
        await pipe.execute()
    finally:
        await r.delete(lock)
    return len(notes)
