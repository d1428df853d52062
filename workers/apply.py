"""The worker's apply pipeline, written once: a partition's inbox records and its Redis
snapshot in, the batch's write out.

`plan` is the step every caller shares: the records past the snapshot's offset go
through the pure machine (`workers.batch.apply_batch`) and become one `Write` of
states, deadlines, offset, outbox and specs, which Redis takes only while the partition
is still at the snapshot's offset. `applied` counts (and logs) a plan Redis took.

Callers: the consumer loop plans every polled partition from one round trip of
snapshots and writes them all in another (workers/consumer.py); `apply_partition`
plans and writes one partition, recomputing while its stored offset moves (the
consumer's conflict retries; and, writing no outbox because history must not command
devices again, the consumer's catch-up of a partition whose Redis state was lost and the
rebuild command's replay).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from workers import telemetry
from workers.batch import BatchResult, InboxItem, apply_batch, device_ids
from workers.joblog import log_jobs
from workers.settings import WorkerSettings
from workers.store import Snapshot, Store, Write, encode_outputs

log = logging.getLogger(__name__)
MAX_CONFLICT_RETRIES = 5


class OwnershipLostError(RuntimeError):
    """The stored offset kept moving under this process: another owner is writing."""


@dataclass(frozen=True, slots=True)
class Plan:
    fresh: list[InboxItem]  # the records the partition had not applied, in offset order
    write: Write
    result: BatchResult


def plan(
    store: Store,
    settings: WorkerSettings,
    inbox: str,
    partition: int,
    snapshot: Snapshot,
    fresh: list[InboxItem],
    *,
    with_outbox: bool = True,
) -> Plan:
    """The write that applies `fresh` (records past `snapshot.offset`, at least one)."""
    specs = store.specs(partition, snapshot.states.values())
    result = apply_batch(
        settings.common,
        inbox,
        partition,
        fresh,
        snapshot.states,
        specs,
        settings.retention_s * 1000,
    )
    write = Write(
        partition,
        snapshot.offset,
        fresh[-1].offset,
        result.writes,
        encode_outputs(result.outputs) if with_outbox else b"",
        result.specs,
    )
    return Plan(fresh, write, result)


def applied(taken: Plan, *, log_events: bool = True) -> None:
    """Count a plan Redis took; its job events are logged unless it replays history
    (a rebuild: they were logged the first time)."""
    telemetry.RECORDS.labels("applied").inc(len(taken.fresh))
    telemetry.DEAD_LETTERS.inc(taken.result.dead_letters)
    if log_events:
        log_jobs(taken.result.events)


def apply_partition(
    store: Store,
    settings: WorkerSettings,
    inbox: str,
    partition: int,
    items: Sequence[InboxItem],
    *,
    with_outbox: bool = True,
) -> BatchResult | None:
    """Apply the records of `items` the partition has not applied yet, atomically with the
    offset; None when every one was applied before. Rebuilds pass `with_outbox=False`:
    replaying history must not command devices again."""
    ids = device_ids(list(items))
    for _ in range(MAX_CONFLICT_RETRIES):
        snapshot = store.snapshot(partition, ids)
        fresh = [item for item in items if item.offset > snapshot.offset]
        if not fresh:
            telemetry.RECORDS.labels("redelivered").inc(len(items))
            return None
        planned = plan(store, settings, inbox, partition, snapshot, fresh, with_outbox=with_outbox)
        [found] = store.apply_many([planned.write])
        if found is None:
            telemetry.RECORDS.labels("redelivered").inc(len(items) - len(fresh))
            applied(planned, log_events=with_outbox)
            return planned.result
        telemetry.CONFLICTS.inc()
        log.warning(
            "stored offset moved; recomputing",
            extra={"partition": partition, "expected": snapshot.offset, "found": found},
        )
    raise OwnershipLostError(f"partition {partition}: stored offset keeps moving")
