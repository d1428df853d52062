"""A Kafka outage's pause outlives the sweeper that saw it. A worker started after the outage
(restarted meanwhile, or a new replica) reads the pause another sweeper shared in Redis and
holds the deadlines it covers: the device's answer, late because of the outage, still ends
the job. Without the shared pause the same deadline fires and the job fails.

On the real Kafka and Redis (standalone and cluster). The outage is another process's,
shared the way a sweeper shares it, so Kafka stays up here;
tests/faults/workers/test_workers_kafka_outage.py kills it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest
import redis
from workerkit import SHORT, TARGET, Inbox, Reader, ThreadWorker, reached, transitions

from ota.clock import now_ms
from tests.waiting import wait_until
from workers.outages import Pause
from workers.settings import WorkerSettings
from workers.store import PAUSE_KEY, Store

VERSION_S = 2  # the version window: it ends before the device answers
PAUSED_BY_MS = 60_000  # the outage's push: far past the window and the test


@pytest.fixture
def store(wredis: redis.Redis[bytes]) -> Store:
    return Store(wredis)


def _deadline(store: Store, device: str, partitions: int) -> int:
    scores = [store.client.zscore(store.keys(p).deadlines, device) for p in range(partitions)]
    [deadline] = [int(score) for score in scores if score is not None]
    return deadline


@pytest.mark.parametrize("shared", [True, False], ids=["shared-pause", "no-pause"])
def test_a_worker_started_after_an_outage_holds_the_deadlines_it_paused(
    shared: bool, wsettings: WorkerSettings, store: Store
) -> None:
    now = now_ms()
    pause = Pause(since_ms=now - 5_000, by_ms=PAUSED_BY_MS, until_ms=now + 300_000)
    if shared:
        store.share_pause(pause)  # as a sweeper that saw Kafka come back does
    device = f"dev-{uuid.uuid4().hex[:10]}"
    inbox = Inbox(wsettings)
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    worker = ThreadWorker(wsettings)
    try:
        inbox.online(device)
        inbox.start(device, "task-pause", windows=replace(SHORT, version_s=VERSION_S))
        events.wait(lambda rs: reached(rs, device, "QUERYING_VERSION"))
        deadline = _deadline(store, device, partitions=4)
        # Sweeps well past the deadline (every 50 ms): a timeout due now has fired by then.
        wait_until(
            lambda: (worker.sweeper.probed_ms or 0) > deadline + 2_000,
            VERSION_S + 30,
            "the sweeper sweeping past the version deadline",
        )
        adopted = worker.sweeper.outages.pause
        inbox.version(device, TARGET)  # the device's answer, late
        got = events.wait(
            lambda rs: reached(rs, device, "SUCCEEDED") or reached(rs, device, "FAILED")
        )
    finally:
        worker.stop()
        inbox.close()
        events.close()
    ended = [(f, t) for _, f, t in transitions(got, device)]
    if shared:
        assert adopted == pause
        assert ended == [("QUEUED", "QUERYING_VERSION"), ("QUERYING_VERSION", "SUCCEEDED")]
    else:
        assert adopted is None
        assert ended == [("QUEUED", "QUERYING_VERSION"), ("QUERYING_VERSION", "FAILED")]


def test_a_shared_pause_expires_when_its_memory_ends(store: Store) -> None:
    now = now_ms()
    pause = Pause(since_ms=now - 1_000, by_ms=5_000, until_ms=now + 60_000)
    store.share_pause(pause)
    assert store.shared_pause() == pause
    assert 50_000 < store.client.pttl(PAUSE_KEY) <= 60_000
    store.client.set(PAUSE_KEY, b"not a pause")
    assert store.shared_pause() is None  # unreadable: ignored, deadlines fire as stored
