"""Downlink: commands from Kafka published to devices, offsets committed after PUBACK.

The consumer is the services' asyncio group consumer (ota/kafka_async_consumer.py: its
blocking calls on a thread of its own); the event loop publishes. Each command is
published with QoS 1 in the IoTDA envelope (event_id = the command record's id) and a
bounded number are in flight.
A partition's offset is committed only past commands the broker acknowledged
(`OffsetTracker`), so a crash republishes, never skips. A record that is not a valid
command goes to the dead-letter topic and counts as done.

The poll loop never waits long on publishes: it polls for at most as many records as
there are free in-flight slots, and while none are free (the broker slow to acknowledge,
the link down) it keeps polling with its partitions paused, so the consumer stays in its
group and takes part in rebalances however long the backlog lasts.

Starting the consumer, a poll Kafka fails, a publish the link loses or the broker defers,
and a dead letter Kafka does not take are each retried by `ota.backoff.retry`
(operations `gateway.consumer_start`, `gateway.poll`, `gateway.publish`,
`gateway.dead_letter`). A publish task that raises anyway (a defect) fails the downlink
loop, a runtime-supervised task, so the service stops instead of holding that offset back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from gateway import metrics
from gateway.offsets import OffsetTracker
from gateway.uplink import MAX_RAW_BYTES, SOURCE
from ota.backoff import Backoff, StoppedError, retry
from ota.clock import now_ms
from ota.kafka_async import AsyncProducer
from ota.kafka_async_consumer import AsyncConsumer
from ota.kafka_consumer import RecordConsumer
from ota.kafka_errors import KafkaClientError
from ota.mqtt import MqttLink, PublishRefusedError, SessionLostError
from ota.protocol import Event, ProtocolError, check_downlink_paras, down_topic, encode_envelope
from ota.records import CommandRecord, DeadLetterRecord, RecordError, decode, encode

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.5
POLL_TIMEOUT_MS = 200
FULL_WAIT_S = 1.0  # with every slot taken, wait this long for one before polling paused
COMMAND_KINDS = frozenset({"command"})
RETRY = Backoff(0.1, 5.0)
# PUBACK failure codes worth publishing again: quota exceeded, the broker's own trouble.
RETRIABLE_REFUSALS = frozenset({0x97, 0x83})
# Session or connection lost, socket gone mid-write: publish again once the link is back
# (the offset stays uncommitted meanwhile); and refusals (see above).
PUBLISH_ERRORS = (SessionLostError, OSError, OverflowError, PublishRefusedError)


def command_payload(command: CommandRecord) -> bytes:
    """The IoTDA envelope a device receives for a command; raises ProtocolError if invalid."""
    paras = check_downlink_paras(command.event_type, command.paras)
    event = Event(event_type=command.event_type, paras=paras, event_id=command.id)
    return encode_envelope(command.device_id, (event,), command.at_ms or now_ms())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on the consumer thread inside poll(); the tracker lives on the loop."""

    def __init__(self, outbound: Outbound) -> None:
        self._outbound = outbound

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._outbound.on_revoked_from_thread(revoked)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info(
            "downlink partitions assigned",
            extra={"partitions": sorted(tp.partition for tp in assigned)},
        )


class Outbound:
    def __init__(
        self,
        consumer_factory: Callable[[], RecordConsumer],
        topic: str,
        link: MqttLink,
        producer: AsyncProducer,
        dead_letter_topic: str,
        in_flight: int,
        backoff: Backoff = RETRY,
        group: str | None = None,  # given: the process is unready until the consumer exists
    ) -> None:
        self._consumer_factory = consumer_factory
        self._topic = topic
        self._link = link
        self._producer = producer
        self._dead_letter_topic = dead_letter_topic
        self._in_flight = in_flight
        self._busy = 0  # publishes started and not finished
        self._freed = asyncio.Event()
        self._backoff = backoff
        self._tracker = OffsetTracker()
        self._member = AsyncConsumer("downlink", group=group, busy_poll_ms=POLL_TIMEOUT_MS)
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None  # a publish task that raised
        self._generation = 0  # bumped on revocation: late acks of old work are ignored
        self._unsent_commit: dict[int, int] = {}  # a refused commit, tried again next time

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await retry(
                "gateway.consumer_start",
                partial(
                    self._member.start,
                    self._consumer_factory,
                    [self._topic],
                    listener=_Rebalance(self),
                    stopped=stop.is_set,
                ),
                on=KafkaError,
                policy=self._backoff,
                stop=stop,
            )
        except StoppedError:
            return
        last_commit = time.monotonic()
        while not stop.is_set():
            if self._failure is not None:
                raise self._failure  # the downlink task fails: the runtime stops the service
            if self._busy >= self._in_flight:
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), FULL_WAIT_S)
            try:
                records = await retry(
                    "gateway.poll",
                    partial(self._poll, self._in_flight - self._busy),
                    on=KafkaError,
                    policy=self._backoff,
                    stop=stop,
                )
            except StoppedError:
                return
            for record in records:
                self._busy += 1
                self._tracker.started(record.partition, record.offset)
                self._spawn(record.partition, record.offset, record.value)
            metrics.IN_FLIGHT.labels("downlink").set(self._tracker.in_flight())
            if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                await self._commit()
                last_commit = time.monotonic()

    async def _poll(self, free: int) -> list[Any]:
        """At most `free` records; none while `free` is 0, polling paused to stay in the group."""
        if free > 0:
            return await self._member.poll(POLL_TIMEOUT_MS, free)
        await self._member.keep_membership()
        return []

    def _spawn(self, partition: int, offset: int, value: bytes) -> None:
        task = asyncio.create_task(self._publish(partition, offset, value, self._generation))
        self._tasks.add(task)
        task.add_done_callback(self._publish_done)

    def _publish_done(self, task: asyncio.Task[None]) -> None:
        # A publish that raised (a defect: its errors are retried or dead-lettered) holds
        # its offset back for good; fail the downlink loop rather than stall silently.
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()
            self._freed.set()

    async def _publish(self, partition: int, offset: int, value: bytes, generation: int) -> None:
        try:
            await self._publish_one(partition, offset, value)
        finally:
            self._busy -= 1
            self._freed.set()
        # Only reached on success: a cancelled publish (shutdown) is left uncommitted.
        if generation == self._generation:
            self._tracker.finished(partition, offset)

    async def _publish_one(self, partition: int, offset: int, value: bytes) -> None:
        origin = f"{self._topic}/{partition}/{offset}"
        try:
            command: CommandRecord = decode(value, COMMAND_KINDS)
            payload = command_payload(command)
        except (RecordError, ProtocolError) as error:
            # A RecordError code or an ota.protocol.Reason value.
            await self._dead_letter(origin, value, str(error.reason), error.message)
            return
        topic = down_topic(command.device_id)

        async def publish() -> None:
            started = time.monotonic()
            await self._link.publish_acked(topic, payload)
            metrics.PUBLISH_LATENCY.observe(time.monotonic() - started)

        try:
            await retry(
                "gateway.publish",
                publish,
                on=PUBLISH_ERRORS,
                policy=self._backoff,
                retriable=_worth_publishing_again,
                context={"device_id": command.device_id},
            )
        except PublishRefusedError as refused:  # a refusal for good
            reason = f"publish_refused_0x{refused.reason_code:02x}"
            await self._dead_letter(origin, value, reason, str(refused))
            return
        metrics.MESSAGES_OUT.labels(command.event_type).inc()

    async def _dead_letter(self, origin: str, value: bytes, reason: str, message: str) -> None:
        letter = DeadLetterRecord(
            source=SOURCE,
            reason=reason,
            message=message,
            raw_b64=DeadLetterRecord.raw_bytes(value[:MAX_RAW_BYTES]),
            origin=origin,
            at_ms=now_ms(),
        )
        metrics.DEAD_LETTERS.labels(reason).inc()
        log.info("dead letter", extra={"reason": reason, "origin": origin, "detail": message})
        raw = encode(letter)
        await retry(
            "gateway.dead_letter",
            lambda: self._producer.send(self._dead_letter_topic, SOURCE.encode(), raw),
            on=KafkaClientError,
            policy=self._backoff,
        )

    async def _commit(self) -> None:
        offsets = {**self._unsent_commit, **self._tracker.committable()}
        self._unsent_commit = {}
        if offsets:
            generation = self._generation
            refused = await self._member.commit(self._positions(offsets))
            # After a revocation meanwhile, these offsets may be another member's to commit.
            if refused is not None:
                self._commit_refused(refused)
                if generation == self._generation:
                    self._unsent_commit = {**offsets, **self._unsent_commit}

    def _positions(self, offsets: dict[int, int]) -> dict[TopicPartition, OffsetAndMetadata]:
        return {
            TopicPartition(self._topic, partition): OffsetAndMetadata(offset, "", -1)
            for partition, offset in offsets.items()
        }

    @staticmethod
    def _commit_refused(refused: KafkaError) -> None:
        # Not fatal: the offsets are committed on the next round, or the commands are
        # republished after a rebalance (devices and workers drop duplicates by event id).
        log.warning("downlink commit failed", extra={"error": str(refused)})

    def on_revoked_from_thread(self, revoked: list[TopicPartition]) -> None:
        """Commit what was acknowledged and drop the rest of the revoked partitions."""
        partitions = {tp.partition for tp in revoked}

        def settle() -> dict[int, int]:
            offsets = {**self._unsent_commit, **self._tracker.committable()}
            self._tracker.forget(partitions)
            # The kept partitions' commit points go with the next regular commit.
            self._unsent_commit = {p: o for p, o in offsets.items() if p not in partitions}
            self._generation += 1
            return {p: o for p, o in offsets.items() if p in partitions}

        offsets = asyncio.run_coroutine_threadsafe(_call(settle), self._loop).result(timeout=30)
        if offsets:
            refused = self._member.commit_here(self._positions(offsets))
            if refused is not None:
                self._commit_refused(refused)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for in-flight publishes, commit what they acknowledged, close."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
        if self._member.started:
            await self._commit()
        await self._member.close()


async def _call(function: Callable[[], dict[int, int]]) -> dict[int, int]:
    return function()


def _worth_publishing_again(error: BaseException) -> bool:
    return not isinstance(error, PublishRefusedError) or error.reason_code in RETRIABLE_REFUSALS
