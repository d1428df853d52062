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
import redis.asyncio

from ota.clock import now_ms
from ota.records import JobEventRecord, new_id
from ota.settings import Topics
from scheduler import keys
from scheduler.bus import Out, Producer
from scheduler.taskdoc import TaskDoc
from scheduler.taskstate import NOTIFY_STREAM_MAXLEN


def task_status_event(task: TaskDoc, previous: str | None) -> dict[str, Any]:
    return {
        "v": 1,
        "kind": "task_status",
        "id": new_id(),
        "at_ms": now_ms(),
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


class Notifier:
    def __init__(self, r: redis.asyncio.Redis[bytes], producer: Producer, topics: Topics) -> None:
        self._r, self._producer, self._topics = r, producer, topics

    async def emit(self, events: Sequence[dict[str, Any]]) -> None:
        """Tell applications: the task-events topic and the webhooks' stream."""
        if not events:
            return
        bodies = await self.publish(events)
        pipe = self._r.pipeline(transaction=False)
        for body in bodies:
            pipe.xadd(
                keys.NOTIFY_STREAM, {"body": body}, maxlen=NOTIFY_STREAM_MAXLEN, approximate=True
            )
        await pipe.execute()

    async def publish(self, events: Sequence[dict[str, Any]]) -> list[bytes]:
        """The task-events topic only (for notifications the stream already holds); the
        encoded bodies."""
        bodies = [orjson.dumps(e) for e in events]
        if bodies:
            await self._producer.send(
                Out(self._topics.task_events, e["task_id"], body)
                for e, body in zip(events, bodies, strict=True)
            )
        return bodies
