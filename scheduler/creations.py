"""Task creations cut short: a task whose creation stopped mid-way is stopped, not left
Initializing for good.

`Tasks.create` saves the document (status Initializing) and then writes the device list,
the runtime and the first status; a replica that dies in between (or loses Kafka or Redis
there) leaves a task no one paces, listed as Initializing, and its package held in use.
`Tasks.create` lists the creation in `keys.CREATING` (task id -> "<start ms> <package
id>") from before it marks the package in use until the first status; the reconcilers
stop what is still listed after `STALE_MS` and hand it to the usual wrap-up
(`Reconciler._finish`: the package released, the per-device states set to expire), or,
when no document was saved, release the package themselves.
"""

from __future__ import annotations

import logging

import redis.asyncio

from scheduler import keys
from scheduler.errors import Conflict, NotFound
from scheduler.tasks import Tasks
from scheduler.taskstatus import TaskStatus

log = logging.getLogger(__name__)

# Far longer than any creation takes (a million-device target list: tens of seconds).
STALE_MS = 10 * 60 * 1000
INTERRUPTED_REASON = (
    "stopped: its creation did not complete (the scheduler replica creating it stopped, "
    "or lost Kafka or Redis, mid-way); create the task again"
)


async def stop_interrupted(r: redis.asyncio.Redis[bytes], tasks: Tasks, now_ms: int) -> int:
    """Stop the creations listed for longer than `STALE_MS`; how many were stopped."""
    stopped = 0
    for raw_tid, raw in (await r.hgetall(keys.CREATING)).items():
        started, _, pid = raw.decode().partition(" ")
        if int(started) > now_ms - STALE_MS:
            continue
        tid = raw_tid.decode()
        # First: the reconciler wraps the task up once it is final, even if this replica
        # stops before the end (a second look finds it stopped already).
        await r.sadd(keys.ACTIVE_TASKS, tid)
        try:
            await tasks.transition(
                tid, {TaskStatus.INITIALIZING}, TaskStatus.STOPPED, INTERRUPTED_REASON
            )
            log.warning("task stopped: its creation did not complete", extra={"task_id": tid})
            stopped += 1
        except NotFound:  # nothing was saved: only the package's mark to take back
            await r.srem(keys.ACTIVE_TASKS, tid)
            await r.srem(keys.package_users(pid), tid)
        except Conflict:
            pass  # the creation completed after all
        await r.hdel(keys.CREATING, tid)
    return stopped
