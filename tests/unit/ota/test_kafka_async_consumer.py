"""The asyncio group consumer's own rules, on a recording stand-in for the client (the
real clients under it: tests/integration/scheduler/test_sched_group_membership.py and
tests/integration/gateway/test_downlink_membership.py)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from kafka.errors import CommitFailedError
from kafka.structs import TopicPartition

from ota.health import HEALTH
from ota.kafka_async_consumer import AsyncConsumer

TP = TopicPartition("t", 0)


class Recorder:
    """Records the calls the consumer makes; `poll` returns `records` once unpaused."""

    max_poll_records = 50

    def __init__(self, refuse_commit: bool = False) -> None:
        self.calls: list[str] = []
        self._paused: set[TopicPartition] = set()
        self.records: list[Any] = []
        self.refuse_commit = refuse_commit
        self.paused_polls = 0
        self.three_paused_polls = threading.Event()

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.calls.append(f"subscribe {topics}")

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        self.calls.append(f"poll paused={bool(self._paused)} max={max_records}")
        if self._paused:
            self.paused_polls += 1
            if self.paused_polls == 3:
                self.three_paused_polls.set()
        return {} if self._paused else {TP: list(self.records)}

    def commit(self, offsets: Any = None) -> None:
        self.calls.append("commit")
        if self.refuse_commit:
            raise CommitFailedError("the group rebalanced")

    def close(self) -> None:
        self.calls.append("close")


async def _started(recorder: Recorder) -> AsyncConsumer:
    member = AsyncConsumer("test", busy_poll_ms=10)
    await member.start(lambda: recorder, ["t"])  # type: ignore[arg-type,return-value]
    return member


async def test_work_longer_than_a_poll_keeps_the_member_polling_paused_then_resumes() -> None:
    recorder = Recorder()
    member = await _started(recorder)
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "applied"

    busy = asyncio.ensure_future(member.while_busy(work()))
    assert await asyncio.to_thread(recorder.three_paused_polls.wait, 10)
    release.set()
    assert await busy == "applied"
    assert recorder.paused() == set()  # resumed: the next poll reads again
    await member.close()
    assert recorder.calls[0] == "subscribe ['t']"
    assert recorder.calls[-1] == "close"


async def test_a_poll_resumes_paused_partitions_and_caps_at_max_poll_records() -> None:
    recorder = Recorder()
    recorder.records = ["r1", "r2"]
    member = await _started(recorder)
    await member.keep_membership()
    assert await member.poll(10, max_records=500) == ["r1", "r2"]
    assert recorder.calls[-1] == "poll paused=False max=50"
    await member.close()


async def test_a_refused_commit_is_returned_not_raised() -> None:
    member = await _started(Recorder(refuse_commit=True))
    refused = await member.commit()
    assert isinstance(refused, CommitFailedError)
    await member.close()


async def test_a_failed_start_closes_what_it_built() -> None:
    recorder = Recorder()

    def refuse(topics: list[str], listener: Any = None) -> None:
        raise CommitFailedError("no coordinator")

    recorder.subscribe = refuse  # type: ignore[method-assign]
    member = AsyncConsumer("test")
    with pytest.raises(CommitFailedError):
        await member.start(lambda: recorder, ["t"])  # type: ignore[arg-type,return-value]
    assert recorder.calls == ["close"]
    assert not member.started
    with pytest.raises(RuntimeError, match="before start"):
        await member.poll(10)


async def test_a_member_given_its_group_holds_readiness_until_its_consumer_is_built() -> None:
    member = AsyncConsumer("test", group="g-readiness")
    assert "starting: kafka-poll g-readiness" in HEALTH.ready().reasons
    await member.start(lambda: Recorder(), ["t"])  # type: ignore[arg-type,return-value]
    assert "starting: kafka-poll g-readiness" not in HEALTH.ready().reasons
    await member.close()
