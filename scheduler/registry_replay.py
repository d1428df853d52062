"""The device registry refilled from the inbox after Redis was emptied.

The registry's consumer group goes on from its committed offsets, so after a loss the
registry would know a device's version and presence only once the device reported again.
A start that finds Redis emptied (no `keys.RESTORED` mark) therefore reads `ota.inbox` from
its first retained record up to the offsets the group had committed, in the background,
and applies what it holds through `Registry.observe`: versions, presence and last seen
move only forward in record time, so these older records never undo the newer ones the
group applies beside them. Undecodable records are skipped (the group dead-lettered them
when it first read them).

What the inbox no longer holds cannot come back this way: a device that last reported, or
connected, before the inbox's retention (7 days) is known again at its next report.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from redis.exceptions import RedisError

from ota.kafka_clients import make_consumer
from ota.kafka_consumer import read_to_end
from ota.settings import CommonSettings
from scheduler.consumers import parse_inbox
from scheduler.devices import Registry

log = logging.getLogger(__name__)
POLL_MS = 500
MAX_RECORDS = 2_000  # records per batch applied (one poll)
APPLY_TIMEOUT_S = 60.0


def read_inbox(
    settings: CommonSettings,
    group_id: str,
    apply: Callable[[list[Any]], None],
    stopped: Callable[[], bool],
) -> int:
    """Hand `apply` the inbox, batch by batch, from each partition's start up to `group_id`'s
    committed offset (a partition it never committed is left to the group); blocking, run
    it in an executor. How many records were read."""
    topic = settings.topics.inbox
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
    settings: CommonSettings, group_id: str, registry: Registry, stop: asyncio.Event
) -> None:
    """Refill the registry from the inbox (see the module's text), then wait for `stop`
    (a supervised task: ending early would stop the service). A failure is logged: the
    group's own reading goes on either way."""
    loop = asyncio.get_running_loop()

    def apply(records: list[Any]) -> None:
        items = parse_inbox(records).items
        asyncio.run_coroutine_threadsafe(registry.observe(items), loop).result(APPLY_TIMEOUT_S)

    try:
        read = await loop.run_in_executor(None, read_inbox, settings, group_id, apply, stop.is_set)
        if read:  # none on a first start: the group has committed nothing yet
            log.warning("device registry refilled from the inbox", extra={"records": read})
    except (KafkaError, RedisError, TimeoutError) as exc:
        log.error(
            "device registry replay cut short; devices are known again as they report",
            extra={"error": repr(exc)},
        )
    await stop.wait()
