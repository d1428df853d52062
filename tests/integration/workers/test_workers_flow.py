"""A job driven by hand-made inbox records through the real Kafka and Redis."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

import redis
from workerkit import SHA, TARGET, Inbox, Reader, ThreadWorker, reached, transitions

from ota import tokens
from ota.records import (
    CommandRecord,
    DeadLetterRecord,
    DownloadPhase,
    JobEventRecord,
    PresenceRecord,
    Windows,
)
from workers.apply import apply_partition
from workers.batch import InboxItem
from workers.rebuild import dump_partition
from workers.settings import WorkerSettings
from workers.store import Store


def dev() -> str:
    return f"dev-{uuid.uuid4().hex[:10]}"


def test_main_path_to_success(wsettings: WorkerSettings, inbox: Inbox) -> None:
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    commands = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.commands)
    worker = ThreadWorker(wsettings)
    try:
        d = dev()
        inbox.online(d)
        inbox.start(d, "task-a")
        commands.wait(lambda rs: len(rs) >= 1)
        inbox.version(d, "1.0")
        sent = commands.wait(lambda rs: len(rs) >= 2)
        inbox.download(d, DownloadPhase.STARTED)
        inbox.download(d, DownloadPhase.FINISHED)
        inbox.progress(d, 0, 60, "1.0")
        inbox.progress(d, 0, 100, TARGET)
        got = events.wait(lambda rs: reached(rs, d, "SUCCEEDED"))
    finally:
        worker.stop()
        events.close()
        commands.close()
    assert [(f, t) for _, f, t in transitions(got, d)] == [
        ("QUEUED", "QUERYING_VERSION"),
        ("QUERYING_VERSION", "COMMAND_SENT"),
        ("COMMAND_SENT", "DOWNLOADING"),
        ("DOWNLOADING", "DOWNLOADED"),
        ("DOWNLOADED", "UPDATING"),
        ("UPDATING", "SUCCEEDED"),
    ]
    query, upgrade = sent[:2]
    assert isinstance(query, CommandRecord)
    assert isinstance(upgrade, CommandRecord)
    assert (query.event_type, upgrade.event_type) == ("version_query", "firmware_upgrade")
    assert upgrade.paras["sign"] == SHA
    check = tokens.verify(
        wsettings.common.token_keys,
        upgrade.paras["access_token"],
        package_sha256=SHA,
        now_s=upgrade.at_ms // 1000,
        device_id=d,
    )
    assert check.verdict is tokens.Verdict.VALID
    assert check.expires_s == upgrade.at_ms // 1000 + 86_400


def test_timeouts_retry_then_fail(wsettings: WorkerSettings, inbox: Inbox) -> None:
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    worker = ThreadWorker(wsettings)
    quick = Windows(online_s=1, version_s=1)
    try:
        silent, offline = dev(), dev()
        inbox.online(silent)
        inbox.start(silent, "task-b", windows=quick, retry_count=1, retry_interval_s=1)
        inbox.online(offline, False)
        inbox.start(offline, "task-b", windows=quick)
        got = events.wait(
            lambda rs: reached(rs, silent, "FAILED") and reached(rs, offline, "FAILED")
        )
    finally:
        worker.stop()
        events.close()
    assert [(f, t) for _, f, t in transitions(got, silent)] == [
        ("QUEUED", "QUERYING_VERSION"),
        ("QUERYING_VERSION", "WAITING_RETRY"),
        ("WAITING_RETRY", "QUERYING_VERSION"),
        ("QUERYING_VERSION", "FAILED"),
    ]
    causes = {r.cause for r in got if isinstance(r, JobEventRecord) and r.to_state == "FAILED"}
    assert causes == {4, 3}  # VERSION_REPORT_TIMEOUT, ONLINE_TIMEOUT


def test_redelivered_records_change_nothing(
    wsettings: WorkerSettings, inbox: Inbox, wredis: redis.Redis[bytes]
) -> None:
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    worker = ThreadWorker(wsettings)
    d = dev()
    try:
        inbox.online(d)
        inbox.start(d, "task-c")
        inbox.version(d, "1.0")
        events.wait(lambda rs: reached(rs, d, "COMMAND_SENT"))
    finally:
        worker.stop()
    store = Store(wredis)
    partitions = range(4)
    before = {p: dump_partition(store, p) for p in partitions}
    # Every record again, straight into the apply path, as a redelivery would bring them.
    reader = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.inbox)
    polled = reader.consumer.poll(timeout_ms=5000)
    reader.close()
    for tp, records in polled.items():
        items = [InboxItem(r.offset, r.key, r.value, r.timestamp) for r in records]
        assert apply_partition(store, wsettings, tp.topic, tp.partition, items) is None
    # And a whole new consumer group reading the inbox from the start.
    again = ThreadWorker(replace(wsettings, group_id=wsettings.group_id + "-again"))
    try:
        _wait_assigned(again)
    finally:
        again.stop()
    assert {p: dump_partition(store, p) for p in partitions} == before
    assert len(transitions(events.drain(), d)) == 2
    events.close()


def _wait_assigned(worker: ThreadWorker) -> None:
    deadline = time.monotonic() + 30
    while len(worker.worker.owned()) < 4:
        assert time.monotonic() < deadline, "partitions never assigned"
        time.sleep(0.05)


def test_bad_records_are_dead_lettered_and_the_partition_moves_on(
    wsettings: WorkerSettings, inbox: Inbox
) -> None:
    letters = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.dead_letters)
    events = Reader(wsettings.common.kafka_bootstrap, wsettings.common.topics.job_events)
    worker = ThreadWorker(wsettings)
    d = dev()
    carrier = PresenceRecord(device_id=d, online=True)  # only its key is used
    bad_start = b'{"v":1,"kind":"job_start","id":"x","device_id":"%s"}' % d.encode()
    bad_report = (
        b'{"v":1,"kind":"device_event","id":"y","device_id":"%s","event_type":'
        b'"upgrade_progress_report","paras":{"result_code":"zero","version":"1"}}' % d.encode()
    )
    try:
        inbox.send(carrier, raw=b"\xff not json")
        inbox.send(carrier, raw=bad_start)
        inbox.send(carrier, raw=bad_report)
        inbox.online(d)
        inbox.start(d, "task-d")
        dead = letters.wait(lambda rs: len(rs) >= 3)
        events.wait(lambda rs: reached(rs, d, "QUERYING_VERSION"))
    finally:
        worker.stop()
        letters.close()
        events.close()
    assert all(isinstance(r, DeadLetterRecord) for r in dead)
    assert [r.reason for r in dead] == ["invalid_json", "missing_field", "bad_value"]
    assert all(r.key == d and r.origin.startswith(wsettings.common.topics.inbox) for r in dead)
