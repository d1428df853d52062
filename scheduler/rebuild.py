"""Restore the control-plane catalog from its compacted topics into Redis at start-up.

Packages (`ota.packages`), task documents (`ota.tasks`), groups and tags
(`ota.devices`), stored API keys (`ota.api-keys`) and webhooks (`ota.webhooks`, their
secrets sealed: scheduler/webhook_record.py) are recorded in Kafka first; when Redis was
lost or replaced, this puts back whatever Redis lacks. It only adds what is missing, so
every replica may run it on every start. Webhooks are made to agree both ways
(`Webhooks.restore`: a record that cannot be opened is logged and skipped, a tombstone
finishes its delete, a registration the topic lacks is recorded).
A running task's per-device states and runtime are rebuilt from its recorded device list
and its job events (scheduler/task_rebuild.py); a continuous one's list also takes the
devices that joined it, and it takes its current members in again. One that cannot be
rebuilt (see there) is stopped with `LOST_REASON` by `stop_lost` (the change is published
and notified like any other; `keys.LOST_TASKS` keeps the ones still to stop across a
crash), its device list and retry answering `task_devices_lost`, like a finished task's.
A webhook's delivery log is not restored; after Redis was emptied the last notifications
on `ota.task-events` go to the webhooks' stream again (scheduler/renotify.py).
`keys.RESTORED`, set last, tells a running scheduler that Redis was emptied under it
(scheduler/flush_mark.py).
Device credentials, in a store of their own, are put back by scheduler/credential_log.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio
from kafka import TopicPartition

from ota.clock import now_ms
from ota.kafka_clients import make_consumer
from ota.kafka_consumer import read_to_end
from ota.settings import CommonSettings
from scheduler import keys
from scheduler.errors import Conflict, NotFound
from scheduler.flush_mark import set_mark
from scheduler.joins import Joins
from scheduler.matching import followed
from scheduler.policy import parse_policy
from scheduler.renotify import renotify_recent
from scheduler.settings import SchedulerSettings
from scheduler.task_lists import assemble
from scheduler.task_rebuild import NEVER_MS, Latest, replay, resume
from scheduler.taskdoc import TaskDoc, load_task
from scheduler.tasks import Tasks
from scheduler.taskstatus import FINISHED, TaskStatus
from scheduler.webhooks import Webhooks

log = logging.getLogger(__name__)
POLL_MS = 500
UNFINISHED = frozenset(TaskStatus) - FINISHED


def read_latest(
    settings: CommonSettings, topics: Iterable[str]
) -> dict[str, dict[str, bytes | None]]:
    """The last value of every key of each topic, read from the start to the current end."""
    consumer = make_consumer(settings, group_id=None, client_id="ota-scheduler-rebuild")
    latest: dict[str, dict[str, bytes | None]] = {}
    try:
        parts = []
        for topic in topics:
            latest[topic] = {}
            parts += [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            return latest
        for tp, records in read_to_end(consumer, parts, poll_ms=POLL_MS):
            for record in records:
                if record.key is not None:
                    latest[tp.topic][record.key.decode()] = record.value
    finally:
        consumer.close()
    return latest


LOST_REASON = (
    "stopped: Redis lost this task's runtime and per-device states, and its document came "
    "back from Kafka; each device's jobs are in the job-events topic, and a new task for the "
    "same targets upgrades the devices still to do (those on the target version succeed at once)"
)


async def stop_lost(r: redis.asyncio.Redis[bytes], tasks: Tasks) -> int:
    """Stop the running tasks `restore` put back without their runtime; how many."""
    stopped = 0
    for raw in await r.smembers(keys.LOST_TASKS):
        tid = raw.decode()
        try:
            await tasks.transition(tid, UNFINISHED, TaskStatus.STOPPED, LOST_REASON)
            log.warning("task stopped: its runtime was lost with Redis", extra={"task_id": tid})
            stopped += 1
        except (Conflict, NotFound):
            pass  # another replica's start stopped it first
        await r.srem(keys.LOST_TASKS, tid)
    return stopped


async def restore(
    r: redis.asyncio.Redis[bytes], scheduler: SchedulerSettings, webhooks: Webhooks
) -> dict[str, int]:
    """Put back what Redis lacks (for webhooks, `Webhooks.restore`; a running task's
    runtime, scheduler/task_rebuild.py). The running tasks that cannot be rebuilt are left
    in `keys.LOST_TASKS` for `stop_lost`. Marks Redis restored (`keys.RESTORED`) last."""
    settings = scheduler.common
    topics = settings.topics
    emptied = not await r.exists(keys.RESTORED)  # set last, below
    latest = await asyncio.get_running_loop().run_in_executor(
        None,
        read_latest,
        settings,
        (topics.packages, topics.tasks, topics.devices, topics.api_keys, topics.webhooks),
    )
    restored = {"packages": 0, "tasks": 0, "groups": 0, "labels": 0, "api_keys": 0}
    for pid, raw in latest[topics.packages].items():
        if raw is None or await r.exists(keys.package(pid)):
            continue
        doc: dict[str, Any] = orjson.loads(raw)
        pipe = r.pipeline(transaction=True)
        pipe.set(keys.package(pid), raw)
        pipe.zadd(keys.PACKAGES, {pid: doc["created_ms"]})
        pipe.sadd(keys.package_blob_refs(doc["sha256"]), pid)
        dedupe = keys.package_dedupe(doc["sha256"], doc["type"], doc["version"], doc["product"])
        pipe.set(dedupe, pid, nx=True)
        await pipe.execute()
        restored["packages"] += 1
    running: dict[str, tuple[bytes, TaskDoc]] = {}
    for tid, raw in latest[topics.tasks].items():
        if raw is None or await r.exists(keys.task(tid)):
            continue
        task = load_task(raw)
        if TaskStatus(task["status"]) in FINISHED:
            await _put_back_lost(r, raw, task)
        else:
            running[tid] = (raw, task)
        restored["tasks"] += 1
    resumed = await _resume_running(r, scheduler, running)
    restored["tasks_resumed"] = len(resumed)
    for key, raw in latest[topics.devices].items():
        if key.startswith("group:"):
            if raw is not None:
                restored["groups"] += await r.sadd(keys.GROUPS, key[len("group:") :])
            continue
        if raw is None:
            continue
        labels = orjson.loads(raw)
        pipe = r.pipeline(transaction=False)
        pipe.zadd(keys.DEVICES, {key: 0})
        for group in labels.get("groups", []):
            pipe.sadd(keys.group(group), key)
        for tag in labels.get("tags", []):
            pipe.sadd(keys.tag(tag), key)
            pipe.sadd(keys.TAGS, tag)
        added = await pipe.execute()
        restored["labels"] += int(any(added[1:]))
    # After the groups and tags: a rebuilt continuous task takes its current members in.
    for tid in resumed:
        await _follow_again(r, running[tid][1])
    for kid, raw in latest[topics.api_keys].items():
        if raw is not None:  # a tombstone: revoked
            restored["api_keys"] += await r.hsetnx(keys.API_KEYS, kid, raw)
    restored |= await webhooks.restore(latest[topics.webhooks])
    if emptied:
        window = scheduler.rebuild_renotify_ms
        restored["renotified"] = await renotify_recent(r, settings, window, resumed)
    if any(restored.values()):
        log.warning("restored the catalog from Kafka", extra=restored)
    await set_mark(r)
    return restored


async def _put_back_lost(r: redis.asyncio.Redis[bytes], raw: bytes, task: TaskDoc) -> None:
    """A task's document (`raw`, read as `task`) without its runtime; a running one is
    listed to be stopped."""
    tid = task["id"]
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.task_runtime(tid), "lost_ms", now_ms())
    if TaskStatus(task["status"]) not in FINISHED:
        pipe.sadd(keys.LOST_TASKS, tid)
    pipe.set(keys.task(tid), raw)  # last: a document in Redis is a task restored
    pipe.zadd(keys.TASKS, {tid: task["created_ms"]})
    await pipe.execute()


def _joined(listed: list[str], latest: dict[str, Latest]) -> list[str]:
    """A continuous task's devices that joined after its creation and were released (they
    have job events), oldest event first, as the release list had them after the others."""
    known = set(listed)
    return sorted((d for d in latest if d not in known), key=lambda d: (latest[d].at_ms, d))


async def _follow_again(r: redis.asyncio.Redis[bytes], doc: TaskDoc) -> None:
    """A rebuilt open continuous task queues its current candidates (`Joins.requeue`)."""
    if parse_policy(doc["policy"], None).open_at(now_ms()):
        queued = await Joins(r).requeue(doc["id"], followed(doc["targets"]))
        log.warning(
            "continuous task re-checks its devices", extra={"task_id": doc["id"], "queued": queued}
        )


async def _resume_running(
    r: redis.asyncio.Redis[bytes],
    scheduler: SchedulerSettings,
    running: dict[str, tuple[bytes, TaskDoc]],
) -> list[str]:
    """Rebuild the running tasks that can be (their recorded list is whole, their job
    events all kept); put the others back to be stopped as lost. The ones resumed.
    A continuous task's list is the recorded one, then the devices that joined later and
    have job events; the ones that joined and were not released yet join again when
    `_follow_again` queues them."""
    if not running:
        return []
    loop = asyncio.get_running_loop()
    settings = scheduler.common
    topic = settings.topics.task_devices
    recorded = await loop.run_in_executor(None, read_latest, settings, (topic,))
    lists = assemble(recorded[topic])
    whole = {
        tid
        for tid, (_, task) in running.items()
        if tid in lists and lists[tid].whole(task["devices"])
    }
    oldest = min((running[tid][1]["created_ms"] for tid in whole), default=0)
    replayed = await loop.run_in_executor(
        None, replay, settings, scheduler.jobs_group, whole, oldest
    )
    # Results applied shortly before the loss may not have reached the webhooks yet.
    window = scheduler.rebuild_renotify_ms
    renotify_from = replayed.last_at_ms - window if window else NEVER_MS
    resumed: list[str] = []
    for tid, (raw, task) in running.items():
        if tid not in whole or task["created_ms"] < replayed.complete_from_ms:
            await _put_back_lost(r, raw, task)
            continue
        listed = lists[tid].ids
        joined = []
        if parse_policy(task["policy"], None).continuous:
            joined = _joined(listed, replayed.latest[tid])
        told = await resume(
            r,
            scheduler.instance_id,
            raw,
            task,
            [*listed, *joined],
            replayed.latest[tid],
            renotify_from,
            joined=len(joined),
            retried=lists[tid].retried,
        )
        if told is not None:
            resumed.append(tid)
            log.warning("task rebuilt from Kafka", extra={"task_id": tid, "renotified": told})
    return resumed
