"""ConfluentConsumer's own logic over a stand-in for librdkafka's client (the real client
against the real Kafka is in the integration and fault suites): records grouped by
partition, errors that pass skipped, a fatal error ending the consumer for good (whether
consumed, reported to the error callback or refusing a commit), each client error logged
once, a refused call raised as a KafkaClientError, a commit of nothing, seeks during an
assignment becoming its start offsets; and the helpers every member uses (the paused
poll, the wait for topic metadata, reading to the end offsets)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as Confluent
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, TopicPartition

from ota.kafka_consumer import (
    OFFSET_BEGINNING,
    ConfluentConsumer,
    poll_paused,
    read_to_end,
    resume_all,
    wait_for_partitions,
)
from ota.kafka_errors import FatalConsumerError, KafkaClientError


class Message:
    def __init__(self, partition: int = 0, offset: int = 0, error: Any = None) -> None:
        self._partition, self._offset, self._error = partition, offset, error

    def error(self) -> Any:
        return self._error

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v%d" % self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1234)


class Client:
    def __init__(self) -> None:
        self.batches: list[list[Message]] = []
        self.commits: list[Any] = []
        self.assigned: list[Any] = []
        self.commit_error: KafkaException | None = None
        self.pause_error: KafkaException | None = None

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        return self.batches.pop(0) if self.batches else []

    def commit(self, **kwargs: Any) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append(kwargs)

    def pause(self, partitions: list[Any]) -> None:
        if self.pause_error is not None:
            raise self.pause_error

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = partitions

    def resume(self, partitions: list[Any]) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def consumer() -> tuple[ConfluentConsumer, Client]:
    made = ConfluentConsumer(
        {"bootstrap.servers": "127.0.0.1:1", "group.id": "unit"},
        max_poll_records=100,
        group_id="unit",
    )
    made.client.close()
    fake = Client()
    made.client = fake  # type: ignore[assignment]
    return made, fake


def test_records_are_grouped_by_partition_and_passing_errors_skipped(
    consumer: tuple[ConfluentConsumer, Client],
) -> None:
    made, client = consumer
    transport = KafkaError(KafkaError._TRANSPORT)
    client.batches = [[Message(0, 5), Message(1, 7), Message(error=transport), Message(0, 6)]]
    polled = made.poll(timeout_ms=10)
    assert {tp: [r.offset for r in rs] for tp, rs in polled.items()} == {
        TopicPartition("t", 0): [5, 6],
        TopicPartition("t", 1): [7],
    }
    record = polled[TopicPartition("t", 0)][0]
    assert (record.key, record.value, record.timestamp) == (b"k", b"v5", 1234)


@pytest.mark.parametrize("code", [KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID])
def test_a_fatal_error_ends_the_consumer_for_good(
    consumer: tuple[ConfluentConsumer, Client], code: int
) -> None:
    made, client = consumer
    client.batches = [[Message(error=KafkaError(code))], [Message(0, 1)]]
    with pytest.raises(FatalConsumerError):
        made.poll(timeout_ms=10)
    with pytest.raises(FatalConsumerError):  # and every later poll, records or not
        made.poll(timeout_ms=10)


def test_client_errors_are_logged_once_and_a_fatal_one_reported_to_the_callback_ends_it(
    consumer: tuple[ConfluentConsumer, Client], caplog: pytest.LogCaptureFixture
) -> None:
    made, client = consumer
    caplog.set_level(logging.WARNING)
    client.batches = [[Message(error=KafkaError(KafkaError._TRANSPORT)), Message(0, 1)]]
    assert list(made.poll(timeout_ms=10)) == [TopicPartition("t", 0)]
    made._on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))  # librdkafka's error_cb
    made.poll(timeout_ms=10)  # a Kafka away passes
    made._on_client_error(KafkaError(KafkaError.FENCED_INSTANCE_ID))
    with pytest.raises(FatalConsumerError, match="FENCED_INSTANCE_ID"):
        made.poll(timeout_ms=10)
    assert [(r.levelno, r.code) for r in caplog.records] == [  # type: ignore[attr-defined]
        (logging.WARNING, "_TRANSPORT"),
        (logging.WARNING, "_ALL_BROKERS_DOWN"),
        (logging.ERROR, "FENCED_INSTANCE_ID"),
    ]


def test_a_call_librdkafka_refuses_raises_a_client_error_and_changes_nothing(
    consumer: tuple[ConfluentConsumer, Client],
) -> None:
    made, client = consumer
    client.pause_error = KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
    with pytest.raises(KafkaClientError) as refused:
        made.pause(TopicPartition("t", 9))
    assert (refused.value.name, refused.value.retriable) == ("_UNKNOWN_PARTITION", False)
    assert made.paused() == set()


def test_a_commit_refused_as_fenced_ends_the_consumer(
    consumer: tuple[ConfluentConsumer, Client],
) -> None:
    made, client = consumer
    client.commit_error = KafkaException(KafkaError(KafkaError.FENCED_INSTANCE_ID))
    with pytest.raises(FatalConsumerError):
        made.commit({TopicPartition("t", 0): OffsetAndMetadata(3, "", -1)})


def test_a_commit_of_nothing_is_no_error_and_others_are_commit_failures(
    consumer: tuple[ConfluentConsumer, Client],
) -> None:
    made, client = consumer
    client.commit_error = KafkaException(KafkaError(KafkaError._NO_OFFSET))
    made.commit()
    client.commit_error = KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
    with pytest.raises(CommitFailedError):
        made.commit()


def test_seeks_during_an_assignment_become_its_start_offsets(
    consumer: tuple[ConfluentConsumer, Client],
) -> None:
    made, client = consumer

    class Listener:
        def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
            made.seek(assigned[0], 42)
            made.seek_to_beginning(assigned[1])

        def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
            pass

    made._listener = Listener()
    made._on_assign(client, [Confluent("t", 0), Confluent("t", 1), Confluent("t", 2)])
    assert [(p.partition, p.offset) for p in client.assigned] == [
        (0, 42),
        (1, OFFSET_BEGINNING),
        (2, Confluent("t", 2).offset),
    ]
    assert made.assignment() == {TopicPartition("t", p) for p in range(3)}


@dataclass(frozen=True)
class Polled:
    offset: int


class Member:
    """A group member whose poll lets a rebalance assign partition 1 and read from it."""

    def __init__(self) -> None:
        self.assigned = {TopicPartition("t", 0)}
        self.paused_now: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused_now.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused_now.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_now)

    def poll(self, timeout_ms: int) -> dict[TopicPartition, list[Polled]]:
        assert self.paused_now == self.assigned  # nothing already owned is read
        self.assigned.add(TopicPartition("t", 1))
        return {TopicPartition("t", 1): [Polled(8), Polled(9)]}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))


def test_a_paused_poll_reads_nothing_even_from_partitions_assigned_during_it() -> None:
    member = Member()
    poll_paused(member, timeout_ms=10)  # type: ignore[arg-type]
    assert member.seeks == [(TopicPartition("t", 1), 8)]  # read again once resumed
    assert member.paused() == {TopicPartition("t", 0), TopicPartition("t", 1)}
    resume_all(member)  # type: ignore[arg-type]
    assert member.paused() == set()


class Metadata:
    """Knows topic `t`'s partitions from the `known_after`th question on; `u` never."""

    def __init__(self, known_after: int) -> None:
        self.asked = 0
        self.known_after = known_after

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        self.asked += 1
        return {0, 1} if topic == "t" and self.asked >= self.known_after else None


def test_waiting_for_partitions_asks_until_known_and_gives_up_at_the_bound() -> None:
    metadata = Metadata(known_after=3)
    assert wait_for_partitions(metadata, ["t"], timeout_s=30)  # type: ignore[arg-type]
    assert metadata.asked == 3
    assert not wait_for_partitions(Metadata(1), ["t", "u"], timeout_s=0)  # type: ignore[arg-type]
    never = Metadata(1)
    assert not wait_for_partitions(never, ["t"], timeout_s=30, stopped=lambda: True)  # type: ignore[arg-type]
    assert never.asked == 0


class Partitions:
    """Two partitions read two records a poll; partition 0 gains records 3 and 4 after
    its end offset was asked."""

    def __init__(self) -> None:
        self.written = {TopicPartition("t", 0): 5, TopicPartition("t", 1): 1}
        self.ends = {TopicPartition("t", 0): 3, TopicPartition("t", 1): 1}
        self.at: dict[TopicPartition, int] = {}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.at = dict.fromkeys(partitions, 99)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.at.update(dict.fromkeys(partitions, 0))

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in partitions}

    def position(self, partition: TopicPartition) -> int:
        return self.at[partition]

    def poll(self, timeout_ms: int, max_records: int | None) -> dict[TopicPartition, list[Polled]]:
        polled = {}
        for tp, at in self.at.items():
            offsets = range(at, min(at + 2, self.written[tp]))
            if offsets:
                polled[tp] = [Polled(offset) for offset in offsets]
                self.at[tp] = offsets[-1] + 1
        return polled


def test_reading_to_the_end_stops_at_the_end_offsets_of_the_call() -> None:
    partitions = Partitions()
    read = [
        (tp.partition, [r.offset for r in records])
        for tp, records in read_to_end(partitions, list(partitions.ends))  # type: ignore[arg-type]
    ]
    assert read == [(0, [0, 1]), (1, [0]), (0, [2])]  # not 3 and 4, written later


def test_reading_until_given_offsets_stops_at_the_lower_of_them_and_the_end() -> None:
    partitions = Partitions()
    until = {TopicPartition("t", 0): 1, TopicPartition("t", 1): 7}
    read = [
        (tp.partition, [r.offset for r in records])
        for tp, records in read_to_end(partitions, list(partitions.ends), until=until)  # type: ignore[arg-type]
    ]
    assert read == [(0, [0]), (1, [0])]
