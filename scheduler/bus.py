"""Kafka I/O for the scheduler without blocking the event loop.

Records are produced with the services' asyncio producer (ota/kafka_async.py): handed
over on the loop, their deliveries awaited. The consumers' calls block, so each consumer
lives on its own single thread, which polls and commits. A consumer hands every polled
batch to an async handler and commits only after the handler returned (at-least-once;
handlers are idempotent).

Group membership outlives slow batches: while a handler runs (or retries while Redis
or Kafka is away) the consumer keeps polling with its partitions paused, so it keeps
answering rebalances and never exceeds max_poll_interval_ms. A commit refused because
the group moved on is not fatal: the partitions' next owner applies the batch again.

Sends from API requests are bounded (`SEND_TIMEOUT_S`, then the request answers 503);
the reconciler's sends are `patient`: while Kafka is away a release waits for it, and
what the producer gave up on is sent again with backoff, so a Kafka restart pauses the
rollout instead of stopping the reconciler; a record Kafka refuses for good ends it at
once. Both retries (a patient send, a batch while Redis or Kafka is away) go through
`ota.backoff.retry` (operations `scheduler.send`, `scheduler.batch`, counted in
`ota_retries_total`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from kafka.errors import KafkaError
from redis.exceptions import RedisError

from ota import metrics
from ota.backoff import Backoff, StoppedError, retry
from ota.kafka_async import AsyncProducer
from ota.kafka_async_consumer import AsyncConsumer
from ota.kafka_clients import make_admin, make_consumer, make_producer
from ota.kafka_errors import KafkaClientError, worth_retrying
from ota.settings import CommonSettings

log = logging.getLogger(__name__)

COMMIT_FAILURES = metrics.counter(
    "scheduler", "commit_failures_total", "Consumer commits Kafka refused", ("consumer",)
)
SEND_TIMEOUT_S = 30.0
SEND_RETRY = Backoff(0.2, 2.0)  # patient sends: Kafka is tried again at least every 2 s
BATCH_RETRY = Backoff(0.1, 5.0)  # a batch while Redis or Kafka is away
# Group timings. The session is also how long a member that lost its membership (Kafka
# away for longer than the session) leaves a ghost behind: it rejoins under a new member
# id once Kafka is back, and the group's rebalance waits for the old id to time out. So
# it is short on librdkafka, whose heartbeats run on its own threads, never stalled by a
# busy event loop; kafka-python heartbeats from a Python thread, which a starved process
# runs late: there a member survives ~45 s of CPU starvation before the group drops it.
# The poll interval bound only matters if the loop itself stalls (it polls while busy).
GROUP_CONFIG: dict[str, Any] = {
    "session_timeout_ms": 10_000,
    "heartbeat_interval_ms": 3_000,
    "max_poll_interval_ms": 300_000,
}
KAFKA_PYTHON_SESSION_MS = 45_000


def group_timings(settings: CommonSettings) -> dict[str, Any]:
    """The group timings for the client the settings name."""
    if settings.kafka_client == "kafka-python":
        return {**GROUP_CONFIG, "session_timeout_ms": KAFKA_PYTHON_SESSION_MS}
    return GROUP_CONFIG


class _NotTakenError(Exception):
    """Records a patient send has not got into Kafka yet: sent again after a backoff."""


@dataclass(frozen=True, slots=True)
class Out:
    topic: str
    key: str
    value: bytes | None  # None: a tombstone on a compacted topic


class Producer:
    """The scheduler's sends, on the services' asyncio producer (ota/kafka_async.py):
    records are handed over on the loop and their deliveries awaited, no thread per send."""

    def __init__(self, settings: CommonSettings) -> None:
        # Blocking (bootstrap), as the scheduler's start is: Kafka unreachable fails it.
        self._kafka = make_producer(settings, client_id="ota-scheduler")
        self._async: AsyncProducer | None = None  # bound to the loop by the first send
        # Patient sends go one after another (a later one starts once the earlier one's
        # records are all in Kafka), so a record resent after an outage never lands behind
        # a later send's; bounded sends do not queue behind them.
        self._patient = asyncio.Lock()
        self._unanswered: set[_Answers] = set()
        self._closed = False

    async def send(self, records: Iterable[Out], *, patient: bool = False) -> None:
        """Send and wait until Kafka acknowledged every record. Raises KafkaError when
        Kafka did not take them within `SEND_TIMEOUT_S`, unless `patient`: then the
        records Kafka did not take are sent again (in order, with backoff) until it does;
        a record Kafka refuses for good (too large, not authorised) raises at once. A
        delivery that timed out may have been written all the same: sent again, it is on
        the topic twice, which its consumers tolerate (every record carries its id)."""
        batch = list(records)
        if not batch:
            return
        if not patient:
            await self._send_bounded(batch)
            return
        async with self._patient:

            async def attempt() -> None:
                nonlocal batch
                batch = await self._not_taken(batch)
                if batch:
                    raise _NotTakenError(f"kafka did not take {len(batch)} records")

            await retry("scheduler.send", attempt, on=_NotTakenError, policy=SEND_RETRY)

    async def _send_bounded(self, batch: list[Out]) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                answers = await self._hand_over(batch)
                await answers.settled
        except TimeoutError as exc:
            raise KafkaClientError(
                f"kafka did not acknowledge {len(batch)} records in {SEND_TIMEOUT_S:.0f} s",
                retriable=True,
                name="KafkaTimeoutError",
            ) from exc
        for error in answers.errors:
            if error is not None:
                raise error

    async def _not_taken(self, batch: list[Out]) -> list[Out]:
        """Sends and waits for every answer (the producer retries each record up to its
        delivery timeout); returns the records Kafka did not take, in their order."""
        try:
            answers = await self._hand_over(batch)
        except KafkaClientError as exc:  # no metadata within max_block_ms: Kafka away
            if not exc.retriable:
                raise
            return batch
        await answers.settled  # every record answered, or one refused for good
        if answers.refused is not None:
            raise answers.refused  # not a pause: the release stops
        return [out for out, error in zip(batch, answers.errors, strict=True) if error]

    async def _hand_over(self, batch: list[Out]) -> _Answers:
        """The records handed to the producer, their answers counted in `_Answers`; first
        each topic's metadata, so that no send waits for it on the loop. (A send still
        waits, on confluent-kafka only, while librdkafka's queue is full: 100,000 records
        unacknowledged, far above what the scheduler keeps in flight.)"""
        if self._closed:  # librdkafka would queue the records with nobody to deliver them
            raise KafkaClientError("the producer is closed", retriable=False, name="Closed")
        loop = asyncio.get_running_loop()
        if self._async is None:
            self._async = AsyncProducer(self._kafka, loop)
        producer = self._async
        for topic in dict.fromkeys(out.topic for out in batch):
            await producer.learn_topic(topic)
        answers = _Answers(len(batch), loop)
        self._unanswered.add(answers)
        answers.settled.add_done_callback(lambda _: self._unanswered.discard(answers))
        for index, out in enumerate(batch):
            producer.produce(out.topic, out.key.encode(), out.value, partial(answers.note, index))
        return answers

    async def close(self) -> None:
        """Deliver what is handed over (bounded by `SEND_TIMEOUT_S`), close the producer;
        a send still waiting then fails (not retriable: the next reconciler releases its
        records again)."""
        self._closed = True
        if self._async is None:
            await asyncio.to_thread(self._kafka.close, timeout=SEND_TIMEOUT_S)
        else:
            await self._async.close(SEND_TIMEOUT_S)
        # The answers the close settled were handed to the loop before it returned.
        closed = KafkaClientError("producer closed before Kafka answered", retriable=False)
        for answers in list(self._unanswered):
            answers.fail(closed)


class _Answers:
    """Kafka's answers to one handed-over batch, noted on the loop (one future per batch,
    not one per record: a release hands over thousands of records a second)."""

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop) -> None:
        self.errors: list[BaseException | None] = [None] * size  # by the record's index
        self.refused: BaseException | None = None  # the first refusal for good
        self.settled: asyncio.Future[None] = loop.create_future()
        self._waiting = size

    def note(self, index: int, error: BaseException | None) -> None:
        """Record `index`'s answer; settles once all are in, or at a refusal for good."""
        self.errors[index] = error
        self._waiting -= 1
        if self.settled.done():
            return
        if error is not None and not worth_retrying(error):
            self.refused = error
            self.settled.set_result(None)
        elif self._waiting == 0:
            self.settled.set_result(None)

    def fail(self, error: BaseException) -> None:
        if not self.settled.done():
            self.settled.set_exception(error)
            self.settled.exception()  # read: a send that timed out no longer looks at it


Handler = Callable[[Sequence[Any]], Awaitable[None]]


class Consumer:
    """One consumer group member feeding `handler` batches, committing after each batch."""

    def __init__(
        self,
        settings: CommonSettings,
        *,
        topics: Sequence[str],
        group_id: str,
        handler: Handler,
        name: str,
        poll_ms: int = 200,
        group_config: dict[str, Any] | None = None,
    ) -> None:
        self._settings, self._topics, self._group = settings, topics, group_id
        self._handler, self._name, self._poll_ms = handler, name, poll_ms
        self._group_config = group_config or group_timings(settings)
        self._member = AsyncConsumer(name, group=group_id)  # unready until built

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Consume until `stop`; with `ready`, join the group only once it is set."""
        if ready is not None:
            waits = [asyncio.ensure_future(event.wait()) for event in (ready, stop)]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            if stop.is_set():
                return
        await self._member.start(
            lambda: make_consumer(
                self._settings,
                group_id=self._group,
                client_id=f"ota-scheduler-{self._name}",
                metadata_max_age_ms=30_000,  # notice new partitions within half a minute
                **self._group_config,
            ),
            self._topics,
            stopped=stop.is_set,
        )
        try:
            while not stop.is_set():
                records = await self._member.poll(self._poll_ms)
                if not records:
                    continue
                if await self._member.while_busy(self._handle(records, stop)):
                    await self._commit()
        finally:
            await self._member.close()

    async def _commit(self) -> None:
        refused = await self._member.commit()
        if refused is not None:
            # The group rebalanced (or dropped this member) meanwhile: the partitions' next
            # owner applies the batch again; the next poll rejoins if needed.
            COMMIT_FAILURES.labels(self._name).inc()
            log.warning("commit failed", extra={"consumer": self._name, "error": str(refused)})

    async def _handle(self, records: Sequence[Any], stop: asyncio.Event) -> bool:
        """Apply a batch, retrying while Redis or Kafka is unavailable; False if stopped first."""
        try:
            await retry(
                "scheduler.batch",
                lambda: self._handler(records),
                on=(RedisError, KafkaError),
                policy=BATCH_RETRY,
                stop=stop,
                context={"consumer": self._name},
            )
        except StoppedError:
            return False  # uncommitted: the next owner of the partitions applies it
        return True


def absent_topics(
    common: CommonSettings, topics: Iterable[str], timeout_ms: int = 5000
) -> set[str]:
    """Those of `topics` Kafka answers it does not have, in one request; Kafka away counts
    them as present (the services wait Kafka out, and each is in every deployment's set)."""
    try:
        admin = make_admin(common, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    except KafkaError:
        return set()
    try:
        return set(topics) - set(admin.list_topics())
    except KafkaError:
        return set()
    finally:
        admin.close()
