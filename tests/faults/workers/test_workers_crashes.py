"""Crashes of a worker process (SIGKILL) at the worst moments, and a rebuild afterwards."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from typing import cast

import redis
from workerkit import TARGET, Inbox, Reader, ThreadWorker, reached, spawn_worker, transitions

from ota.records import DownloadPhase, JobEventRecord, Windows
from workers.consumer import RedisFlushedError
from workers.rebuild import dump_partition, rebuild
from workers.settings import WorkerSettings
from workers.store import Store

PARTITIONS = range(4)


def dev() -> str:
    return f"dev-{uuid.uuid4().hex[:10]}"


def _killed(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    assert proc.wait(timeout_s) == -signal.SIGKILL


def test_kill_between_redis_write_and_commit(
    wsettings: WorkerSettings, inbox: Inbox, wredis: redis.Redis[bytes]
) -> None:
    d = dev()
    inbox.online(d)
    inbox.start(d, "task-k")
    crashing = spawn_worker(wsettings, "--crash-after-write", "1")
    _killed(crashing)  # died with the batch in Redis, nothing produced, nothing committed
    store = Store(wredis)
    assert any(store.pending_outbox(p) for p in PARTITIONS)
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    commands = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.commands)
    worker = ThreadWorker(wsettings)
    try:
        events.wait(lambda rs: reached(rs, d, "QUERYING_VERSION"))
        commands.wait(lambda rs: len(rs) >= 1)
        inbox.version(d, TARGET)
        got = events.wait(lambda rs: reached(rs, d, "SUCCEEDED"))
    finally:
        worker.stop()
        events.close()
        commands.close()
    assert [(f, t) for _, f, t in transitions(got, d)] == [
        ("QUEUED", "QUERYING_VERSION"),
        ("QUERYING_VERSION", "SUCCEEDED"),
    ]
    assert not any(store.pending_outbox(p) for p in PARTITIONS)


def test_deadline_fires_after_the_owner_was_killed(wsettings: WorkerSettings, inbox: Inbox) -> None:
    d = dev()
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    owner = spawn_worker(wsettings)
    try:
        inbox.online(d)
        inbox.start(d, "task-t", windows=Windows(version_s=3))
        started = events.wait(lambda rs: reached(rs, d, "QUERYING_VERSION"), 60)
    finally:
        owner.kill()
        owner.wait(30)
    deadline_ms = started[-1].at_ms + 3000
    worker = ThreadWorker(wsettings)
    try:
        got = events.wait(lambda rs: reached(rs, d, "FAILED"), 60)
    finally:
        worker.stop()
        events.close()
    [failed] = [r for r in got if isinstance(r, JobEventRecord) and r.to_state == "FAILED"]
    assert failed.cause == 4  # VERSION_REPORT_TIMEOUT
    assert failed.at_ms >= deadline_ms


def test_rebuild_reproduces_state_after_timeouts_retries_and_crashes(
    wsettings: WorkerSettings, inbox: Inbox, wredis: redis.Redis[bytes]
) -> None:
    quick = Windows(online_s=1, version_s=1, download_start_s=1)
    ok, retried, timed_out, offline, busy = (dev() for _ in range(5))
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    for d in (ok, retried, timed_out, busy):
        inbox.online(d)
    inbox.online(offline, False)
    inbox.start(ok, "task-x")
    inbox.start(retried, "task-x", windows=quick, retry_count=2, retry_interval_s=1)
    inbox.start(timed_out, "task-x", windows=quick)
    inbox.start(offline, "task-x", windows=quick)
    inbox.start(busy, "task-x")
    inbox.start(busy, "task-y")  # conflict: fails at once
    _killed(spawn_worker(wsettings, "--crash-after-write", "2"))
    worker = ThreadWorker(wsettings)
    try:
        inbox.version(ok, "1.0")
        inbox.version(timed_out, "1.0")  # command sent, download never starts
        inbox.version(busy, "1.0")
        inbox.download(ok, DownloadPhase.STARTED)
        inbox.progress(ok, 0, 100, TARGET)
        inbox.progress(busy, 1, None, "1.0")  # device busy
        finals = ("SUCCEEDED", "FAILED")
        events.wait(
            lambda rs: all(
                any(reached(rs, d, s) for s in finals)
                for d in (ok, retried, timed_out, offline, busy)
            ),
            60,
        )
        inbox.progress(ok, 0, 100, TARGET)  # late duplicate: a note only
        events.wait(
            lambda rs: any(r.device_id == ok and r.detail.get("note") == "late_report" for r in rs)
        )
    finally:
        worker.stop()
        events.close()
    assert len([t for t in transitions(events.records, retried) if t[2] == "WAITING_RETRY"]) == 2
    store = Store(wredis)
    before = {p: dump_partition(store, p) for p in PARTITIONS}
    assert sum(len(cast(dict[bytes, object], b["devices"])) for b in before.values()) == 5
    wredis.flushdb()
    counts = rebuild(wsettings, store, list(PARTITIONS))
    assert sum(counts.values()) >= 20
    after = {p: dump_partition(store, p) for p in PARTITIONS}
    for p in PARTITIONS:
        for key, value in before[p].items():
            assert after[p][key] == value, (p, key)


def to_command_sent(inbox: Inbox, events: Reader, device: str, task: str) -> None:
    """A device online, its job started and its version reported: the command is out."""
    inbox.online(device)
    inbox.start(device, task)
    inbox.version(device, "1.0")
    events.wait(lambda rs: reached(rs, device, "COMMAND_SENT"))


def test_lost_redis_is_rebuilt_without_sending_history_again(
    wsettings: WorkerSettings, inbox: Inbox, wredis: redis.Redis[bytes]
) -> None:
    d = dev()
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    commands = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.commands)
    worker = ThreadWorker(wsettings)
    try:
        to_command_sent(inbox, events, d, "task-l")
    finally:
        worker.stop()  # commits the group's offsets
    store = Store(wredis)
    before = {p: dump_partition(store, p) for p in PARTITIONS}
    wredis.flushdb()  # Redis lost
    again = ThreadWorker(wsettings)  # same group: its committed offsets mark the history
    try:
        deadline = time.monotonic() + 60
        while {p: dump_partition(store, p) for p in PARTITIONS} != before:
            assert time.monotonic() < deadline, "the state was never rebuilt"
            time.sleep(0.1)
        inbox.download(d, DownloadPhase.STARTED)
        got = events.wait(lambda rs: reached(rs, d, "DOWNLOADING"))
    finally:
        again.stop()
    sent = commands.drain()
    events.close()
    commands.close()
    assert [type(r).__name__ for r in sent] == ["CommandRecord", "CommandRecord"]
    assert [(r.from_state, r.to_state) for r in got if isinstance(r, JobEventRecord)] == [
        ("QUEUED", "QUERYING_VERSION"),
        ("QUERYING_VERSION", "COMMAND_SENT"),
        ("COMMAND_SENT", "DOWNLOADING"),
    ]


def test_redis_emptied_under_a_running_worker_stops_it_and_a_restart_rebuilds(
    wsettings: WorkerSettings, inbox: Inbox, wredis: redis.Redis[bytes]
) -> None:
    d = dev()
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    worker = ThreadWorker(wsettings)
    try:
        to_command_sent(inbox, events, d, "task-f")
        store = Store(wredis)
        before = {p: dump_partition(store, p) for p in PARTITIONS}
        wredis.flushdb()  # emptied under the running worker
        inbox.download(d, DownloadPhase.STARTED)
        worker.threads[0].join(60)  # its consumer loop ends with the failure
        assert not worker.threads[0].is_alive(), "the worker kept running on an emptied Redis"
    finally:
        with contextlib.suppress(RedisFlushedError):
            worker.stop()
    assert isinstance(worker.error, RedisFlushedError)
    assert not any(dump_partition(store, p)["devices"] for p in PARTITIONS)  # nothing applied
    again = ThreadWorker(wsettings)  # the restart: rebuilt quietly, then the report applied
    try:
        got = events.wait(lambda rs: reached(rs, d, "DOWNLOADING"))
        rebuilt = {p: dump_partition(store, p) for p in PARTITIONS}
    finally:
        again.stop()
        events.close()
    assert [(r.from_state, r.to_state) for r in got if isinstance(r, JobEventRecord)] == [
        ("QUEUED", "QUERYING_VERSION"),
        ("QUERYING_VERSION", "COMMAND_SENT"),
        ("COMMAND_SENT", "DOWNLOADING"),
    ]
    assert sum(len(cast(dict[bytes, object], b["devices"])) for b in before.values()) == 1
    assert sum(len(cast(dict[bytes, object], b["devices"])) for b in rebuilt.values()) == 1
