"""A batch whose records the producer gave up on (Kafka away past the delivery timeout)
is sent again from memory, oldest first, and only becomes committable once Kafka took
it; a record Kafka refused for good still stops the worker."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.structs import TopicPartition

import workers.consumer as consumer_module
from ota.backoff import Backoff
from ota.metrics import REGISTRY
from workers.batch import COMMANDS, JOB_EVENTS, Output
from workers.consumer import Worker
from workers.settings import WorkerSettings


class Future:
    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def settle(self, error: BaseException | None = None) -> None:
        self.is_done, self.exception = True, error


class Wakeups:
    def hold(self) -> None:
        return None

    def release(self) -> None:
        return None


class Producer:
    """Records every send; its futures are settled by the test."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, Future]] = []

    def wakeups(self) -> Wakeups:
        return Wakeups()

    def send(self, topic: str, value: bytes, key: bytes) -> Future:
        future = Future()
        self.sent.append((topic, value, future))
        return future


def _worker(producer: Producer) -> Worker:
    settings = WorkerSettings.from_env({"OTA_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    return Worker(settings, consumer=None, producer=producer, store=None)  # type: ignore[arg-type]


def _outputs(n: int) -> list[Output]:
    return [Output(COMMANDS if i % 2 else JOB_EVENTS, b"d1", b"v%d" % i) for i in range(n)]


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: Any) -> None:
    monkeypatch.setattr(consumer_module, "RESEND", Backoff(0.5, 5.0, rand=lambda: 0.0))


def test_a_batch_the_producer_gave_up_on_is_sent_again_then_committed() -> None:
    producer = Producer()
    worker = _worker(producer)
    tp = TopicPartition("inbox", 3)
    worker._send(tp, 10, _outputs(2))
    worker._send(tp, 11, _outputs(1))
    first, second, third = (f for _, _, f in producer.sent)
    first.settle(KafkaTimeoutError("delivery timed out"))
    second.settle()
    third.settle()
    assert worker._acked() == []  # nothing past the failed batch is committable
    assert [v for _, v, _ in producer.sent[3:]] == [b"v0", b"v1"]  # the whole batch again
    for _, _, future in producer.sent[3:]:
        future.settle()
    assert worker._acked() == [(3, 10), (3, 11)]
    assert worker._to_commit == {tp: 11}
    assert worker._unacked == 0


def test_a_record_refused_for_good_still_stops_the_worker() -> None:
    producer = Producer()
    worker = _worker(producer)
    worker._send(TopicPartition("inbox", 0), 5, _outputs(1))
    producer.sent[0][2].settle(MessageSizeTooLargeError("too large"))
    with pytest.raises(MessageSizeTooLargeError):
        worker._acked()


class RecordingBackoff(Backoff):
    """No waits; remembers which retry number each delay was asked for."""

    def __init__(self) -> None:
        super().__init__(0.5, 5.0, rand=lambda: 0.0)
        object.__setattr__(self, "asked", [])

    def delay_s(self, attempt: int) -> float:
        self.asked.append(attempt)  # type: ignore[attr-defined]
        return 0.0


def _retries() -> float:
    sample = REGISTRY.get_sample_value("ota_retries_total", {"operation": "workers.resend"})
    return sample or 0.0


def test_resends_are_counted_and_their_backoff_restarts_once_through(monkeypatch: Any) -> None:
    policy = RecordingBackoff()
    monkeypatch.setattr(consumer_module, "RESEND", policy)
    producer = Producer()
    worker = _worker(producer)
    tp = TopicPartition("inbox", 1)
    before = _retries()
    worker._send(tp, 20, _outputs(1))
    producer.sent[0][2].settle(KafkaTimeoutError("delivery timed out"))
    worker._acked()
    producer.sent[1][2].settle(KafkaTimeoutError("delivery timed out"))
    worker._acked()
    producer.sent[2][2].settle()
    assert worker._acked() == [(1, 20)]
    worker._send(tp, 21, _outputs(1))  # a later outage starts from the first delay again
    producer.sent[3][2].settle(KafkaTimeoutError("delivery timed out"))
    worker._acked()
    assert policy.asked == [0, 1, 0]  # type: ignore[attr-defined]
    assert _retries() == before + 3
