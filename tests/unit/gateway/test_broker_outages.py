"""The gateway records a broker outage as soon as its link drops without being asked to,
as ongoing (written again while it lasts), and its end once the link is back: from the
first drop to the return; not the first connect, not a drop while stopping; a Redis that
does not answer the end is asked again; a broker that kept the gateway's session did not
restart, and the ongoing record is withdrawn."""

from __future__ import annotations

import asyncio

import redis

from gateway.broker_outages import BrokerOutages
from ota.broker_outage import BrokerOutage


class Recorder:
    """An outage store that remembers what the gateway wrote (`written` yields each as it
    comes, withdrawals as ("withdrawn", outage)); `failures`: how many writes fail first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.written: asyncio.Queue[object] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()

    def _put(self, item: object) -> None:  # runs on a worker thread
        self.calls += 1
        if self.calls <= self.failures:
            raise redis.ConnectionError("no Redis here")
        self.loop.call_soon_threadsafe(self.written.put_nowait, item)

    def record(self, outage: BrokerOutage) -> None:
        self._put(outage)

    def withdraw(self, outage: BrokerOutage) -> None:
        self._put(("withdrawn", outage))

    async def next(self) -> object:
        return await asyncio.wait_for(self.written.get(), 30)


async def test_an_outage_is_recorded_as_ongoing_then_with_its_end() -> None:
    recorder = Recorder()
    outages = BrokerOutages(recorder, asyncio.Event(), refresh_s=0.01)
    outages.link_changed(True)  # the first connect: nothing to record
    outages.link_changed(False)
    since = outages.down_since_ms
    assert since is not None
    outages.link_changed(False)  # a failed reconnect attempt reports the drop again
    assert outages.down_since_ms == since
    assert await recorder.next() == BrokerOutage(since)
    assert await recorder.next() == BrokerOutage(since)  # written again while it lasts
    outages.link_changed(True)
    end = await recorder.next()
    while end == BrokerOutage(since):  # an ongoing write already under way
        end = await recorder.next()
    assert isinstance(end, BrokerOutage)
    assert end.since_ms == since
    assert end.until_ms is not None
    assert end.until_ms >= since
    assert outages.down_since_ms is None


async def test_the_first_connect_records_nothing() -> None:
    outages = BrokerOutages(Recorder(), asyncio.Event())
    outages.link_changed(True)
    assert outages.down_since_ms is None
    assert not outages._following


async def test_a_drop_while_stopping_is_not_an_outage() -> None:
    stop = asyncio.Event()
    outages = BrokerOutages(Recorder(), stop)
    outages.link_changed(True)
    stop.set()
    outages.link_changed(False)
    assert outages.down_since_ms is None


async def down_and_recorded() -> tuple[Recorder, BrokerOutages, int]:
    """An outage under way whose ongoing record was written (refreshed only after 60 s)."""
    recorder = Recorder()
    outages = BrokerOutages(recorder, asyncio.Event(), refresh_s=60)
    outages.link_changed(False)
    since = outages.down_since_ms
    assert since is not None
    assert await recorder.next() == BrokerOutage(since)
    return recorder, outages, since


async def test_an_end_redis_refuses_at_first_is_written_again() -> None:
    recorder, outages, _ = await down_and_recorded()
    recorder.failures = recorder.calls + 2  # the end fails twice, then is written
    outages.link_changed(True)
    end = await recorder.next()
    assert isinstance(end, BrokerOutage)
    assert end.until_ms is not None
    assert recorder.calls == 4


async def test_a_broker_that_kept_the_session_did_not_restart_and_the_record_is_withdrawn() -> None:
    recorder, outages, since = await down_and_recorded()
    outages.link_changed(True, session_kept=True)
    assert await recorder.next() == ("withdrawn", BrokerOutage(since))
    assert recorder.written.empty()
