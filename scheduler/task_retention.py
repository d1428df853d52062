"""How long a finished task keeps its per-device states (`OTA_TASK_DEVICES_RETENTION_S`).

A task's document, counts and waves stay for as long as the task; its per-device states,
release list and state indexes cost about 220 bytes per device and task, so a fleet that
runs task after task would grow without end. Once the reconciler wraps a task up they
expire after the retention (`TaskState.expire_devices`); a retry within it keeps them
again. Past it, the device list, a retry and a rollback are refused with
`task_devices_expired`, which says where each device's jobs still are.
"""

from __future__ import annotations

import datetime as dt

import redis.asyncio

from scheduler import keys
from scheduler.errors import SchedulerError

CODE = "task_devices_expired"


async def devices_expired(r: redis.asyncio.Redis[bytes], tid: str) -> int | None:
    """When the task's per-device states expired (epoch ms); None while they are held."""
    pipe = r.pipeline(transaction=False)
    pipe.hget(keys.task_runtime(tid), "devices_expire_ms")
    pipe.exists(keys.task_devices(tid))
    at, held = await pipe.execute()
    return None if at is None or held else int(at)


def expired_text(tid: str, at_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(at_ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")
    return (
        f"task {tid}'s per-device states passed their retention at {moment} "
        "(OTA_TASK_DEVICES_RETENTION_S); its counts remain, and each device's jobs are in "
        "the job-events topic for that topic's retention"
    )


async def refuse_if_expired(
    r: redis.asyncio.Redis[bytes], tid: str, error: type[SchedulerError]
) -> None:
    """Raise `error` (code task_devices_expired) once the task's per-device states expired."""
    at = await devices_expired(r, tid)
    if at is not None:
        raise error(expired_text(tid, at), code=CODE)
