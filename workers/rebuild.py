"""Rebuild a partition's Redis state from the inbox: `python -m workers rebuild [--partition N]`.

Replays the partition from its first offset through the same code the worker runs, into a
Redis holding nothing of that partition, without producing anything (history must not
command devices again). Because the machine only reads the time written in each record,
the result is the state the workers had built, byte for byte.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import redis
from kafka.structs import TopicPartition

from ota import logs
from ota.kafka_clients import make_consumer
from ota.kafka_consumer import RecordConsumer, read_to_end
from ota.redis_clients import make_redis
from ota.runtime import load_settings
from workers.apply import apply_partition
from workers.batch import InboxItem
from workers.settings import WorkerSettings
from workers.store import Store

log = logging.getLogger(__name__)


class NotEmptyError(RuntimeError):
    """The target Redis already holds state of a partition being rebuilt."""


def rebuild(
    settings: WorkerSettings, store: Store, partitions: Sequence[int] | None = None
) -> dict[int, int]:
    """Replay `partitions` (default: all) up to their current end; returns records per partition."""
    consumer = make_consumer(settings.common, group_id=None, client_id="ota-worker-rebuild")
    try:
        inbox = settings.common.topics.inbox
        chosen = sorted(
            partitions if partitions is not None else consumer.partitions_for_topic(inbox) or ()
        )
        for partition in chosen:
            keys = store.keys(partition)
            if store.client.exists(keys.offset) or store.client.zcard(keys.deadlines):
                raise NotEmptyError(f"partition {partition} already has state in this Redis")
        return {p: _replay(settings, store, consumer, inbox, p) for p in chosen}
    finally:
        consumer.close()


def _replay(
    settings: WorkerSettings, store: Store, consumer: RecordConsumer, inbox: str, partition: int
) -> int:
    tp = TopicPartition(inbox, partition)
    count = 0
    batches = read_to_end(consumer, [tp], poll_ms=1000, max_records=settings.max_poll_records)
    for _, records in batches:
        items = [InboxItem(r.offset, r.key, r.value, r.timestamp) for r in records]
        apply_partition(store, settings, inbox, partition, items, with_outbox=False)
        count += len(items)
    log.info("partition rebuilt", extra={"partition": partition, "records": count})
    return count


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers rebuild")
    parser.add_argument(
        "--partition",
        type=int,
        action="append",
        help="partition to rebuild (repeatable); default all",
    )
    args = parser.parse_args(argv)
    settings = load_settings("workers rebuild", WorkerSettings.from_env)  # exit 2 if bad
    logs.setup("worker", settings.common.log_level)
    rebuild(settings, Store(make_redis(settings.common)), args.partition)


def dump_partition(store: Store, partition: int) -> dict[str, object]:
    """Everything of a partition's view that a rebuild must reproduce: each device's
    stored bytes and expiry, the shared specs (with their counts) and expiry, the
    deadlines and the applied offset."""
    keys = store.keys(partition)
    client = store.client
    devices = _scan(client, keys.device_prefix)
    specs = _scan(client, keys.spec_prefix)
    pipe = client.pipeline(transaction=False)
    for key in devices:
        pipe.get(key)
        pipe.execute_command("PEXPIRETIME", key)  # type: ignore[no-untyped-call]
    for key in specs:
        pipe.hgetall(key)
        pipe.execute_command("PEXPIRETIME", key)  # type: ignore[no-untyped-call]
    replies = pipe.execute()
    at = len(devices) * 2
    return {
        "devices": {key: (replies[2 * i], replies[2 * i + 1]) for i, key in enumerate(devices)},
        "specs": {
            key: (replies[at + 2 * i], replies[at + 2 * i + 1]) for i, key in enumerate(specs)
        },
        "deadlines": client.zrange(keys.deadlines, 0, -1, withscores=True),
        "offset": client.get(keys.offset),
    }


def _scan(client: redis.Redis[bytes], prefix: str) -> list[bytes]:
    pattern = prefix.replace("{", "\\{").replace("}", "\\}") + "*"
    return sorted(client.scan_iter(match=pattern, count=1000))
