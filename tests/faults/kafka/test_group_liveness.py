"""A consumer whose Kafka dies loses its group and, polling on, is reported out of it
(`no group: <group>` on /livez, ota/health.py), then counts as a member again once Kafka
is back and it rejoined; on both clients, against a private one-node Kafka killed with
SIGKILL (the shared one serves everyone). The health clock is moved by hand: each turn
moves it past the group limit, so only a poll made as a member clears the verdict."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from ota.health import HEALTH
from ota.kafka_clients import make_consumer
from ota.kafka_consumer import RecordConsumer
from ota.settings import KAFKA_CLIENTS, CommonSettings
from tests.kafka_kit import PrivateKafka, running_kafka

GROUP_LIMIT_S = 120.0
SESSION_TIMEOUT_MS = 6_000  # how soon a member cut off from its coordinator gives up
DEADLINE_S = 90.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    hand = Clock()
    monkeypatch.setattr(HEALTH, "clock", hand)
    monkeypatch.setattr(HEALTH, "group_limit_s", GROUP_LIMIT_S)
    return hand


@pytest.fixture
def kafka_node(tmp_path: Path) -> Iterator[PrivateKafka]:
    with running_kafka(tmp_path / "kafka", partitions=2) as node:
        yield node


def groupless(group: str) -> bool:
    return any(r.startswith(f"no group: {group} ") for r in HEALTH.live().reasons)


def poll_until(consumer: RecordConsumer, clock: Clock, group: str, *, out: bool) -> None:
    """Poll, the clock past the group limit before each poll, until the consumer is
    reported out of its group (`out`) or a member again."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        clock.now += GROUP_LIMIT_S + 1.0
        consumer.poll(timeout_ms=200)
        if groupless(group) == out:
            return
        assert time.monotonic() < deadline, f"still {'in' if out else 'out of'} {group}"


@pytest.mark.timeout(400)
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
def test_a_consumer_cut_off_from_kafka_is_reported_out_of_its_group_then_back(
    kafka_node: PrivateKafka, clock: Clock, client: str
) -> None:
    topic, group = f"liveness.{uuid.uuid4().hex[:8]}", f"liveness-lost-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_node.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)], timeout_ms=30_000)
    finally:
        admin.close()
    settings = CommonSettings.from_env(
        {"OTA_KAFKA_BOOTSTRAP": kafka_node.bootstrap, "OTA_KAFKA_CLIENT": client}
    )
    consumer = make_consumer(
        settings,
        group_id=group,
        client_id="liveness-lost-test",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1_000,
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + DEADLINE_S
        while not consumer.assignment():
            assert time.monotonic() < deadline, "never joined"
            consumer.poll(timeout_ms=200)
        poll_until(consumer, clock, group, out=False)  # a member stamps on every poll

        kafka_node.kill()
        poll_until(consumer, clock, group, out=True)  # polling on, but out of the group

        kafka_node.start()
        poll_until(consumer, clock, group, out=False)  # rejoined
    finally:
        consumer.close()
