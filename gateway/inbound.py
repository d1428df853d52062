"""Uplink and presence handling: MQTT message in, Kafka records acknowledged, then PUBACK.

`Inbound.receive` is the MQTT link's acknowledged-message handler: it turns the message
into records, produces them, and calls the message's `ack` only once Kafka acknowledged
every one (acks=all), so a crash at any point before makes the broker redeliver it.
The hot path is plain callbacks (no task or future per message): completions come back
in one loop wake-up per produced batch.

Kafka failures stop intake (reading stops; messages already read are held unsent) until
the failed records are through, so a retry never puts a device's later record ahead of
an earlier one (what is already in flight keeps its per-partition order through Kafka's
idempotent producer):
- Retriable (timeout, Kafka away): once every record in flight has an answer, the failed
  ones are produced again in arrival order, by `ota.backoff.retry` (operation
  `gateway.produce`), until Kafka takes them.
- Not retriable (record too large for the topic, invalid topic, not authorised, ...):
  kafka-python's idempotent producer then fails everything after it too, so the
  producer is renewed and the failed records are sent again one at a time, in order.
  One refused again is the culprit: it is replaced by a dead letter (reason
  `kafka_refused`, the Kafka error, the raw MQTT message) and its message acknowledged
  once that is written. Only a dead letter itself refused for good is dropped (logged,
  counted in `records_dropped_total`).

The number of messages being handled is bounded: past the bound the gateway stops
reading the socket, and the broker holds the rest. Every message taken into the window
leaves it exactly once, when its `ack` is called (`ota_gateway_in_flight{direction="uplink"}`
shows the count): a message the gateway fails to translate (a defect, not bad input) is
dead-lettered (reason `gateway_error`) rather than left holding a slot and a broker
receive-maximum credit forever.

Recovery runs in `recovery`, one task for the life of the service supervised by the
runtime: if it raises, the service stops and exits 1 instead of staying up with intake
paused and nothing saying so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial

from prometheus_client import Counter

from gateway import metrics
from gateway.presence import PresenceSource, PresenceTracker
from gateway.settings import GatewaySettings
from gateway.slots import SplitMode
from gateway.throttle import PresenceThrottle
from gateway.uplink import (
    GATEWAY_ERROR,
    KAFKA_REFUSED,
    dead_letter,
    error_letter,
    refused_letter,
    translate,
)
from ota import kafka_errors
from ota.backoff import Backoff, StoppedError, retry
from ota.clock import now_ms
from ota.kafka_async import AsyncProducer
from ota.mqtt import Ack
from ota.protocol import ProtocolError
from ota.records import (
    DeadLetterRecord,
    DeviceEventRecord,
    PresenceRecord,
    encode,
    encode_device_event,
)

OutRecord = DeviceEventRecord | PresenceRecord | DeadLetterRecord

log = logging.getLogger(__name__)

PUBACK_SUCCESS = 0
RETRY = Backoff(0.1, 5.0)


class _NotTakenError(Exception):
    """Kafka has not taken some records yet (retriable errors): produce them again."""


class _Out:
    """One record of a message, encoded and routed."""

    __slots__ = ("dead_letter", "key", "topic", "value")

    def __init__(self, topic: str, key: bytes | None, value: bytes, dead_letter: bool) -> None:
        self.topic, self.key, self.value, self.dead_letter = topic, key, value, dead_letter


class _Message:
    """A received message until Kafka acknowledged all its records."""

    __slots__ = (
        "ack",
        "failed",
        "left",
        "outs",
        "payload",
        "received_ms",
        "seq",
        "started",
        "topic",
    )

    def __init__(
        self, seq: int, topic: str, payload: bytes, ack: Ack, outs: list[_Out], received_ms: int
    ) -> None:
        self.seq, self.topic, self.payload, self.ack = seq, topic, payload, ack
        self.outs = outs
        self.left = len(outs)  # records not yet acknowledged
        self.failed: list[int] = []  # indexes of records to produce again
        self.received_ms = received_ms
        self.started = 0.0


class Inbound:
    def __init__(
        self,
        settings: GatewaySettings,
        producer: AsyncProducer,
        presence: PresenceSource | None,
        pause_reading: Callable[[], None],
        resume_reading: Callable[[], None],
        backoff: Backoff = RETRY,
    ) -> None:
        self._settings = settings
        self._split = settings.split
        # Shared subscription or a single replica: every device is ours, skip the slot test.
        self._owns_all = settings.split.mode is SplitMode.SHARED or settings.split.replicas == 1
        self._inbox = settings.common.topics.inbox
        self._dead_letters = settings.common.topics.dead_letters
        self._producer = producer
        self._presence = presence
        self._tracker = PresenceTracker(
            frozenset({settings.common.mqtt_platform_user}), settings.platform_client_prefixes
        )
        self._throttle = PresenceThrottle(settings.uplink_presence_interval_ms)
        self._pause_reading = pause_reading
        self._resume_reading = resume_reading
        self._backoff = backoff
        self._limit = settings.uplink_in_flight
        self._in_flight = 0
        # Read when scraped, not set twice per message.
        metrics.IN_FLIGHT.labels("uplink").set_function(lambda: self._in_flight)
        self._paused = False
        self._seq = 0
        self._unanswered = 0  # records sent that Kafka has not answered yet
        self._recovering = False  # intake held until failed records are through
        self._trouble = asyncio.Event()  # wakes `recovery`
        self._retry: list[_Message] = []
        self._resend: list[tuple[_Message, int]] = []  # produced again on the next attempt
        self._suspect = False  # a non-retriable error since the producer was last renewed
        self._held: deque[_Message] = deque()
        self._answered = asyncio.Event()  # set when nothing is unanswered (during recovery)
        self._counters: dict[str, Counter] = {}
        self._counts: dict[str, int] = {}  # messages_in_total of this loop pass, not yet added
        self.idle = asyncio.Event()
        self.idle.set()
        metrics.PAUSED.set(0)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ------------------------------------------------------------------ intake

    def receive(self, topic: str, payload: bytes, _qos: int, ack: Ack) -> None:
        """Handle one MQTT message; `ack(PUBACK_SUCCESS)` once it is safely in Kafka."""
        self._enter()
        received = now_ms()
        try:
            if not topic.startswith("$oc/"):  # $SYS/... or $ota/presence/...: broker notices
                records = self._presence_records(topic, payload, received)
            else:
                records = self._uplink_records(topic, payload, received)
            outs = [self._route(r) for r in records]
        except Exception as error:  # a defect: still leave the window through a dead letter
            log.exception("uplink translation failed; dead-lettered", extra={"topic": topic[:200]})
            metrics.DEAD_LETTERS.labels(GATEWAY_ERROR).inc()
            outs = [self._route(error_letter(topic, payload, error, received))]
        if not outs:
            ack(PUBACK_SUCCESS)
            self._leave()
            return
        self._seq += 1
        message = _Message(self._seq, topic, payload, ack, outs, received)
        if self._recovering:
            self._held.append(message)
        else:
            self._send(message)

    def _uplink_records(self, topic: str, payload: bytes, received: int) -> list[OutRecord]:
        if not self._owns_all:
            parts = topic.split("/", 3)
            if not self._split.owns(parts[2] if len(parts) > 2 else ""):
                self._count("foreign")
                return []
        try:
            uplink = translate(topic, payload, received)
        except ProtocolError as error:
            letter = dead_letter(topic, payload, error, received)
            self._count("malformed")
            metrics.DEAD_LETTERS.labels(letter.reason).inc()
            log.info(
                "dead letter",
                extra={"reason": letter.reason, "detail": error.message, "topic": topic[:200]},
            )
            return [letter]
        records: list[OutRecord] = []
        for event in uplink.records:
            self._count(event.event_type)
            records.append(event)
        for service_id, event_type in uplink.ignored:  # few pairs: the labels stay bounded
            metrics.SYSTEM_EVENTS.labels(service_id, event_type).inc()
        device = uplink.device_id  # the topic's (parse_uplink knows no child devices here)
        if self._throttle.should_emit(device, received):
            records.append(
                PresenceRecord(device_id=device, online=True, source="uplink", at_ms=received)
            )
            metrics.PRESENCE.labels("uplink", "online").inc()
        return records

    def _presence_records(self, topic: str, payload: bytes, received: int) -> list[OutRecord]:
        if self._presence is None:
            return []
        notice = self._presence.parse(topic, payload)
        if notice is None:
            return []
        change = self._tracker.apply(notice)
        if change is None or not self._split.forwards_presence(change.device_id, notice.held):
            return []
        if not change.online:
            self._throttle.offline(change.device_id)
        state = "online" if change.online else "offline"
        metrics.PRESENCE.labels("broker", state).inc()
        self._count("presence")
        log.debug("presence", extra={"device_id": change.device_id, "state": state})
        return [
            PresenceRecord(
                device_id=change.device_id,
                online=change.online,
                at_ms=received,
                connection=change.connection,
            )
        ]

    def _count(self, kind: str) -> None:
        # Added to the counters once per loop pass (a counter's increment takes a lock).
        counts = self._counts
        if not counts:
            asyncio.get_running_loop().call_soon(self._add_counts)
        counts[kind] = counts.get(kind, 0) + 1

    def _add_counts(self) -> None:
        counts, self._counts = self._counts, {}
        for kind, count in counts.items():
            counter = self._counters.get(kind)
            if counter is None:
                counter = self._counters[kind] = metrics.MESSAGES_IN.labels(kind)
            counter.inc(count)

    def _route(self, record: OutRecord) -> _Out:
        if type(record) is DeviceEventRecord:  # most: encoded without orjson calling back
            return _Out(self._inbox, record.device_id.encode(), encode_device_event(record), False)
        if isinstance(record, DeadLetterRecord):
            return _Out(self._dead_letters, record.source.encode(), encode(record), True)
        return _Out(self._inbox, record.device_id.encode(), encode(record), False)

    # --------------------------------------------------------------- producing

    def _send(self, message: _Message) -> None:
        message.started = time.monotonic()
        for index in range(len(message.outs)):
            self._produce(message, index)

    def _produce(self, message: _Message, index: int) -> None:
        out = message.outs[index]
        self._unanswered += 1
        self._producer.produce(
            out.topic, out.key, out.value, partial(self._answered_by_kafka, message, index)
        )

    def _answered_by_kafka(
        self, message: _Message, index: int, error: BaseException | None
    ) -> None:
        self._unanswered -= 1
        if error is None:
            message.left -= 1  # as _acknowledged, inline: once per record
            if message.left == 0:
                self._delivered(message)
        else:
            self._failed(message, index)
            if not kafka_errors.worth_retrying(error):
                self._suspect = True
            self._start_recovery(error)
        if self._unanswered == 0 and self._recovering:
            self._answered.set()

    def _acknowledged(self, message: _Message) -> None:
        message.left -= 1
        if message.left == 0:
            self._delivered(message)

    def _failed(self, message: _Message, index: int) -> None:
        if not message.failed:
            self._retry.append(message)
        message.failed.append(index)

    def _delivered(self, message: _Message) -> None:
        metrics.PRODUCE_LATENCY.observe(time.monotonic() - message.started)
        message.ack(PUBACK_SUCCESS)
        self._leave()

    # ---------------------------------------------------------------- recovery

    def _start_recovery(self, error: BaseException) -> None:
        if not self._recovering:
            log.warning(
                "kafka produce failed; holding intake to retry", extra={"error": str(error)}
            )
            self._recovering = True
            self._answered.clear()
            self._trouble.set()
            self._update_reading()

    async def recovery(self, stop: asyncio.Event) -> None:
        """Whenever a produce failed: get the failed records through, then send what was
        held and resume intake. Runs until `stop` (spawn it on the runtime)."""
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                trouble = asyncio.ensure_future(self._trouble.wait())
                await asyncio.wait({trouble, stopping}, return_when=asyncio.FIRST_COMPLETED)
                trouble.cancel()
                if stop.is_set():
                    return
                try:
                    await retry(
                        "gateway.produce",
                        self._settle,
                        on=_NotTakenError,
                        policy=self._backoff,
                        stop=stop,
                    )
                except StoppedError:
                    return  # shutting down: what is not acknowledged, the broker redelivers
                self._recovering = False
                self._trouble.clear()
                held, self._held = self._held, deque()
                for message in held:
                    self._send(message)  # a failure here starts the next recovery
                self._update_reading()
        finally:
            stopping.cancel()

    async def _settle(self) -> None:
        """One attempt: produce again what failed last time, wait until every record sent
        has an answer; raise _NotTakenError while Kafka has not taken them all."""
        pending, self._resend = self._resend, []
        for message, index in pending:  # records Kafka took stay taken; ids unchanged
            self._produce(message, index)
        while True:
            if self._unanswered:
                await self._answered.wait()
            self._answered.clear()
            failed, self._retry = sorted(self._retry, key=lambda m: m.seq), []
            if not failed:
                return
            pending = [(m, i) for m in failed for i in sorted(m.failed)]
            for message in failed:
                message.failed = []
            if self._suspect:
                self._suspect = False
                await self._producer.renew()
                await self._isolate(pending)
                continue
            self._resend = pending
            raise _NotTakenError(f"{len(pending)} records not taken yet, in arrival order")

    async def _isolate(self, pending: list[tuple[_Message, int]]) -> None:
        """Send the records one at a time, in order, to find the one Kafka refuses."""
        for position, (message, index) in enumerate(pending):
            while True:
                error = await self._alone(message, index)
                if error is None:
                    self._acknowledged(message)
                    break
                if kafka_errors.worth_retrying(error):
                    # back to the ordered retries, from this record on
                    for later, later_index in pending[position:]:
                        self._failed(later, later_index)
                    return
                await self._producer.renew()  # the refusal left the producer failing all
                if message.outs[index].dead_letter:
                    self._drop(message, error)
                    break
                self._dead_letter(message, index, error)  # and send that, alone

    async def _alone(self, message: _Message, index: int) -> BaseException | None:
        out = message.outs[index]
        answer: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        def settle(error: BaseException | None) -> None:
            if not answer.done():  # cancelled at shutdown
                answer.set_result(error)

        self._producer.produce(out.topic, out.key, out.value, settle)
        return await answer

    def _dead_letter(self, message: _Message, index: int, error: BaseException) -> None:
        metrics.DEAD_LETTERS.labels(KAFKA_REFUSED).inc()
        log.error(
            "kafka refused a record for good; dead-lettered",
            extra={"error": str(error), "topic": message.topic[:200]},
        )
        letter = refused_letter(message.topic, message.payload, index, error, message.received_ms)
        message.outs[index] = self._route(letter)

    def _drop(self, message: _Message, error: BaseException) -> None:
        name = kafka_errors.translate(error).name
        log.error(
            "kafka refused a dead letter for good; dropped",
            extra={"error": str(error), "topic": message.topic[:200]},
        )
        metrics.DROPPED.labels(name).inc()
        self._acknowledged(message)

    # ---------------------------------------------------------------- bounding

    def _enter(self) -> None:
        self._in_flight += 1
        if self._in_flight == 1:
            self.idle.clear()
        if self._in_flight >= self._limit and not self._paused:
            self._update_reading()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._paused and self._in_flight <= self._limit // 2:
            self._update_reading()
        if self._in_flight == 0:
            self.idle.set()

    def _update_reading(self) -> None:
        if not self._paused:
            if self._recovering or self._in_flight >= self._limit:
                self._paused = True
                metrics.PAUSED.set(1)
                self._pause_reading()
        elif not self._recovering and self._in_flight <= self._limit // 2:
            self._paused = False
            metrics.PAUSED.set(0)
            self._resume_reading()
