"""The downlink's Kafka retries go through the shared helper: a consumer that fails to
start is closed and started again, a poll Kafka fails is polled again, each counted in
ota_retries_total; stop ends the waiting."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from gateway.outbound import Outbound
from ota.backoff import Backoff
from ota.metrics import REGISTRY
from ota.records import CommandRecord, encode


@dataclass(frozen=True)
class FakeRecord:
    partition: int
    offset: int
    value: bytes


class FlakyConsumer:
    """Subscribes after `subscribe_failures` refusals; each poll raises the next queued
    error, then returns nothing (and sets `polled_ok`)."""

    max_poll_records = 10

    def __init__(
        self,
        poll_errors: list[Exception],
        polled_ok: asyncio.Event,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.poll_errors = poll_errors
        self.records: list[list[FakeRecord]] = []  # batches the next polls return
        self.polls = 0
        self.closed = False
        self._polled_ok = polled_ok
        self._loop = loop

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def subscribe(self, topics: list[str], listener: object) -> None:
        pass

    def paused(self) -> list[object]:
        return []

    def resume(self, *partitions: object) -> None:
        pass

    def poll(self, timeout_ms: int, max_records: int) -> dict[object, list[FakeRecord]]:
        self.polls += 1
        if self.poll_errors:
            raise self.poll_errors.pop(0)
        if self.records:
            return {0: list(self.records.pop(0))}
        self._loop.call_soon_threadsafe(self._polled_ok.set)
        return {}

    def commit(self, offsets: object) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def _retries(operation: str) -> float:
    return REGISTRY.get_sample_value("ota_retries_total", {"operation": operation}) or 0.0


async def test_consumer_start_and_polls_are_retried_and_counted() -> None:
    polled_ok, loop = asyncio.Event(), asyncio.get_running_loop()
    made: list[FlakyConsumer] = []

    def factory() -> FlakyConsumer:
        if not made:  # the first consumer's subscribe fails: Kafka away
            consumer = FlakyConsumer([], polled_ok, loop)
            consumer.partitions_for_topic = _raise  # type: ignore[method-assign]
        else:
            consumer = FlakyConsumer(
                [KafkaConnectionError("gone"), KafkaConnectionError("gone")], polled_ok, loop
            )
        made.append(consumer)
        return consumer

    starts, polls = _retries("gateway.consumer_start"), _retries("gateway.poll")
    outbound = Outbound(
        factory,
        "ota.commands",
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        "ota.dead-letters",
        10,
        backoff=Backoff(0.001, 0.001),
    )
    stop = asyncio.Event()
    running = asyncio.create_task(outbound.run(stop))
    await asyncio.wait_for(polled_ok.wait(), 5)
    stop.set()
    await asyncio.wait_for(running, 5)
    assert len(made) == 2
    assert made[0].closed  # the consumer that failed to subscribe is not leaked
    assert made[1].polls >= 3
    assert _retries("gateway.consumer_start") == starts + 1
    assert _retries("gateway.poll") == polls + 2


def _raise(topic: str) -> set[int]:
    raise KafkaTimeoutError()


async def test_stop_ends_the_start_retries() -> None:
    loop, tried = asyncio.get_running_loop(), asyncio.Event()

    def factory() -> FlakyConsumer:
        loop.call_soon_threadsafe(tried.set)
        raise KafkaTimeoutError()

    outbound = Outbound(
        factory,
        "ota.commands",
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        "ota.dead-letters",
        10,
        backoff=Backoff(60.0, 60.0, rand=lambda: 1.0),  # only stop can end the wait
    )
    stop = asyncio.Event()
    running = asyncio.create_task(outbound.run(stop))
    await asyncio.wait_for(tried.wait(), 5)
    stop.set()  # the first attempt failed: now in (or entering) its 60 s wait
    await asyncio.wait_for(running, 5)
    assert not running.cancelled()


class BrokenLink:
    async def publish_acked(self, topic: str, payload: bytes, qos: int = 1) -> None:
        raise RuntimeError("link defect")


async def test_a_publish_that_raises_fails_the_downlink_loop() -> None:
    polled_ok, loop = asyncio.Event(), asyncio.get_running_loop()
    consumer = FlakyConsumer([], polled_ok, loop)
    command = encode(CommandRecord(device_id="d1", event_type="version_query", paras={}, at_ms=1))
    consumer.records = [[FakeRecord(0, 7, command)]]
    outbound = Outbound(
        lambda: consumer,
        "ota.commands",
        BrokenLink(),  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        "ota.dead-letters",
        10,
        backoff=Backoff(0.001, 0.001),
    )
    with pytest.raises(RuntimeError, match="link defect"):
        await asyncio.wait_for(outbound.run(asyncio.Event()), 5)
