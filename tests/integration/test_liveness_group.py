"""A real group consumer's membership beat (ota/kafka_clients.py, ota/kafka_consumer.py,
ota/health.py), on both clients: once the consumer has joined its group, every poll
stamps it; without a stamp for longer than the group limit /livez names the group; a
consumer given partitions by hand has no group to check. The clock is moved by hand."""

from __future__ import annotations

import time
import uuid

import pytest
from kafka.structs import TopicPartition

from ota.health import HEALTH
from ota.kafka_clients import make_consumer
from ota.settings import KAFKA_CLIENTS, CommonSettings
from tests.conftest import TopicFactory

JOIN_DEADLINE_S = 30.0  # a first join takes a few seconds (the group's initial delay)


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
    monkeypatch.setattr(HEALTH, "group_limit_s", 120.0)
    return hand


def groupless(group: str) -> list[str]:
    return [r for r in HEALTH.live().reasons if r.startswith(f"no group: {group} ")]


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_a_joined_member_stamps_its_membership_on_every_poll(
    kafka_bootstrap: str, topic_factory: TopicFactory, clock: Clock, client: str
) -> None:
    topic = topic_factory("liveness-group", partitions=2)
    group = f"liveness-group-{uuid.uuid4().hex[:8]}"
    settings = CommonSettings.from_env(
        {"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, "OTA_KAFKA_CLIENT": client}
    )
    consumer = make_consumer(settings, group_id=group, client_id="liveness-group-test")
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + JOIN_DEADLINE_S
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"{client}: no assignment in {JOIN_DEADLINE_S} s"
            consumer.poll(timeout_ms=200)
        consumer.poll(timeout_ms=0)  # a member now: this poll stamps the membership
        assert f"group {group}" in HEALTH.live().fresh

        clock.now += 121.0  # no poll, so no stamp, for longer than the group limit
        assert groupless(group) == [f"no group: {group} for 121 s"]
        consumer.poll(timeout_ms=0)  # still the member: stamped again
        assert groupless(group) == []
    finally:
        consumer.close()
    clock.now += 3600.0  # a consumer closed on purpose has no group to keep
    assert groupless(group) == []
    assert f"group {group}" not in HEALTH.live().fresh


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_a_consumer_assigned_by_hand_has_no_group_to_check(
    kafka_bootstrap: str, topic_factory: TopicFactory, clock: Clock, client: str
) -> None:
    topic = topic_factory("liveness-manual")
    group = f"liveness-manual-{uuid.uuid4().hex[:8]}"
    settings = CommonSettings.from_env(
        {"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, "OTA_KAFKA_CLIENT": client}
    )
    consumer = make_consumer(settings, group_id=group, client_id="liveness-manual-test")
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.poll(timeout_ms=200)
        clock.now += 3600.0
        consumer.poll(timeout_ms=0)
        assert groupless(group) == []
        assert f"group {group}" not in HEALTH.live().fresh
    finally:
        consumer.close()
