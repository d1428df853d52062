"""A broker that crashed announces no offline; the devices' reconnects after it returns come
as online presence naming new connections. On the real Kafka and Redis: such a notice makes
the worker send the pending version query again, and a repeat of it sends nothing; after
the command it sends the upgrade again under the same id and asks the version, and the
target version in the answer ends the job."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from workerkit import (
    TARGET,
    Inbox,
    Reader,
    ThreadWorker,
    make_settings,
    make_topics,
    reached,
    worker_redis,
)

from ota.records import CommandRecord, PresenceRecord
from workers.settings import WorkerSettings

SCRATCH_DB = 15  # its own database: the other worker tests flush 14 when they start


@pytest.fixture
def settings(
    kafka_bootstrap: str, redis_url: str, topic_factory: Callable[..., str]
) -> Iterator[WorkerSettings]:
    url = f"{redis_url.rsplit('/', 1)[0] if redis_url.count('/') > 2 else redis_url}/{SCRATCH_DB}"
    for _ in worker_redis(url):
        yield make_settings(kafka_bootstrap, url, make_topics(topic_factory, 4))


def commands_for(records: list[Any], device: str) -> list[str]:
    return [r.event_type for r in records if isinstance(r, CommandRecord) and r.device_id == device]


def test_reconnect_resends_the_query_and_a_repeat_sends_nothing(settings: WorkerSettings) -> None:
    inbox = Inbox(settings)
    events = Reader(settings.common.kafka_bootstrap, settings.common.topics.job_events)
    commands = Reader(settings.common.kafka_bootstrap, settings.common.topics.commands)
    worker = ThreadWorker(settings)
    d = f"dev-{uuid.uuid4().hex[:10]}"
    try:
        inbox.send(PresenceRecord(device_id=d, online=True, connection="1000-aaaaaaaa"))
        inbox.start(d, "task-r")
        first = commands.wait(lambda rs: len(commands_for(rs, d)) >= 1)
        assert commands_for(first, d) == ["version_query"]
        # The broker came back: the same device, a new connection, no offline before it.
        inbox.send(PresenceRecord(device_id=d, online=True, connection="2000-aaaaaaaa"))
        commands.wait(lambda rs: len(commands_for(rs, d)) >= 2)
        # A repeat of that notice, then the answer: the upgrade must follow the two queries
        # directly (one partition, applied in order), so the repeat sent nothing.
        inbox.send(PresenceRecord(device_id=d, online=True, connection="2000-aaaaaaaa"))
        inbox.version(d, "1.0")
        got = commands.wait(lambda rs: "firmware_upgrade" in commands_for(rs, d))
        events.wait(lambda rs: reached(rs, d, "COMMAND_SENT"))
    finally:
        worker.stop()
        inbox.close()
        events.close()
        commands.close()
    assert commands_for(got, d) == ["version_query", "version_query", "firmware_upgrade"]


def sent(records: list[Any], device: str) -> list[tuple[str, str]]:
    return [
        (r.event_type, r.id)
        for r in records
        if isinstance(r, CommandRecord) and r.device_id == device
    ]


def test_reconnect_after_the_command_resends_it_and_the_answer_ends_the_job(
    settings: WorkerSettings,
) -> None:
    inbox = Inbox(settings)
    events = Reader(settings.common.kafka_bootstrap, settings.common.topics.job_events)
    commands = Reader(settings.common.kafka_bootstrap, settings.common.topics.commands)
    worker = ThreadWorker(settings)
    d = f"dev-{uuid.uuid4().hex[:10]}"
    try:
        inbox.send(PresenceRecord(device_id=d, online=True, connection="1000-aaaaaaaa"))
        inbox.start(d, "task-c")
        inbox.version(d, "1.0")
        first = commands.wait(lambda rs: len(sent(rs, d)) >= 2)
        inbox.send(PresenceRecord(device_id=d, online=True, connection="2000-aaaaaaaa"))
        commands.wait(lambda rs: len(sent(rs, d)) >= 4)
        inbox.progress(d, 0, 10, "1.0")  # downloading: the reports now go on as usual
        events.wait(lambda rs: reached(rs, d, "DOWNLOADING"))
        inbox.send(PresenceRecord(device_id=d, online=True, connection="3000-aaaaaaaa"))
        got = commands.wait(lambda rs: len(sent(rs, d)) >= 5)
        inbox.version(d, TARGET)  # the answer: it upgraded, its result was lost
        events.wait(lambda rs: reached(rs, d, "SUCCEEDED"))
    finally:
        worker.stop()
        inbox.close()
        events.close()
        commands.close()
    upgrade = sent(first, d)[1]
    assert upgrade[0] == "firmware_upgrade"
    kinds = [kind for kind, _ in sent(got, d)]
    assert kinds == [
        "version_query",
        "firmware_upgrade",
        "firmware_upgrade",  # sent again on the reconnect, under the first one's id
        "version_query",
        "version_query",  # the reconnect in DOWNLOADING
    ]
    assert sent(got, d)[2] == upgrade
