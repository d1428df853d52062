"""A broker that crashed announces no offline; the devices' reconnects after it returns come
as online presence naming new connections. On the real Kafka and Redis: such a notice makes
the worker send the pending version query again, and a repeat of it sends nothing."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from workerkit import (
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
