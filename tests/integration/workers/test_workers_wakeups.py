"""`ota.kafka_producer.WakeupHold` (kafka-python's `wakeups()`) with a real producer: a held burst of sends wakes the
sender thread once, at release, and every record still arrives; a flush, or another
thread's send, is never held."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from ota.kafka_clients import make_producer
from ota.kafka_producer import KafkaPythonProducer
from ota.settings import CommonSettings

PARTITIONS = 6


@pytest.fixture
def producer(kafka_bootstrap: str) -> Iterator[KafkaPythonProducer]:
    settings = CommonSettings.from_env(
        {"OTA_KAFKA_BOOTSTRAP": kafka_bootstrap, "OTA_KAFKA_CLIENT": "kafka-python"}
    )
    client = make_producer(settings, client_id="wakeup-test", linger_ms=0)
    assert isinstance(client, KafkaPythonProducer)
    yield client
    client.close(timeout=5)


def test_a_held_burst_wakes_the_sender_once_and_is_delivered(
    producer: KafkaPythonProducer, topic_factory: Callable[..., str], wakeups: list[str]
) -> None:
    topic = topic_factory("wakeups", partitions=PARTITIONS)
    producer.partitions_for(topic)  # metadata first: a send waiting for it is never held
    hold = producer.wakeups()
    wakeups.clear()
    hold.hold()
    futures = [producer.send(topic, value=b"v", partition=p) for p in range(PARTITIONS)]
    assert wakeups == []  # each of those started a batch: unheld, six wake-ups
    hold.release()
    assert len(wakeups) == 1
    for future in futures:
        assert future.get(timeout=10).topic == topic


def test_flush_and_other_threads_are_never_held(
    producer: KafkaPythonProducer, topic_factory: Callable[..., str], wakeups: list[str]
) -> None:
    topic = topic_factory("wakeups", partitions=PARTITIONS)
    producer.partitions_for(topic)
    hold = producer.wakeups()
    wakeups.clear()
    hold.hold()
    try:
        other = threading.Thread(
            target=lambda: producer.send(topic, value=b"o", partition=0), name="other"
        )
        other.start()
        other.join(10)
        assert wakeups == ["other"]
        producer.send(topic, value=b"h", partition=1)
        producer.flush(timeout=10)  # would wait for the held wake-up if flush were held
        assert len(wakeups) == 2
    finally:
        hold.release()
