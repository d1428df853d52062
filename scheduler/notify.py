"""Notifications for applications: each task status change and each device result.

Every notification goes to the `ota.task-events` topic (key = task id) and to a Redis
stream that the webhook dispatcher delivers from (at-least-once: the stream entry is
acknowledged only after every webhook got it or gave up). Both carry the same JSON
body with a unique `id` that receivers deduplicate by.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio.client import Pipeline

from ota.records import JobEventRecord
from ota.settings import Topics
from scheduler import keys
from scheduler.bus import Out, Producer
from scheduler.taskdoc import TaskDoc
from scheduler.taskstate import NOTIFY_STREAM_MAXLEN


def task_status_event(task: TaskDoc, previous: str | None) -> dict[str, Any]:
    """The notification of a task's status change, made from the new document: its id
    comes from the task, both statuses and the document's `updated_ms`, so the same change
    is always told under the same id."""
    key = f"{task['id']}|{previous}|{task['status']}|{task['updated_ms']}"
    return {
        "v": 1,
        "kind": "task_status",
        "id": hashlib.sha256(key.encode()).hexdigest()[:32],
        "at_ms": task["updated_ms"],
        "task_id": task["id"],
        "status": task["status"],
        "previous": previous,
        "reason": task.get("reason", ""),
    }


def device_result_event(event: JobEventRecord, device_status: str) -> dict[str, Any]:
    """The notification of a job event that ended a device's job. Its id and time come
    from the event, so the same event applied again (a redelivery, or a replay after Redis
    lost its last writes) yields the same notification, which receivers deduplicate."""
    key = f"{event.task_id}|{event.device_id}|{event.attempt}|{event.job_version}|{event.to_state}"
    return {
        "v": 1,
        "kind": "device_result",
        "id": hashlib.sha256(key.encode()).hexdigest()[:32],
        "at_ms": event.at_ms,
        "task_id": event.task_id,
        "device_id": event.device_id,
        "state": event.to_state,
        "status": device_status,
        "cause": event.cause,
        "attempt": event.attempt,
    }


def add_to_stream(pipe: Pipeline[bytes], body: bytes) -> None:
    """Queue a notification's body on the webhooks' stream in `pipe`, the transaction or
    pipeline that makes the change it tells of."""
    pipe.xadd(keys.NOTIFY_STREAM, {"body": body}, maxlen=NOTIFY_STREAM_MAXLEN, approximate=True)


class Notifier:
    def __init__(self, producer: Producer, topics: Topics) -> None:
        self._producer, self._topics = producer, topics

    async def publish(self, events: Sequence[dict[str, Any]], *, patient: bool = False) -> None:
        """The task-events topic's copy of notifications the webhooks' stream already
        holds (written with the change they tell of); `patient`: see `Producer.send`."""
        if events:
            await self._producer.send(
                (Out(self._topics.task_events, e["task_id"], orjson.dumps(e)) for e in events),
                patient=patient,
            )
