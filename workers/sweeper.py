"""Turns due deadlines into timeout records in the inbox, for the partitions this process owns.

Redis is the only truth about deadlines: `POP_DUE` leases due entries atomically, this
loop reads the devices' states, writes one TimeoutRecord per due job (same key and
partition as the device's other records, carrying the job's version and the sweeper's
time) and, once Kafka acknowledged them, drops the leases. A crash in between leaves the
leases to run out and fire again; the worker ignores the duplicate by the job version.

While Kafka does not answer (a probe of it, at most once a second, before popping), nothing
fires, and after it answers again the deadlines the outage overlapped come due later by
its length plus a grace (workers.outages): the reports and commands held up in the
producers reach the log before a timeout could overtake them. After a device broker
outage (a gateway's record of it, read whenever deadlines are due), the deadlines of devices whose
connection the outage took are held until they are back (workers.broker_hold).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ota.clock import now_ms
from ota.kafka_producer import Delivery, RecordProducer
from ota.records import JobSpec, TimeoutRecord, encode
from workers import telemetry
from workers.broker_hold import BrokerHold
from workers.codec import StateCorruptError, unpack
from workers.outages import OutageClock
from workers.store import Store

log = logging.getLogger(__name__)
MIN_WAIT_MS = 10
PROBE_EVERY_MS = 1000  # how often Kafka is asked whether it answers, while it does
PROBE_TIMEOUT_S = 2.0  # no answer within this: Kafka is down (a loaded Kafka answers in ms)
DOWN_WAIT_MS = 250  # between probes while Kafka is down (a probe may answer at once)


@dataclass(frozen=True, slots=True)
class Due:
    """A device's timeouts to write now, each with its deadline, and whether one of its
    deadlines has passed but is held back by a Kafka outage's pause or a broker outage's
    hold (its lease is kept: it fires once due), and whether by the latter."""

    timeouts: list[tuple[TimeoutRecord, int]]
    held: bool = False
    held_by_broker: bool = False


def due_timeouts(
    device_id: str,
    raw: bytes | None,
    specs: Mapping[str, JobSpec],
    now: int,
    due_by: int,
    hold: BrokerHold | None = None,
) -> Due:
    """The timeout records (stamped `now`) for a device's jobs whose deadline is at or
    before `due_by` and, with a broker outage's `hold`, due by it at `now`."""
    if raw is None:
        return Due([])
    try:
        device = unpack(raw, specs)
    except StateCorruptError:
        return Due([])  # the worker dead-letters and replaces a corrupt state on its next record
    deadlines = [
        (job, job.deadline_ms)
        for job in (device.job, *device.queue)
        if job is not None and job.deadline_ms is not None
    ]
    timeouts: list[tuple[TimeoutRecord, int]] = []
    broker_held = False
    for job, deadline in deadlines:
        if deadline > due_by:
            continue
        if hold is not None and hold.due_at(deadline, device) > now:
            broker_held = True
            continue
        record = TimeoutRecord(
            device_id=device_id,
            task_id=job.task_id,
            job_version=job.version,
            id=f"timeout-{device_id}-{job.task_id}-{job.version}",
            at_ms=now,
        )
        timeouts.append((record, deadline))
    paused = any(due_by < deadline <= now for _, deadline in deadlines)
    return Due(timeouts, paused or broker_held, broker_held)


@dataclass
class _Fired:
    """Timeouts handed to the producer; their leases are dropped once Kafka has them all."""

    partition: int
    lease_until_ms: int
    device_ids: list[str]
    futures: list[Delivery]


class Sweeper:
    """One pass (`sweep`) reads every owned partition's due deadlines and the next one in
    a single Redis round trip; it sleeps until the earliest next deadline (at least
    `MIN_WAIT_MS`, so a steady stream of deadlines is swept in batches, at most
    `idle_ms`, so new partitions and earlier deadlines are noticed). Timeouts are not
    waited for: their leases are dropped on a later pass, once Kafka acknowledged them."""

    def __init__(
        self,
        store: Store,
        producer: RecordProducer,
        inbox_topic: str,
        owned: Callable[[], Iterable[int]],
        *,
        batch: int,
        idle_ms: int,
        lease_ms: int,
        outages: OutageClock,
        broker_hold_ms: int,
    ) -> None:
        self.store, self.producer, self.inbox_topic, self.owned = (
            store,
            producer,
            inbox_topic,
            owned,
        )
        self.batch, self.idle_ms, self.lease_ms = batch, idle_ms, lease_ms
        self.outages = outages
        self.broker_hold_ms = broker_hold_ms
        self.held_since_ms: int | None = None  # the broker outage last logged as holding
        self.probed_ms: int | None = None  # when Kafka was last asked whether it answers
        self.stopping = threading.Event()
        self._fired: list[_Fired] = []
        # Called before every sweep; the service sets a liveness beat (ota/health.py).
        self.beat: Callable[[], object] = lambda: None

    def run(self) -> None:
        while not self.stopping.is_set():
            self.beat()
            wait_ms = self.sweep()
            self.stopping.wait(wait_ms / 1000)
        self.producer.flush()
        self._ack()

    def stop(self) -> None:
        self.stopping.set()

    def sweep(self) -> int:
        """Fire what is due now in every owned partition; return how long to sleep (ms)."""
        self._ack()
        partitions = list(self.owned())
        if not partitions:
            return self.idle_ms
        due_by = self._due_by()
        if due_by is None:
            return DOWN_WAIT_MS  # Kafka does not answer: fire nothing, ask again soon
        now = now_ms()
        popped = self.store.pop_due_many(partitions, now, due_by, self.batch, self.lease_ms)
        due = [(p, ids) for p, (ids, _) in zip(partitions, popped, strict=True) if ids]
        if due:
            values = self.store.states_many(due)
            hold = self._hold(now)
            for (partition, device_ids), states in zip(due, values, strict=True):
                self._fire(partition, device_ids, states, now, due_by, hold)
        if any(len(ids) == self.batch for ids, _ in popped):
            return 0  # more is due: go on at once
        nexts = [self.outages.due_at(first, now) for _, first in popped if first is not None]
        if not nexts:
            return self.idle_ms
        return min(self.idle_ms, max(MIN_WAIT_MS, min(nexts) - now_ms()))

    def _due_by(self) -> int | None:
        """The latest deadline that fires now, after asking Kafka whether it answers (at
        most once a `PROBE_EVERY_MS` while it does, every pass while it does not); None
        while it does not."""
        now = now_ms()
        if self.outages.down or self.probed_ms is None or now - self.probed_ms >= PROBE_EVERY_MS:
            answers = self.producer.reachable(self.inbox_topic, PROBE_TIMEOUT_S)
            now = self.probed_ms = now_ms()
            self._note(answers, now)
        return self.outages.cutoff(now)

    def _hold(self, now: int) -> BrokerHold | None:
        """The hold of the last broker outage a gateway recorded, while it moves deadlines;
        read when deadlines are due (a GET), so one due just after a crash sees it."""
        outage = self.store.broker_outage() if self.broker_hold_ms > 0 else None
        if outage is None:
            self.held_since_ms = None
            return None
        hold = BrokerHold.after(outage, now, self.broker_hold_ms, self.outages.grace_ms)
        if not hold.remembered(now):
            self.held_since_ms = None
            return None
        if hold.since_ms != self.held_since_ms:
            log.warning(
                "a device broker outage: deadlines of devices it disconnected are held until"
                " they are back",
                extra={"since_ms": outage.since_ms, "until_ms": outage.until_ms},
            )
        self.held_since_ms = hold.since_ms
        return hold

    def _note(self, answers: bool, now: int) -> None:
        """Tell the clock what the probe found; log and count the outage's edges."""
        was_down = self.outages.down
        if not answers:
            self.outages.unanswered(now)
            if not was_down:
                log.warning("Kafka does not answer: deadlines are held until it does")
            telemetry.KAFKA_DOWN.set(1)
            return
        pause = self.outages.answered(now)
        telemetry.KAFKA_DOWN.set(0)
        if pause is not None:
            self.store.share_pause(pause)
            log.warning(
                "Kafka answers again: deadlines from the outage on come due later",
                extra={"since_ms": pause.since_ms, "pushed_by_s": pause.by_ms / 1000},
            )
        else:
            shared = self.store.shared_pause()
            adopted = None if shared is None else self.outages.adopt(shared, now)
            if adopted is not None:
                log.warning(
                    "a Kafka outage another worker saw: deadlines from it on come due later",
                    extra={"since_ms": adopted.since_ms, "pushed_by_s": adopted.by_ms / 1000},
                )
        kept = self.outages.pause_at(now)
        telemetry.DEADLINE_PAUSE_SECONDS.set(kept.by_ms / 1000 if kept is not None else 0)

    def _fire(
        self,
        partition: int,
        device_ids: list[str],
        values: list[bytes | None],
        now: int,
        due_by: int,
        hold: BrokerHold | None,
    ) -> None:
        specs = self.store.specs(partition, values)
        futures = []
        leased = []  # leases dropped once Kafka has the timeouts; a held one stays
        for device_id, raw in zip(device_ids, values, strict=True):
            due = due_timeouts(device_id, raw, specs, now, due_by, hold)
            if not due.held:
                leased.append(device_id)
            if due.held_by_broker:
                telemetry.BROKER_HELD.inc()
            for record, deadline_ms in due.timeouts:
                futures.append(
                    self.producer.send(
                        self.inbox_topic,
                        value=encode(record),
                        key=device_id.encode(),
                        partition=partition,
                    )
                )
                telemetry.DUE_LAG_SECONDS.observe(max(0, now - deadline_ms) / 1000)
        telemetry.TIMEOUTS.inc(len(futures))
        self._fired.append(_Fired(partition, now + self.lease_ms, leased, futures))

    def _ack(self) -> None:
        """Drop the leases of timeouts Kafka acknowledged; a refused one keeps its lease,
        which runs out and fires the deadline again."""
        done: list[_Fired] = []
        pending: list[_Fired] = []
        for fired in self._fired:
            (done if all(f.is_done for f in fired.futures) else pending).append(fired)
        self._fired = pending
        leases = []
        for fired in done:
            failed = [f for f in fired.futures if f.failed()]
            if failed:
                log.warning(
                    "timeouts not written; their deadlines fire again after the lease",
                    extra={"partition": fired.partition, "error": str(failed[0].exception)},
                )
                continue
            leases.append((fired.partition, fired.lease_until_ms, fired.device_ids))
        if leases:
            self.store.ack_fired_many(leases)
