"""The one retry helper (ota/backoff.py): jittered capped delays, attempt limits, the
stop event, the retriable filter, and the ota_retries_total counter."""

from __future__ import annotations

import asyncio

import pytest

from ota.backoff import RETRIES, Backoff, StoppedError, retry
from ota.metrics import REGISTRY

NO_WAIT = Backoff(0.01, 0.01, rand=lambda: 0.0)


def retries(operation: str) -> float:
    value = REGISTRY.get_sample_value("ota_retries_total", {"operation": operation})
    return value or 0.0


class Flaky:
    """Fails `failures` times with `error`, then returns "done"."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures, self.error, self.calls = failures, error, 0
        self.called = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        self.called.set()
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_delays_are_full_jitter_under_a_growing_cap() -> None:
    top = Backoff(0.5, 4.0, rand=lambda: 1.0)
    assert [top.delay_s(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert Backoff(0.5, 4.0, rand=lambda: 0.25).delay_s(2) == 0.5
    assert top.delay_s(10_000) == 4.0  # no overflow for a long outage


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError, match="base"):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError, match="attempts"):
        Backoff(0.1, 1.0, attempts=-1)


async def test_retry_returns_once_the_call_succeeds_and_counts_each_retry() -> None:
    before = retries("test.flaky")
    flaky = Flaky(3, ConnectionError("refused"))
    assert await retry("test.flaky", flaky, on=ConnectionError, policy=NO_WAIT) == "done"
    assert flaky.calls == 4
    assert retries("test.flaky") - before == 3


async def test_retry_gives_up_after_the_attempt_limit_with_the_last_error() -> None:
    flaky = Flaky(10, ConnectionError("still refused"))
    policy = Backoff(0.01, 0.01, attempts=2, rand=lambda: 0.0)
    with pytest.raises(ConnectionError, match="still refused"):
        await retry("test.limit", flaky, on=ConnectionError, policy=policy)
    assert flaky.calls == 3  # the first try and two retries


async def test_other_errors_and_non_retriable_ones_are_not_retried() -> None:
    other = Flaky(1, KeyError("bug"))
    with pytest.raises(KeyError):
        await retry("test.other", other, on=ConnectionError, policy=NO_WAIT)
    assert other.calls == 1
    refused = Flaky(1, ConnectionError("refused for good"))
    with pytest.raises(ConnectionError):
        await retry(
            "test.filter",
            refused,
            on=ConnectionError,
            policy=NO_WAIT,
            retriable=lambda e: "for good" not in str(e),
        )
    assert refused.calls == 1


async def test_a_stop_while_waiting_ends_the_retries() -> None:
    stop = asyncio.Event()
    flaky = Flaky(1000, ConnectionError("down"))
    slow = Backoff(30.0, 30.0, rand=lambda: 1.0)  # would wait 30 s without the stop
    running = asyncio.create_task(
        retry("test.stop", flaky, on=ConnectionError, policy=slow, stop=stop)
    )
    await asyncio.wait_for(flaky.called.wait(), 5)
    stop.set()
    with pytest.raises(StoppedError):
        await asyncio.wait_for(running, 5)
    assert flaky.calls == 1


async def test_an_already_set_stop_still_tries_once() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await retry("test.set", Flaky(0, OSError()), on=OSError, policy=NO_WAIT, stop=stop)
    with pytest.raises(StoppedError):
        await retry("test.set", Flaky(1, OSError()), on=OSError, policy=NO_WAIT, stop=stop)


def test_the_counter_is_one_metric_labelled_by_operation() -> None:
    RETRIES.labels("test.label").inc()
    assert retries("test.label") >= 1
