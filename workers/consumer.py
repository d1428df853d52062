"""The worker's consumer loop: inbox partitions in, Redis state and Kafka records out.

Per poll, for each partition: read the touched devices' states and the partition's
offset (one MULTI), apply the records with the pure machine (`workers.batch`), write the
states, deadlines, offset and an outbox of the records to produce with one Lua call
(guarded by the offset), then produce, flush, clear the outbox and commit the Kafka
offsets. A crash anywhere repeats at most the produce (records carry deterministic ids);
Redis's offset, not Kafka's, says where each partition resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from workers import telemetry
from workers.batch import (
    COMMANDS,
    DEAD_LETTERS,
    JOB_EVENTS,
    BatchResult,
    InboxItem,
    Output,
    apply_batch,
    device_ids,
)
from workers.settings import WorkerSettings
from workers.store import NO_OFFSET, Store, encode_outputs

log = logging.getLogger(__name__)
MAX_CONFLICT_RETRIES = 5
METADATA_WAIT_S = 30


class OwnershipLostError(RuntimeError):
    """The stored offset kept moving under this process: another owner is writing."""


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        store: Store,
    ) -> None:
        self.settings = settings
        self.consumer, self.producer, self.store = consumer, producer, store
        topics = settings.common.topics
        self.inbox = topics.inbox
        self.targets = {
            COMMANDS: topics.commands,
            JOB_EVENTS: topics.job_events,
            DEAD_LETTERS: topics.dead_letters,
        }
        self._owned: set[int] = set()
        self._owned_lock = threading.Lock()
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ ownership

    def owned(self) -> list[int]:
        with self._owned_lock:
            return sorted(self._owned)

    def subscribe(self) -> None:
        # Joining before the inbox's metadata is known would get an empty assignment.
        deadline = time.monotonic() + METADATA_WAIT_S
        while not self.consumer.partitions_for_topic(self.inbox):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {self.inbox} has no partitions")
            time.sleep(0.1)
        self.consumer.subscribe(topics=[self.inbox], listener=_Rebalance(self))

    def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        for tp in assigned:
            self._replay_outbox(tp.partition)
            offset = self.store.offset(tp.partition)
            if offset == NO_OFFSET:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset + 1)
            with self._owned_lock:
                self._owned.add(tp.partition)
            log.info(
                "partition assigned", extra={"partition": tp.partition, "resume_at": offset + 1}
            )
        telemetry.OWNED.set(len(self._owned))

    def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Batches are applied, produced and committed inside the loop, before poll() can
        # call this: nothing is in flight here; the sweeper just stops touching them.
        with self._owned_lock:
            for tp in revoked:
                self._owned.discard(tp.partition)
        telemetry.OWNED.set(len(self._owned))

    def _replay_outbox(self, partition: int) -> None:
        """Produce what a previous owner wrote to Redis but may not have produced."""
        pending = self.store.pending_outbox(partition)
        if not pending:
            return
        self._produce([out for _, outputs in pending for out in outputs])
        self.store.clear_outbox(partition, [offset for offset, _ in pending])
        log.info("outbox replayed", extra={"partition": partition, "batches": len(pending)})

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        self.subscribe()
        while not self.stopping.is_set():
            self.poll_once()

    def poll_once(self) -> int:
        polled = self.consumer.poll(
            timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_poll_records
        )
        if not polled:
            return 0
        return self.process(polled)

    def process(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        started = time.monotonic()
        last: dict[TopicPartition, int] = {}
        written: dict[int, int] = {}
        outputs: list[Output] = []
        transitions = 0
        for tp, records in polled.items():
            items = [InboxItem(r.offset, r.key, r.value, r.timestamp) for r in records]
            last[tp] = items[-1].offset
            applied = apply_partition(self.store, self.settings, self.inbox, tp.partition, items)
            if applied is not None:
                written[tp.partition] = items[-1].offset
                outputs += applied.outputs
                transitions += applied.transitions
        self._produce(outputs)
        for partition, offset in written.items():
            self.store.clear_outbox(partition, [offset])
        self._commit(last)
        telemetry.TRANSITIONS.inc(transitions)
        telemetry.BATCH_SECONDS.observe(time.monotonic() - started)
        return transitions

    def _produce(self, outputs: Sequence[Output]) -> None:
        """Send and wait for Kafka's acknowledgement of every record."""
        send, targets = self.producer.send, self.targets
        futures = [send(targets[out.topic], value=out.value, key=out.key) for out in outputs]
        self.producer.flush()
        for future in futures:
            if future.failed():
                # The outbox keeps these records: whoever owns the partition next sends them.
                raise future.exception

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            self.consumer.commit_async(
                {tp: OffsetAndMetadata(o + 1, "", -1) for tp, o in offsets.items()}
            )
        except (CommitFailedError, KafkaError) as exc:
            # Redis holds the applied offset; Kafka's is only where a new owner starts reading.
            log.warning("offset commit failed", extra={"error": str(exc)})


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
    retention_ms = settings.retention_s * 1000
    for _ in range(MAX_CONFLICT_RETRIES):
        snapshot = store.snapshot(partition, ids)
        fresh = [item for item in items if item.offset > snapshot.offset]
        if not fresh:
            telemetry.RECORDS.labels("redelivered").inc(len(items))
            return None
        specs = store.specs(partition, snapshot.states.values())
        result = apply_batch(
            settings.common, inbox, partition, fresh, snapshot.states, specs, retention_ms
        )
        outbox = encode_outputs(result.outputs) if with_outbox else b""
        found = store.apply(
            partition, snapshot.offset, fresh[-1].offset, result.writes, outbox, result.specs
        )
        if found is None:
            telemetry.RECORDS.labels("redelivered").inc(len(items) - len(fresh))
            telemetry.RECORDS.labels("applied").inc(len(fresh))
            telemetry.DEAD_LETTERS.inc(result.dead_letters)
            return result
        telemetry.CONFLICTS.inc()
        log.warning(
            "stored offset moved; recomputing",
            extra={"partition": partition, "expected": snapshot.offset, "found": found},
        )
    raise OwnershipLostError(f"partition {partition}: stored offset keeps moving")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.worker.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.worker.on_assigned(assigned)
