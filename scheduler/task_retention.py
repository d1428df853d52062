"""How long a finished task keeps its per-device states (`OTA_TASK_DEVICES_RETENTION_S`).

A task's document, counts and waves stay for as long as the task; its per-device states,
release list and state indexes cost about 220 bytes per device and task, so a fleet that
runs task after task would grow without end. Once the reconciler wraps a task up they
expire after the retention (`TaskState.expire_devices`); a retry within it keeps them
again. Past it, the device list, a retry and a rollback are refused with
`task_devices_expired`, which says where each device's jobs still are; after a lost Redis
(the task's document restored from Kafka, its states not) with `task_devices_lost`.
"""

from __future__ import annotations

import datetime as dt

import redis.asyncio

from ota.clock import now_ms
from scheduler import keys
from scheduler.errors import SchedulerError

EXPIRED = "task_devices_expired"
LOST = "task_devices_lost"


async def gone(r: redis.asyncio.Redis[bytes], tid: str) -> tuple[str, str] | None:
    """Why the task's per-device states are not held, as (error code, message): past the
    retention, or lost with Redis (scheduler/rebuild.py); None while they are held."""
    pipe = r.pipeline(transaction=False)
    pipe.hmget(keys.task_runtime(tid), ["devices_expire_ms", "lost_ms"])
    pipe.exists(keys.task_devices(tid))
    (expire_ms, lost_ms), held = await pipe.execute()
    if held:
        return None
    if lost_ms is not None:
        return LOST, (
            f"task {tid}'s per-device states were lost with Redis (its document came back "
            f"from Kafka at {_utc(int(lost_ms))}); each device's jobs are in the job-events "
            "topic for that topic's retention"
        )
    if expire_ms is not None and int(expire_ms) <= now_ms():  # else it never had devices
        return EXPIRED, (
            f"task {tid}'s per-device states passed their retention at {_utc(int(expire_ms))} "
            "(OTA_TASK_DEVICES_RETENTION_S); its counts remain, and each device's jobs are in "
            "the job-events topic for that topic's retention"
        )
    return None


async def refuse_if_gone(
    r: redis.asyncio.Redis[bytes], tid: str, error: type[SchedulerError]
) -> None:
    """Raise `error` (task_devices_expired or task_devices_lost) once the task's
    per-device states are gone."""
    why = await gone(r, tid)
    if why is not None:
        raise error(why[1], code=why[0])


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")
