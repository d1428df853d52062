"""Two workers in one group split the partitions; a rebalance mid-job loses and
duplicates no transition."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from dataclasses import replace

from workerkit import TARGET, Inbox, Reader, ThreadWorker, reached, transitions

from ota.records import DownloadPhase, JobEventRecord
from workers.settings import WorkerSettings

CHAIN = [
    ("QUEUED", "QUERYING_VERSION"),
    ("QUERYING_VERSION", "COMMAND_SENT"),
    ("COMMAND_SENT", "DOWNLOADING"),
    ("DOWNLOADING", "DOWNLOADED"),
    ("DOWNLOADED", "UPDATING"),
    ("UPDATING", "SUCCEEDED"),
]


def test_rebalance_mid_job(wsettings: WorkerSettings, inbox: Inbox) -> None:
    devices = [f"dev-{uuid.uuid4().hex[:8]}-{i}" for i in range(24)]
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    first = ThreadWorker(wsettings)
    second: ThreadWorker | None = None
    try:
        for d in devices:
            inbox.online(d)
            inbox.start(d, "task-r")
        events.wait(lambda rs: all(reached(rs, d, "QUERYING_VERSION") for d in devices))
        for d in devices:
            inbox.version(d, "1.0")
            inbox.download(d, DownloadPhase.STARTED)
        second = ThreadWorker(replace(wsettings))  # same group: the partitions get split
        for d in devices:
            inbox.download(d, DownloadPhase.FINISHED)
        _wait_split(first, second)
        for d in devices:
            inbox.progress(d, 0, 50, "1.0")
        events.wait(lambda rs: all(reached(rs, d, "UPDATING") for d in devices), 60)
        for d in devices:
            inbox.progress(d, 0, 100, TARGET)
        got = events.wait(lambda rs: all(reached(rs, d, "SUCCEEDED") for d in devices), 60)
    finally:
        first.stop()
        if second is not None:
            second.stop()
        events.close()
    ids_per_version: dict[tuple[str, int], set[str]] = defaultdict(set)
    for r in got:
        if isinstance(r, JobEventRecord):
            ids_per_version[(r.device_id, r.job_version)].add(r.id)
    for d in devices:
        chain = transitions(got, d)
        assert [(f, t) for _, f, t in chain] == CHAIN, d
        assert [v for v, _, _ in chain] == list(range(1, len(CHAIN) + 1))
    # Redelivered records may be produced twice, but always with the same id.
    assert all(len(ids) == 1 for ids in ids_per_version.values())


def _wait_split(first: ThreadWorker, second: ThreadWorker) -> None:
    deadline = time.monotonic() + 60
    while not (second.worker.owned() and first.worker.owned()):
        assert time.monotonic() < deadline, "the group never split the partitions"
        time.sleep(0.05)
    assert not set(first.worker.owned()) & set(second.worker.owned())
