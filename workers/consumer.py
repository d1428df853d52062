"""The worker's consumer loop: inbox partitions in, Redis state and Kafka records out.

Per poll: read every polled partition's offset and touched devices' states (one MULTI
for all of them), plan each partition's write with the apply pipeline (`workers.apply`:
the pure machine's states, deadlines, offset and an outbox of the records to produce),
write them with one Lua call each, guarded by the offset (one pipelined round trip for
all), then hand the records to the producer. The loop does not wait for Kafka's
acknowledgement: a batch's outbox entry is dropped (in the next poll's MULTI) once every
record of it was acknowledged, and revocation, shutdown or too many unacknowledged
records wait for them. Kafka offsets are committed at most once a second: Redis's
offset, not Kafka's, says where each partition resumes. A crash anywhere repeats at most
the produce (records carry deterministic ids).

Kafka away: the producer holds what it was given and retries it for its delivery timeout
(ota.kafka_clients), so an outage shorter than that fails nothing. A batch whose records
the producer gave up on is sent again from memory, oldest first, with backoff, until
Kafka takes it (its outbox entry stays in Redis meanwhile for a crash); a record Kafka
refuses for good stops the worker, and the next owner replays the outbox.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener
from kafka.errors import (
    CommitFailedError,
    KafkaError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition

from ota.backoff import Backoff, count_retry
from ota.kafka_consumer import Polled, RecordConsumer, wait_for_partitions
from ota.kafka_errors import FlushTimeoutError, worth_retrying
from ota.kafka_producer import Delivery, RecordProducer
from workers import telemetry
from workers.apply import Plan, applied, apply_partition, plan
from workers.batch import (
    COMMANDS,
    DEAD_LETTERS,
    JOB_EVENTS,
    BatchResult,
    InboxItem,
    Output,
    device_ids,
)
from workers.settings import WorkerSettings
from workers.store import NO_OFFSET, Store

log = logging.getLogger(__name__)
METADATA_WAIT_S = 30
COMMIT_INTERVAL_S = 1.0
MAX_UNACKED = 50_000  # records handed to the producer and not acknowledged yet
REVOKE_FLUSH_S = 3.0  # longest wait for them when partitions are taken away
RESEND = Backoff(0.5, 5.0)  # between sends of a batch the producer gave up on


@dataclass
class _Sent:
    """A batch whose records the producer has not acknowledged yet, in poll order: its
    offset becomes committable only after every batch before it (one with no records
    waits for those too)."""

    tp: TopicPartition
    offset: int
    futures: list[Delivery]
    outputs: Sequence[Output] = ()


class RedisFlushedError(RuntimeError):
    """A partition this worker wrote has no state in Redis any more: Redis was emptied
    under it. The worker stops; its restart rebuilds the partitions from the log."""


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        consumer: RecordConsumer,
        producer: RecordProducer,
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
        self._sent: list[_Sent] = []
        self._unacked = 0
        self._to_commit: dict[TopicPartition, int] = {}
        self._quiet_until: dict[int, int] = {}
        self._unknown: set[TopicPartition] = set()
        self._stateful: set[int] = set()  # owned partitions known to have state in Redis
        self._committed_at = 0.0
        self._wakeups = producer.wakeups()
        self._resends = 0  # consecutive resends of the oldest failed batch
        self._resend_at = 0.0  # monotonic time of the next one

    # ------------------------------------------------------------------ ownership

    def owned(self) -> list[int]:
        with self._owned_lock:
            return sorted(self._owned)

    def subscribe(self) -> None:
        if not wait_for_partitions(self.consumer, [self.inbox], METADATA_WAIT_S):
            raise RuntimeError(f"topic {self.inbox} has no partitions")
        self.consumer.subscribe(topics=[self.inbox], listener=_Rebalance(self))

    def on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        for tp in assigned:
            self._replay_outbox(tp.partition)
            offset = self.store.offset(tp.partition)
            self._quiet_until.pop(tp.partition, None)
            if offset == NO_OFFSET:
                self._unknown.add(tp)  # see _catch_up_quietly (no blocking calls here)
                self.consumer.seek_to_beginning(tp)
            else:
                self._stateful.add(tp.partition)
                self.consumer.seek(tp, offset + 1)
            with self._owned_lock:
                self._owned.add(tp.partition)
            log.info(
                "partition assigned", extra={"partition": tp.partition, "resume_at": offset + 1}
            )
        telemetry.OWNED.set(len(self._owned))

    def _catch_up_quietly(self, tp: TopicPartition) -> None:
        """No state in Redis for a partition the group has committed offsets of: Redis
        was lost (or emptied). The records before the committed offset had their
        commands and job events produced already (commits follow Kafka's acknowledgement),
        so they are applied without producing anything, as `rebuild` does; from the
        committed offset on, the worker produces as usual (a few may repeat, same ids)."""
        committed = self.consumer.committed(tp)
        if committed:
            self._quiet_until[tp.partition] = committed
            log.warning(
                "no state in Redis: rebuilding from the log without producing",
                extra={"partition": tp.partition, "quiet_until": committed},
            )

    def on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        # Batches are applied inside the loop, before poll() can call this; their records
        # may still be on their way to Kafka: wait for them so the next owner finds no
        # outbox to replay (no duplicates), then the sweeper stops touching them.
        # This runs on kafka-python's IO thread: the commit must not block, and the wait
        # is bounded (what is still unacknowledged stays in the outbox for the next owner).
        self.drain(wait_commit=False, flush_timeout_s=REVOKE_FLUSH_S)
        with self._owned_lock:
            for tp in revoked:
                self._owned.discard(tp.partition)
                self._unknown.discard(tp)
                self._stateful.discard(tp.partition)
                self._quiet_until.pop(tp.partition, None)
        telemetry.OWNED.set(len(self._owned))

    def _replay_outbox(self, partition: int) -> None:
        """Produce what a previous owner wrote to Redis but may not have produced."""
        pending = self.store.pending_outbox(partition)
        if not pending:
            return
        self._replay([out for _, outputs in pending for out in outputs])
        self.store.clear_outbox(partition, [offset for offset, _ in pending])
        log.info("outbox replayed", extra={"partition": partition, "batches": len(pending)})

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        self.subscribe()
        try:
            while not self.stopping.is_set():
                self.poll_once()
        finally:
            self.drain(wait_commit=True)

    def poll_once(self) -> int:
        polled = self.consumer.poll(
            timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_poll_records
        )
        if not polled:
            self.store.drop_outboxes(self._acked())
            self._commit(force=False)
            return 0
        return self.process(polled)

    def process(self, polled: Polled) -> int:
        started = time.monotonic()
        parts = []
        for tp, records in polled.items():
            items = [InboxItem(r.offset, r.key, r.value, r.timestamp) for r in records]
            if tp in self._unknown:
                self._unknown.discard(tp)
                self._catch_up_quietly(tp)
            if tp.partition in self._quiet_until:
                items = self._quiet(tp, items)
            if items:
                parts.append((tp, items))
        snapshots = self.store.snapshots(
            [(tp.partition, device_ids(items)) for tp, items in parts], self._acked()
        )
        plans: list[tuple[TopicPartition, Plan]] = []
        for (tp, items), snapshot in zip(parts, snapshots, strict=True):
            self._check_state(tp.partition, snapshot.offset)
            fresh = [item for item in items if item.offset > snapshot.offset]
            telemetry.RECORDS.labels("redelivered").inc(len(items) - len(fresh))
            if not fresh:
                self._sent.append(_Sent(tp, items[-1].offset, []))  # nothing to send
                continue
            planned = plan(self.store, self.settings, self.inbox, tp.partition, snapshot, fresh)
            plans.append((tp, planned))
        found = self.store.apply_many([planned.write for _, planned in plans])
        self._wakeups.hold()  # the sends below start a batch per output partition: wake once
        try:
            transitions = self._apply_results(plans, found)
        finally:
            self._wakeups.release()
        if self._unacked > MAX_UNACKED:
            self.producer.flush()
        self._commit(force=False)
        telemetry.TRANSITIONS.inc(transitions)
        telemetry.BATCH_SECONDS.observe(time.monotonic() - started)
        return transitions

    def _apply_results(
        self, plans: list[tuple[TopicPartition, Plan]], found: list[int | None]
    ) -> int:
        """Hands each partition's records to the producer (recomputed first where the
        stored offset moved); returns the transitions."""
        transitions = 0
        for (tp, planned), moved in zip(plans, found, strict=True):
            fresh = planned.fresh
            result: BatchResult | None = planned.result
            if moved is None:
                applied(planned)
            else:
                telemetry.CONFLICTS.inc()
                self._check_state(tp.partition, self.store.offset(tp.partition))
                result = apply_partition(self.store, self.settings, self.inbox, tp.partition, fresh)
            self._stateful.add(tp.partition)
            if result is None:
                self._sent.append(_Sent(tp, fresh[-1].offset, []))
            else:
                self._send(tp, fresh[-1].offset, result.outputs)
                transitions += result.transitions
        return transitions

    def _check_state(self, partition: int, stored: int) -> None:
        """Stop before applying anything into an emptied Redis (its offset gone)."""
        if stored == NO_OFFSET and partition in self._stateful:
            raise RedisFlushedError(
                f"partition {partition}: its state is gone from Redis while this worker "
                "owned it; stopping, so that a restart rebuilds it from the log"
            )

    def _quiet(self, tp: TopicPartition, items: list[InboxItem]) -> list[InboxItem]:
        """Applies the records before the partition's quiet bound without producing;
        returns the others."""
        bound = self._quiet_until[tp.partition]
        quiet = [item for item in items if item.offset < bound]
        if quiet:
            apply_partition(
                self.store, self.settings, self.inbox, tp.partition, quiet, with_outbox=False
            )
            self._sent.append(_Sent(tp, quiet[-1].offset, []))
        if items[-1].offset >= bound - 1:
            del self._quiet_until[tp.partition]
            log.info("partition rebuilt from the log", extra={"partition": tp.partition})
        return items[len(quiet) :]

    def drain(self, *, wait_commit: bool, flush_timeout_s: float | None = None) -> None:
        """Wait for every record handed to the producer, drop the outbox entries and
        commit: afterwards nothing of this process is in flight (unless the flush timed
        out: those batches keep their outbox entries)."""
        if self._sent:
            try:
                self.producer.flush(flush_timeout_s)
            except FlushTimeoutError:
                log.warning("records still unacknowledged; their outbox stays in Redis")
        self.store.drop_outboxes(self._acked())
        self._commit(force=True, wait=wait_commit)

    def _send(self, tp: TopicPartition, offset: int, outputs: Sequence[Output]) -> None:
        send, targets = self.producer.send, self.targets
        futures = [send(targets[out.topic], value=out.value, key=out.key) for out in outputs]
        self._sent.append(_Sent(tp, offset, futures, outputs))
        self._unacked += len(futures)

    def _acked(self) -> list[tuple[int, int]]:
        """The (partition, offset) of the batches Kafka acknowledged entirely, oldest
        first, which become committable; raises the first failure (the outbox keeps those
        records: whoever owns the partition next sends them)."""
        done = 0
        for sent in self._sent:
            if not all(f.is_done for f in sent.futures):
                break
            if any(f.failed() for f in sent.futures):
                self._resend_failed()
                break
            done += 1
        if done:
            self._resends = 0  # the oldest batch got through: the next resend starts afresh
        acked, self._sent = self._sent[:done], self._sent[done:]
        self._unacked -= sum(len(s.futures) for s in acked)
        for sent in acked:
            self._to_commit[sent.tp] = sent.offset
        return [(s.tp.partition, s.offset) for s in acked if s.futures]

    def _resend_failed(self) -> None:
        """Sends again, oldest first, the batches whose records the producer gave up on
        (all of a batch's records: the ones Kafka took repeat with the same ids); raises
        the error of a record Kafka refused for good."""
        now = time.monotonic()
        if now < self._resend_at:
            return
        failed = [s for s in self._sent if any(f.is_done and f.failed() for f in s.futures)]
        for sent in failed:
            for future in sent.futures:
                error = future.exception
                if error is not None and not worth_retrying(error):
                    raise error
        # The loop schedules its own retries (it must keep polling meanwhile), so it takes
        # the shared policy's delay and counts them itself.
        self._resend_at = now + RESEND.delay_s(self._resends)
        self._resends += 1
        count_retry("workers.resend")
        send, targets = self.producer.send, self.targets
        for sent in failed:
            self._unacked -= len(sent.futures)
            sent.futures = [
                send(targets[out.topic], value=out.value, key=out.key) for out in sent.outputs
            ]
            self._unacked += len(sent.futures)
        telemetry.RESENDS.inc(sum(len(s.futures) for s in failed))
        log.warning(
            "kafka gave up on records; sending them again",
            extra={"batches": len(failed), "attempt": self._resends},
        )

    def _replay(self, outputs: Sequence[Output]) -> None:
        send, targets = self.producer.send, self.targets
        futures = [send(targets[out.topic], value=out.value, key=out.key) for out in outputs]
        self.producer.flush()
        for future in futures:
            if future.exception is not None:
                raise future.exception

    def _commit(self, *, force: bool, wait: bool = False) -> None:
        """Commits what Kafka acknowledged: at most once a second in the loop, at once
        when `force`d (revocation, shutdown); `wait` waits for the answer."""
        if not self._to_commit:
            return
        if not force and time.monotonic() - self._committed_at < COMMIT_INTERVAL_S:
            return
        offsets, self._to_commit = self._to_commit, {}
        self._committed_at = time.monotonic()
        commit = self.consumer.commit if wait else self.consumer.commit_async
        try:
            commit({tp: OffsetAndMetadata(o + 1, "", -1) for tp, o in offsets.items()})
        except (CommitFailedError, KafkaError) as exc:
            # Redis holds the applied offset; Kafka's is only where a new owner starts reading.
            log.warning("offset commit failed", extra={"error": str(exc)})


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self.worker.on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.worker.on_assigned(assigned)
