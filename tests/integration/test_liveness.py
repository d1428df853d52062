"""A real Kafka consumer's liveness beat (ota/kafka_clients.py, ota/health.py): registered
when the consumer is made (unready until its first poll), stamped by every poll, empty
ones included, stale once polls stop, retired on close. The clock is moved by hand."""

from __future__ import annotations

import uuid

import pytest

from ota.health import HEALTH
from ota.kafka_clients import make_consumer
from ota.settings import CommonSettings
from tests.conftest import TopicFactory


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    hand = Clock()
    monkeypatch.setattr(HEALTH, "clock", hand)  # beats made from here on read it
    monkeypatch.setattr(HEALTH, "limit_s", 30.0)
    return hand


def mine(reasons: tuple[str, ...], group: str) -> list[str]:
    return [r for r in reasons if r.endswith(f"kafka-poll {group}")]


def test_every_poll_stamps_the_consumer_beat(
    kafka_bootstrap: str, topic_factory: TopicFactory, clock: Clock
) -> None:
    topic = topic_factory("liveness")
    group = f"liveness-{uuid.uuid4().hex[:8]}"
    settings = CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap})
    consumer = make_consumer(settings, group_id=group, client_id="liveness-test")
    closed = False
    try:
        assert mine(HEALTH.ready().reasons, group) == [f"starting: kafka-poll {group}"]
        assert mine(HEALTH.live().reasons, group) == []

        consumer.subscribe([topic])
        assert consumer.poll(timeout_ms=200) == {}  # empty: still a turn of the loop
        assert mine(HEALTH.ready().reasons, group) == []

        clock.now += 31.0  # no poll for longer than the limit: a stuck consumer
        assert mine(HEALTH.live().reasons, group) == [f"stale: kafka-poll {group}"]
        consumer.poll(timeout_ms=0)
        assert mine(HEALTH.live().reasons, group) == []

        consumer.close()
        closed = True
        clock.now += 3600.0  # a consumer closed on purpose is not a stuck one
        assert mine(HEALTH.live().reasons, group) == []
        assert mine(HEALTH.ready().reasons, group) == []
    finally:
        if not closed:
            consumer.close()
