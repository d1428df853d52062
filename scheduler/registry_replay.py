"""The device registry refilled from the log after Redis was emptied.

The registry's consumer groups go on from their committed offsets, so after a loss the
registry would know a device's version and presence only once the device reported again,
and its current job and timeline only at its next job event. A start that finds Redis
emptied (no `keys.RESTORED` mark) therefore reads, in the background, each log from its
first retained record up to the offsets its group had committed:

- `ota.job-events` first, through `Registry.job_events`: each device's current job and
  timeline (entries older than `OTA_TIMELINE_RETENTION_S` expire as they would have). A
  timeline takes an entry as the newest one, so the job-event group waits for this part
  (`jobs_ready`) before it applies anything: task progress resumes once it is done;
- then `ota.inbox`, through `Registry.observe`: versions, presence and last seen move
  only forward in record time, so these older records never undo the newer ones the
  registry group applies beside them.

A thread reads each log and hands the loop one batch at a time, reading the next while
Redis applies it (batches stay in log order: a batch waits for the one before it).
Undecodable records are skipped (the groups dead-lettered them when they first read them).
What the logs no longer hold cannot come back this way: a device that last reported, or
connected, before the inbox's retention (7 days) is known again at its next report.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import redis.asyncio
from kafka import TopicPartition
from kafka.errors import KafkaError
from redis.exceptions import RedisError

from ota.kafka_clients import make_consumer
from ota.kafka_consumer import read_to_end
from ota.records import JobEventRecord
from ota.settings import CommonSettings
from scheduler.consumers import TaskTypes, parse_inbox, parse_job_events
from scheduler.devices import Registry

log = logging.getLogger(__name__)
POLL_MS = 500
MAX_RECORDS = 2_000  # records per batch applied (one poll)
APPLY_TIMEOUT_S = 60.0


def read_log(
    settings: CommonSettings,
    topic: str,
    group_id: str,
    apply: Callable[[list[Any]], None],
    stopped: Callable[[], bool],
) -> int:
    """Hand `apply` the topic, batch by batch, from each partition's start up to
    `group_id`'s committed offset (a partition it never committed is left to the group);
    blocking, run it in an executor. How many records were read."""
    consumer = make_consumer(settings, group_id=group_id, client_id="ota-scheduler-registry-replay")
    read = 0
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        until = {tp: consumer.committed(tp) or 0 for tp in parts}  # never joins the group
        if not any(until.values()):
            return 0
        batches = read_to_end(
            consumer, parts, poll_ms=POLL_MS, max_records=MAX_RECORDS, until=until
        )
        for _tp, records in batches:
            if stopped():
                break
            apply(records)
            read += len(records)
    finally:
        consumer.close()
    return read


async def replay_registry(
    settings: CommonSettings,
    groups: tuple[str, str],
    r: redis.asyncio.Redis[bytes],
    registry: Registry,
    jobs_ready: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    """Refill the registry from the job events, then set `jobs_ready`, then from the
    inbox (see the module's text); then wait for `stop` (a supervised task: ending early
    would stop the service). `groups`: the registry's and the job events' consumer
    groups. A failure is logged, and `jobs_ready` set all the same: the groups' own
    reading goes on either way."""
    registry_group, jobs_group = groups
    loop = asyncio.get_running_loop()
    types = TaskTypes(r)
    applying: list[Future[None]] = []  # the batch the loop applies while the next is read

    def run(coroutine: Any) -> None:
        """Hand the batch to the loop, once the one before it is applied (in log order);
        the reading thread goes on to the next batch meanwhile."""
        if applying:
            applying.pop().result(APPLY_TIMEOUT_S)
        applying.append(asyncio.run_coroutine_threadsafe(coroutine, loop))

    def jobs(records: list[Any]) -> None:
        parsed = parse_job_events(records)
        run(_record_jobs(types, registry, parsed.items, parsed.positions))

    def inbox(records: list[Any]) -> None:
        run(registry.observe(parse_inbox(records).items))

    parts = (
        (settings.topics.job_events, jobs_group, jobs, "jobs and timelines", jobs_ready),
        (settings.topics.inbox, registry_group, inbox, "versions and presence", None),
    )
    for topic, group, apply, what, done in parts:
        try:
            read = await loop.run_in_executor(
                None, read_log, settings, topic, group, apply, stop.is_set
            )
            if applying:
                await asyncio.wait_for(asyncio.wrap_future(applying.pop()), APPLY_TIMEOUT_S)
            if read:  # none on a first start: the group has committed nothing yet
                log.warning(
                    "device registry refilled from %s", topic, extra={"records": read, "what": what}
                )
        except (KafkaError, RedisError, TimeoutError) as exc:
            log.error(
                "device registry replay of %s cut short; devices' %s come back as they change",
                topic,
                what,
                extra={"error": repr(exc)},
            )
        finally:
            for cut in applying:  # the read failed: its last batch still ends before `done`
                with contextlib.suppress(RedisError, TimeoutError):
                    await asyncio.wait_for(asyncio.wrap_future(cut), APPLY_TIMEOUT_S)
            applying.clear()
            if done is not None:
                done.set()
    await stop.wait()


async def _record_jobs(
    types: TaskTypes,
    registry: Registry,
    events: Sequence[JobEventRecord],
    positions: Sequence[str],
) -> None:
    """The events with their tasks' types (restored from `ota.tasks` before this runs; a
    task unknown here has none, as when the group applies its events)."""
    of = await types.of(e.task_id for e in events)
    await registry.job_events([(e, of[e.task_id]) for e in events], positions)
