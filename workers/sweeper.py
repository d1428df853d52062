"""Turns due deadlines into timeout records in the inbox, for the partitions this process owns.

Redis is the only truth about deadlines: `Store.pop_due` leases due entries atomically,
this loop reads the devices' states, writes one TimeoutRecord per due job (same key and
partition as the device's other records, carrying the job's version and the sweeper's
time) and, once Kafka acknowledged them, drops the leases. A crash in between leaves the
leases to run out and fire again; the worker ignores the duplicate by the job version.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from kafka import KafkaProducer

from ota.clock import now_ms
from ota.records import JobSpec, TimeoutRecord, encode
from workers import telemetry
from workers.codec import StateCorruptError, unpack
from workers.store import Store

log = logging.getLogger(__name__)


def due_timeouts(
    device_id: str, raw: bytes | None, specs: Mapping[str, JobSpec], now: int
) -> list[tuple[TimeoutRecord, int]]:
    """The timeout records for a device's jobs whose deadline has passed, with the deadline."""
    if raw is None:
        return []
    try:
        device = unpack(raw, specs)
    except StateCorruptError:
        return []  # the worker dead-letters and replaces a corrupt state on its next record
    return [
        (
            TimeoutRecord(
                device_id=device_id,
                task_id=job.task_id,
                job_version=job.version,
                id=f"timeout-{device_id}-{job.task_id}-{job.version}",
                at_ms=now,
            ),
            job.deadline_ms,
        )
        for job in (device.job, *device.queue)
        if job is not None and job.deadline_ms is not None and job.deadline_ms <= now
    ]


class Sweeper:
    def __init__(
        self,
        store: Store,
        producer: KafkaProducer,
        inbox_topic: str,
        owned: Callable[[], Iterable[int]],
        *,
        batch: int,
        idle_ms: int,
        lease_ms: int,
    ) -> None:
        self.store, self.producer, self.inbox_topic, self.owned = (
            store,
            producer,
            inbox_topic,
            owned,
        )
        self.batch, self.idle_ms, self.lease_ms = batch, idle_ms, lease_ms
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            wait_ms = self.sweep()
            self.stopping.wait(wait_ms / 1000)

    def stop(self) -> None:
        self.stopping.set()

    def sweep(self) -> int:
        """Fire everything due now in every owned partition; return how long to sleep (ms)."""
        wait_ms = self.idle_ms
        for partition in list(self.owned()):
            while self.sweep_partition(partition) == self.batch:
                pass
            nxt = self.store.client.zrange(
                self.store.keys(partition).deadlines, 0, 0, withscores=True
            )
            if nxt:
                wait_ms = min(wait_ms, max(1, int(nxt[0][1]) - now_ms()))
        return wait_ms

    def sweep_partition(self, partition: int) -> int:
        now = now_ms()
        device_ids = self.store.pop_due(partition, now, self.batch, self.lease_ms)
        if not device_ids:
            return 0
        values = self.store.states(partition, device_ids)
        specs = self.store.specs(partition, values)
        futures = []
        for device_id, raw in zip(device_ids, values, strict=True):
            for record, deadline_ms in due_timeouts(device_id, raw, specs, now):
                futures.append(
                    self.producer.send(
                        self.inbox_topic,
                        value=encode(record),
                        key=device_id.encode(),
                        partition=partition,
                    )
                )
                telemetry.DUE_LAG_SECONDS.observe(max(0, now - deadline_ms) / 1000)
        self.producer.flush()
        for future in futures:
            future.get(timeout=0)  # raises if Kafka refused one: the leases then fire again
        telemetry.TIMEOUTS.inc(len(futures))
        self.store.ack_fired(partition, now + self.lease_ms, device_ids)
        return len(device_ids)
