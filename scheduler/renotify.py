"""Notifications told again after Redis was emptied.

The webhooks' stream lives in Redis only: a notification not yet delivered when Redis was
lost would never reach the webhooks. Every notification is also on `ota.task-events`
(scheduler/notify.py), so a start that finds Redis emptied adds the topic's notifications
of the last `OTA_REBUILD_RENOTIFY_S` to the stream again, under their ids (receivers
deduplicate). A rebuilt task's device results are left out here: the task rebuild tells
them from its job events (scheduler/task_rebuild.py), which also hold a result whose topic
copy was never sent. A record that is not a notification of a known kind is skipped and
logged: the stream hands its body to the webhooks as it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

import orjson
import redis.asyncio
from kafka import TopicPartition

from ota.clock import now_ms
from ota.kafka_clients import make_consumer
from ota.kafka_consumer import read_to_end
from ota.settings import CommonSettings
from scheduler.notify import add_to_stream

log = logging.getLogger(__name__)
KINDS = frozenset({"task_status", "device_result"})
BATCH = 5_000  # notifications per Redis pipeline
POLL_MS = 500


def read_since(settings: CommonSettings, since_ms: int) -> list[bytes]:
    """The task-events topic's values stamped at or after `since_ms`, up to its end now
    (blocking: run it in an executor)."""
    topic = settings.topics.task_events
    consumer = make_consumer(settings, group_id=None, client_id="ota-scheduler-renotify")
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            return []
        read = read_to_end(consumer, parts, poll_ms=POLL_MS, since_ms=since_ms)
        return [r.value for _tp, records in read for r in records if r.value]
    finally:
        consumer.close()


def to_tell(values: list[bytes], rebuilt: Collection[str]) -> list[bytes]:
    """The notifications to add again, each id once, in the topic's order."""
    seen: set[str] = set()
    out: list[bytes] = []
    unreadable = 0
    for raw in values:
        try:
            note: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            note = None
        if not isinstance(note, dict) or note.get("kind") not in KINDS:
            unreadable += 1
            continue
        nid, tid = note.get("id"), note.get("task_id")
        if not isinstance(nid, str) or not isinstance(tid, str):
            unreadable += 1
            continue
        if nid in seen or (note["kind"] == "device_result" and tid in rebuilt):
            continue
        seen.add(nid)
        out.append(raw)
    if unreadable:
        log.warning(
            "task-events records that are no notification skipped", extra={"records": unreadable}
        )
    return out


async def renotify_recent(
    r: redis.asyncio.Redis[bytes],
    settings: CommonSettings,
    window_ms: int,
    rebuilt: Collection[str],
) -> int:
    """Add the last `window_ms` of notifications to the webhooks' stream again (see the
    module's text; `rebuilt`: the tasks whose device results the rebuild tells). How many."""
    if window_ms <= 0:
        return 0
    loop = asyncio.get_running_loop()
    values = await loop.run_in_executor(None, read_since, settings, now_ms() - window_ms)
    bodies = to_tell(values, rebuilt)
    for at in range(0, len(bodies), BATCH):
        pipe = r.pipeline(transaction=False)
        for body in bodies[at : at + BATCH]:
            add_to_stream(pipe, body)
        await pipe.execute()
    if bodies:
        log.warning(
            "notifications told again after Redis was emptied", extra={"count": len(bodies)}
        )
    return len(bodies)
