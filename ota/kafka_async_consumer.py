"""The services' asyncio group consumer: one record consumer (ota/kafka_consumer.py) driven
from the event loop without blocking it.

A consumer's calls block and neither client is safe to call from two threads, so every
call on it runs on one thread of its own, in order; the loop awaits them. Written once
here for every asyncio service (the scheduler's consumers, the gateway's downlink):

- Given its group, the member keeps the process unready (ota/health.py) until the
  consumer is built: from then on that consumer's poll beat says whether it is ready.
- `start` builds the consumer on that thread, waits (bounded) until its topics' metadata
  is known, so that the group leader assigns every partition at the first join, then
  subscribes; a failure closes what was built and raises, for the caller to retry.
- `poll` returns the polled records in one list.
- `while_busy(work)` runs `work` while the member keeps polling with every partition
  paused: it answers rebalances and stays within max.poll.interval.ms however long the
  work takes (a batch retried while Redis is away), then resumes what it still owns.
- `keep_membership` is one such paused poll, for a caller that has no room for records
  (the gateway with every publish slot taken); `poll` resumes the partitions again.
- `commit` never raises for Kafka's refusals (the group rebalanced or dropped the
  member meanwhile: the partitions' next owner reads those records again, so a refused
  commit is not fatal); it returns the error for the caller to count and log.
- `close` closes the consumer (leaving the group) and ends the thread.

A rebalance listener runs on the consumer's thread inside `poll`, as both clients run it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from ota.health import HEALTH
from ota.kafka_consumer import RecordConsumer, poll_paused, resume_all, wait_for_partitions

log = logging.getLogger(__name__)

T = TypeVar("T")

# A paused poll while work runs waits this long: enough for a rebalance's JoinGroup and
# SyncGroup to complete in it, short enough to notice soon that the work ended.
BUSY_POLL_MS = 1_000
METADATA_WAIT_S = 30.0  # before subscribing; a topic still unknown then is joined anyway


class AsyncConsumer:
    """One group member whose blocking calls run on a thread of its own."""

    def __init__(
        self, name: str, *, group: str | None = None, busy_poll_ms: int = BUSY_POLL_MS
    ) -> None:
        self.name = name
        self._busy_poll_ms = busy_poll_ms
        self._built: Callable[[], None] = (
            HEALTH.hold(f"kafka-poll {group}") if group is not None else lambda: None
        )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-{name}")
        self._consumer: RecordConsumer | None = None

    @property
    def started(self) -> bool:
        return self._consumer is not None

    async def _on_thread(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    def _member(self) -> RecordConsumer:
        if self._consumer is None:
            raise RuntimeError(f"consumer {self.name} used before start")
        return self._consumer

    async def start(
        self,
        factory: Callable[[], RecordConsumer],
        topics: Sequence[str],
        *,
        listener: Any = None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        """Build the consumer, wait for its topics' metadata, subscribe; on a failure the
        consumer built is closed and the error raised."""
        consumer = await self._on_thread(factory)
        self._built()  # its poll beat (registered by make_consumer) takes over readiness
        try:
            await self._on_thread(self._subscribe, consumer, list(topics), listener, stopped)
        except BaseException:
            await self._on_thread(consumer.close)
            raise
        self._consumer = consumer

    @staticmethod
    def _subscribe(
        consumer: RecordConsumer,
        topics: list[str],
        listener: Any,
        stopped: Callable[[], bool],
    ) -> None:
        if not wait_for_partitions(consumer, topics, METADATA_WAIT_S, stopped):
            log.warning("topics have no metadata yet", extra={"topics": topics})
        consumer.subscribe(topics, listener=listener)

    async def poll(self, timeout_ms: int, max_records: int | None = None) -> list[Any]:
        """The records of one poll, at most `max_records` (and the client's
        max_poll_records); partitions paused by `keep_membership` are resumed first."""
        return await self._on_thread(self._poll, timeout_ms, max_records)

    def _poll(self, timeout_ms: int, max_records: int | None) -> list[Any]:
        consumer = self._member()
        resume_all(consumer)
        if max_records is not None:
            max_records = min(max_records, consumer.max_poll_records)
        polled = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [record for batch in polled.values() for record in batch]

    async def keep_membership(self) -> None:
        """One poll with every partition paused: reads nothing, stays in the group."""
        await self._on_thread(poll_paused, self._member(), self._busy_poll_ms)

    async def while_busy(self, work: Awaitable[T]) -> T:
        """`work`'s result, polling paused meanwhile; resumes the partitions afterwards.
        Cancelling this cancels `work`."""
        running = asyncio.ensure_future(work)
        await asyncio.wait({running}, timeout=self._busy_poll_ms / 1000)
        if running.done():
            return running.result()
        try:
            while not running.done():
                await self.keep_membership()
        finally:
            if not running.done():
                running.cancel()
            await self._on_thread(resume_all, self._member())
        return running.result()

    async def commit(
        self, offsets: dict[TopicPartition, OffsetAndMetadata] | None = None
    ) -> KafkaError | None:
        """Commit `offsets` (None: what was polled); Kafka's refusal is returned, not raised."""
        return await self._on_thread(self.commit_here, offsets)

    def commit_here(
        self, offsets: dict[TopicPartition, OffsetAndMetadata] | None = None
    ) -> KafkaError | None:
        """`commit` for a caller already on the consumer's thread (a rebalance listener)."""
        try:
            if offsets is None:
                self._member().commit()
            else:
                self._member().commit(offsets)
        except KafkaError as refused:
            return refused
        return None

    async def close(self) -> None:
        """Close the consumer (leaving its group) and end the thread."""
        if self._consumer is not None:
            await self._on_thread(self._consumer.close)
            self._consumer = None
        self._thread.shutdown(wait=False)
