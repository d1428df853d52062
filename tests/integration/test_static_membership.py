"""Static group membership on the real Kafka (ota.kafka_clients.GroupConsumer): a member
killed and started again under its instance id takes its partitions straight back, and a
member closed on purpose hands them over at once, both well inside a session timeout that
would otherwise decide."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from ota.kafka_clients import GroupConsumer, make_consumer
from ota.settings import CommonSettings
from tests.conftest import TopicFactory

SESSION_MS = 60_000  # what a dynamic member's replacement would wait out
WITHIN_S = 20.0  # far under SESSION_MS: only static membership gets here in time

# A member in a process of its own, so that it can die without leaving the group.
MEMBER = """
import json, sys
from ota.kafka_clients import make_consumer
from ota.settings import CommonSettings
bootstrap, topic, group, instance, session_ms = sys.argv[1:6]
consumer = make_consumer(
    CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": bootstrap}), group_id=group,
    group_instance_id=instance, session_timeout_ms=int(session_ms), heartbeat_interval_ms=1000,
)
consumer.subscribe([topic])
while True:
    consumer.poll(200)
    print(json.dumps(sorted(tp.partition for tp in consumer.assignment())), flush=True)
"""


def _spawn(bootstrap: str, topic: str, group: str, instance: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", MEMBER, bootstrap, topic, group, instance, str(SESSION_MS)],
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill(member: subprocess.Popen[str]) -> None:
    member.kill()
    member.wait()
    assert member.stdout is not None
    member.stdout.close()


def _owns_two(member: subprocess.Popen[str]) -> list[int]:
    assert member.stdout is not None
    for line in member.stdout:
        owned: list[int] = json.loads(line)
        if len(owned) == 2:
            return owned
    raise AssertionError(f"member exited ({member.poll()}) before it owned two partitions")


@pytest.fixture
def group_and_topic(kafka_bootstrap: str, topic_factory: TopicFactory) -> tuple[str, str]:
    return f"test-static-{uuid.uuid4().hex[:8]}", topic_factory("static-membership", 4)


@pytest.fixture
def stayer(kafka_bootstrap: str, group_and_topic: tuple[str, str]) -> Iterator[GroupConsumer]:
    group, topic = group_and_topic
    consumer = make_consumer(
        CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap}),
        group_id=group,
        group_instance_id="stayer",
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=1000,
    )
    consumer.subscribe([topic])
    yield consumer
    consumer.close()


def _poll_until(consumer: GroupConsumer, owned: int, within_s: float) -> float:
    started = time.monotonic()
    while len(consumer.assignment()) != owned:
        assert time.monotonic() - started < within_s, f"never owned {owned} partitions"
        consumer.poll(200)
    return time.monotonic() - started


def test_a_killed_member_restarted_under_its_id_takes_its_partitions_back(
    kafka_bootstrap: str, group_and_topic: tuple[str, str], stayer: GroupConsumer
) -> None:
    group, topic = group_and_topic
    first = _spawn(kafka_bootstrap, topic, group, "worker-0")
    try:
        _poll_until(stayer, 2, WITHIN_S * 3)
        owned = _owns_two(first)
    finally:
        _kill(first)
    second = _spawn(kafka_bootstrap, topic, group, "worker-0")
    try:
        started = time.monotonic()
        assert _owns_two(second) == owned
        assert time.monotonic() - started < WITHIN_S
        stayer.poll(200)
        assert len(stayer.assignment()) == 2  # nothing moved to the member that stayed
    finally:
        _kill(second)


def test_a_static_member_closed_on_purpose_hands_its_partitions_over(
    kafka_bootstrap: str, group_and_topic: tuple[str, str], stayer: GroupConsumer
) -> None:
    group, topic = group_and_topic
    leaving = make_consumer(
        CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap}),
        group_id=group,
        group_instance_id="leaving",
        session_timeout_ms=SESSION_MS,
        heartbeat_interval_ms=1000,
    )
    leaving.subscribe([topic])
    started = time.monotonic()
    while not (len(leaving.assignment()) == 2 and len(stayer.assignment()) == 2):
        assert time.monotonic() - started < WITHIN_S * 3, "the two members never split"
        leaving.poll(100)
        stayer.poll(100)
    leaving.close()
    assert _poll_until(stayer, 4, WITHIN_S) < WITHIN_S
