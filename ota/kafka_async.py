"""The services' asyncio Kafka producer: the record producer (ota/kafka_producer.py)
driven from the event loop without blocking it.

Two ways to send: `produce(topic, key, value, on_done)` for a hot path (the gateway's
uplinks and the scheduler's releases: a plain callback, no future and no delivery
object per record) and `send(...)`, an awaitable delivery result (a future settled once
Kafka acknowledged the record or gave up on it).

A send only appends to a batch; the client's own thread delivers batches (linger and
batch size decide when, never a flush per message) and reports each record on that
thread. Completions are queued on a deque (no lock per record) and handed to the event
loop in one `call_soon_threadsafe` per burst (one wake-up for a whole produced batch, not
one per record), and run there as plain callbacks, which matters at tens of thousands of
records a second.

An idempotent producer turns some non-retriable produce errors into a fatal state in
which it fails all later records too; `renew` replaces it with a fresh producer.

A send to a topic whose metadata the client has not got yet would block the caller
until it has (kafka-python waits up to max_block_ms; confluent-kafka asks Kafka for the
partition count): `learn_topic` waits for it on a worker thread instead, and callers that
send to many topics (the scheduler) await it before producing; the gateway fetches its
two topics' metadata before it starts.

kafka-python wakes its sender thread for every send that starts a batch; here the
wake-ups are held (`wakeups()`) and given once per `wakeup_delay_s` (0: at the end of
the loop pass). A new batch waits for linger_ms before it is sent whatever happens, so
a wake-up given within the linger delays nothing, and a steady trickle of uplinks to
many partitions costs one sender pass per delay instead of one per record.

On kafka-python the partition of a keyed record is computed here once per key (Kafka's
murmur2, as kafka-python's default partitioner, librdkafka's murmur2 and the Java client
do) and cached, so `send` skips its per-record partitioner, which is pure Python;
librdkafka partitions in C, so records go to it without one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from kafka.partitioner.default import murmur2

from ota.backoff import Backoff, retry
from ota.kafka_errors import KafkaClientError, translate
from ota.kafka_producer import RecordProducer, Wakeups

log = logging.getLogger(__name__)

OnDone = Callable[[BaseException | None], None]

# Cached key partitions (about 200 bytes each); a bound so a fleet of millions does not
# grow it forever. Past it the cache starts again.
MAX_CACHED_KEYS = 100_000
PARTITION_REFRESH_S = 5.0
RENEW_BACKOFF = Backoff(0.2, 10.0)


class AsyncProducer:
    def __init__(
        self,
        producer: RecordProducer,
        loop: asyncio.AbstractEventLoop,
        create: Callable[[], RecordProducer] | None = None,
        backoff: Backoff = RENEW_BACKOFF,
        wakeup_delay_s: float = 0.0,
        renew_operation: str = "kafka.producer_renew",
    ) -> None:
        self._producer = producer
        self._wakeup_delay_s = wakeup_delay_s  # keep it below the producer's linger
        self._loop = loop
        self._create = create  # blocking: runs on a worker thread
        self._backoff = backoff
        self._renew_operation = renew_operation  # ota_retries_total's label for renewals
        # Completions from the client's thread; deque appends and pops are atomic, so
        # neither side takes a lock per record.
        self._done: collections.deque[tuple[OnDone, BaseException | None]] = collections.deque()
        self._scheduled = False
        self._partitions: dict[str, list[int]] = {}
        self._keys: dict[tuple[str, bytes], int] = {}
        self._refreshed = 0.0
        self._wakeups: Wakeups | None = None  # holding until `_release` runs

    def produce(self, topic: str, key: bytes | None, value: bytes | None, on_done: OnDone) -> None:
        """Send a record; `on_done(None | KafkaClientError)` runs on the loop once Kafka answered
        (acks=all). Never calls `on_done` before returning."""
        if self._wakeups is None:
            self._wakeups = self._producer.wakeups()
            self._wakeups.hold()
            if self._wakeup_delay_s > 0:
                self._loop.call_later(self._wakeup_delay_s, self._release)
            else:
                self._loop.call_soon(self._release)
        try:
            partition = None if self._producer.partitions_keys else self._partition(topic, key)
            self._producer.produce(topic, value, key, partition, partial(self._complete, on_done))
        except KafkaClientError as exc:  # no metadata in time, closed, bad topic
            self._complete(on_done, exc)

    def _release(self) -> None:
        if self._wakeups is not None:
            self._wakeups.release()
            self._wakeups = None

    def send(self, topic: str, key: bytes | None, value: bytes | None) -> asyncio.Future[None]:
        """The record's delivery: a future resolved once Kafka acknowledged it, failed with a
        KafkaClientError once the producer gave up on it."""
        future: asyncio.Future[None] = self._loop.create_future()

        def settle(error: BaseException | None) -> None:
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self.produce(topic, key, value, settle)
        return future

    async def learn_topic(self, topic: str) -> None:
        """Wait (on a worker thread, up to the producer's max_block_ms) until the client
        knows the topic's partitions, so a send to it does not block the loop. Raises
        KafkaClientError when Kafka did not tell in time (retriable) or refuses the topic."""
        if self._producer.knows(topic):
            return
        known = await asyncio.to_thread(self._producer.partitions_for, topic)
        if not known:
            raise KafkaClientError(
                f"no partitions known for topic {topic}", retriable=True, name="UnknownTopic"
            )

    def _partition(self, topic: str, key: bytes | None) -> int | None:
        if key is None:
            return None
        now = self._loop.time()
        if now - self._refreshed > PARTITION_REFRESH_S:
            self._refreshed = now
            self._refresh()
        cached = self._keys.get((topic, key))
        if cached is not None:
            return cached
        partitions = self._partitions.get(topic)
        if partitions is None:
            known = self._producer.partitions_for(topic)
            if not known:
                return None  # let kafka-python wait for the metadata and choose
            partitions = self._partitions[topic] = sorted(known)
        partition: int = partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        if len(self._keys) >= MAX_CACHED_KEYS:
            self._keys.clear()
        self._keys[(topic, key)] = partition
        return partition

    def _refresh(self) -> None:
        # A topic may gain partitions: then its keys map anew, as every producer's do.
        for topic, partitions in list(self._partitions.items()):
            if not self._producer.knows(topic):
                continue  # asking now would block until Kafka tells (after a restart)
            known = self._producer.partitions_for(topic)
            if known and len(known) != len(partitions):
                self._partitions[topic] = sorted(known)
                self._keys = {k: p for k, p in self._keys.items() if k[0] != topic}

    def _complete(self, on_done: OnDone, result: Any) -> None:
        # Runs on the producer's thread, or inline when the record failed at once.
        error = translate(result) if isinstance(result, BaseException) else None
        self._done.append((on_done, error))
        if self._scheduled:
            return  # the drain to come pops this completion: it clears the flag first
        self._scheduled = True
        # A closed loop raises RuntimeError: nobody waits for these completions any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # The flag is cleared before popping: a completion appended meanwhile is either
        # popped here or schedules a drain of its own (at worst one drain finds nothing).
        self._scheduled = False
        done = self._done
        while done:
            on_done, error = done.popleft()
            on_done(error)

    async def renew(self) -> None:
        """Replace the producer with a new one (retrying until Kafka answers); what the old
        one still held is failed, not delivered."""
        if self._create is None:
            raise RuntimeError("this producer has no factory to renew it with")
        create = self._create
        fresh = await retry(
            self._renew_operation,
            lambda: asyncio.to_thread(create),
            on=KafkaClientError,
            policy=self._backoff,
        )
        self._release()
        old, self._producer = self._producer, fresh
        log.warning("kafka producer renewed")
        await asyncio.to_thread(old.close, timeout=0)

    async def close(self, timeout_s: float) -> None:
        """Deliver what is batched (bounded by `timeout_s`), then close the producer."""
        await asyncio.to_thread(self._producer.close, timeout=timeout_s)
