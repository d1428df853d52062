"""Notifications for applications: each task status change and each device result.

Every notification goes to the `ota.task-events` topic (key = task id) and to a Redis
stream that the webhook dispatcher delivers from (at-least-once: the stream entry is
acknowledged only after every webhook got it or gave up). Both carry the same JSON
body with a unique `id` that receivers deduplicate by.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio

from ota.clock import now_ms
from ota.records import new_id
from ota.settings import Topics
from scheduler import keys
from scheduler.bus import Out, Producer

STREAM_MAXLEN = 1_000_000


def task_status_event(task: dict[str, Any], previous: str | None) -> dict[str, Any]:
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


def device_result_event(
    task_id: str, device_id: str, state: str, device_status: str, cause: int | None, attempt: int
) -> dict[str, Any]:
    return {
        "v": 1,
        "kind": "device_result",
        "id": new_id(),
        "at_ms": now_ms(),
        "task_id": task_id,
        "device_id": device_id,
        "state": state,
        "status": device_status,
        "cause": cause,
        "attempt": attempt,
    }


class Notifier:
    def __init__(self, r: redis.asyncio.Redis[bytes], producer: Producer, topics: Topics) -> None:
        self._r, self._producer, self._topics = r, producer, topics

    async def emit(self, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        bodies = [orjson.dumps(e) for e in events]
        await self._producer.send(
            Out(self._topics.task_events, e["task_id"], body)
            for e, body in zip(events, bodies, strict=True)
        )
        pipe = self._r.pipeline(transaction=False)
        for body in bodies:
            pipe.xadd(keys.NOTIFY_STREAM, {"body": body}, maxlen=STREAM_MAXLEN, approximate=True)
        await pipe.execute()
