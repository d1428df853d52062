"""A consumer batch that fails while Redis or Kafka is away is retried by the shared
helper (counted in ota_retries_total{operation="scheduler.batch"}) until it is applied,
or given up uncommitted once the service stops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from ota.backoff import Backoff
from ota.metrics import REGISTRY
from ota.settings import CommonSettings
from scheduler import bus


def _retries() -> float:
    sample = REGISTRY.get_sample_value("ota_retries_total", {"operation": "scheduler.batch"})
    return sample or 0.0


def _consumer(handler: bus.Handler) -> bus.Consumer:
    settings = CommonSettings.from_env({})
    return bus.Consumer(settings, topics=["t"], group_id="g", handler=handler, name="test")


async def test_a_failing_batch_is_retried_until_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus, "BATCH_RETRY", Backoff(0.1, 5.0, rand=lambda: 0.0))
    calls: list[Sequence[Any]] = []

    async def handler(records: Sequence[Any]) -> None:
        calls.append(records)
        if len(calls) < 3:
            raise RedisConnectionError("Redis away")

    before = _retries()
    assert await _consumer(handler)._handle(["r"], asyncio.Event()) is True
    assert len(calls) == 3
    assert _retries() == before + 2


async def test_stop_gives_the_batch_up_uncommitted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus, "BATCH_RETRY", Backoff(60.0, 60.0, rand=lambda: 1.0))
    stop = asyncio.Event()

    async def handler(records: Sequence[Any]) -> None:
        stop.set()  # the service stops while the batch fails
        raise RedisConnectionError("Redis away")

    assert await asyncio.wait_for(_consumer(handler)._handle(["r"], stop), 5) is False
