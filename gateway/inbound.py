"""Uplink and presence handling: MQTT message in, Kafka records acknowledged, then PUBACK.

`Inbound.handle` is gmqtt's `on_message` (with optimistic acknowledgement off): it
returns only after Kafka acknowledged every record the message became, and gmqtt sends
the PUBACK then. If Kafka fails, the records are produced again with backoff; the
message stays unacknowledged meanwhile, so a crash makes the broker redeliver it.
The number of messages being handled is bounded: past the bound the gateway stops
reading the socket, and the broker holds the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway import metrics
from gateway.kafka_bridge import AsyncProducer, ProduceError
from gateway.presence import PresenceSource, PresenceTracker
from gateway.settings import GatewaySettings
from gateway.throttle import PresenceThrottle
from gateway.uplink import dead_letter, device_records
from ota.backoff import Backoff
from ota.clock import now_ms
from ota.protocol import ProtocolError
from ota.records import DeadLetterRecord, DeviceEventRecord, PresenceRecord, encode

OutRecord = DeviceEventRecord | PresenceRecord | DeadLetterRecord

log = logging.getLogger(__name__)

PUBACK_SUCCESS = 0
RETRY = Backoff(0.1, 5.0)


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
        self._topics = settings.common.topics
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
        self._paused = False
        self.idle = asyncio.Event()
        self.idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def handle(self, topic: str, payload: bytes, _qos: int) -> int:
        self._enter()
        try:
            if topic.startswith("$SYS/"):
                await self._deliver(self._presence_records(topic, payload))
            else:
                await self._uplink(topic, payload)
            return PUBACK_SUCCESS
        finally:
            self._leave()

    def _enter(self) -> None:
        self._in_flight += 1
        self.idle.clear()
        if self._in_flight >= self._limit and not self._paused:
            self._paused = True
            metrics.PAUSED.set(1)
            self._pause_reading()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._paused and self._in_flight <= self._limit // 2:
            self._paused = False
            metrics.PAUSED.set(0)
            self._resume_reading()
        if self._in_flight == 0:
            self.idle.set()

    async def _uplink(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/", 3)
        device = parts[2] if len(parts) > 2 else ""
        if not self._settings.split.owns(device):
            metrics.MESSAGES_IN.labels("foreign").inc()
            return
        received = now_ms()
        records: list[OutRecord]
        try:
            events = device_records(topic, payload, received)
        except ProtocolError as error:
            letter = dead_letter(topic, payload, error, received)
            metrics.MESSAGES_IN.labels("malformed").inc()
            metrics.DEAD_LETTERS.labels(letter.reason).inc()
            log.info(
                "dead letter",
                extra={"reason": letter.reason, "detail": error.message, "topic": topic[:200]},
            )
            records = [letter]
        else:
            for event in events:
                metrics.MESSAGES_IN.labels(event.event_type).inc()
            records = list(events)
            if self._throttle.should_emit(device, received):
                records.append(
                    PresenceRecord(device_id=device, online=True, source="uplink", at_ms=received)
                )
                metrics.PRESENCE.labels("uplink", "online").inc()
        await self._pause_point("before_kafka_ack")
        await self._deliver(records)
        await self._pause_point("before_puback")

    def _presence_records(self, topic: str, payload: bytes) -> list[OutRecord]:
        if self._presence is None:
            return []
        notice = self._presence.parse(topic, payload)
        if notice is None:
            return []
        change = self._tracker.apply(notice)
        if change is None or not self._settings.split.owns_presence(change.device_id):
            return []
        if not change.online:
            self._throttle.offline(change.device_id)
        state = "online" if change.online else "offline"
        metrics.PRESENCE.labels("broker", state).inc()
        metrics.MESSAGES_IN.labels("presence").inc()
        log.debug("presence", extra={"device_id": change.device_id, "state": state})
        return [PresenceRecord(device_id=change.device_id, online=change.online, at_ms=now_ms())]

    async def _deliver(self, records: list[OutRecord]) -> None:
        """Produce the records and wait for Kafka; retry with backoff until it takes them."""
        attempt = 0
        while records:
            started = time.monotonic()
            futures = [self._producer.send(*self._route(record)) for record in records]
            results: list[BaseException | None] = []
            for future in futures:  # all are already sent; awaiting in turn costs no latency
                try:
                    await future
                    results.append(None)
                except ProduceError as exc:
                    results.append(exc)
            failed = [r for r, result in zip(records, results, strict=True) if result is not None]
            if len(failed) < len(records):
                metrics.PRODUCE_LATENCY.observe(time.monotonic() - started)
            if not failed:
                return
            error = next(result for result in results if isinstance(result, ProduceError))
            if not error.retriable:
                log.error("kafka refused a record for good", extra={"error": str(error)})
            delay = self._backoff.delay_s(attempt)
            metrics.RETRIES.labels("produce").inc()
            log.warning(
                "kafka produce failed; retrying",
                extra={"error": str(error), "records": len(failed), "retry_in_s": round(delay, 3)},
            )
            attempt += 1
            await asyncio.sleep(delay)
            # Records Kafka took stay taken; only the failed ones go again (ids unchanged).
            records = failed

    def _route(self, record: OutRecord) -> tuple[str, bytes | None, bytes]:
        if isinstance(record, DeadLetterRecord):
            return self._topics.dead_letters, record.source.encode(), encode(record)
        return self._topics.inbox, record.device_id.encode(), encode(record)

    async def _pause_point(self, point: str) -> None:
        if self._settings.test_pause_at != point:
            return
        log.warning("test pause", extra={"point": point})
        await asyncio.Event().wait()  # until the test kills the process
