"""One record consumer for every service, on either Kafka client.

`RecordConsumer` is the part of kafka-python's KafkaConsumer the services use (group
subscription with a rebalance listener, poll, commit, seek, pause/resume, manual
assignment for rebuilds), in kafka-python's vocabulary: `TopicPartition` and
`OffsetAndMetadata` (plain named tuples) and records with topic, partition, offset, key,
value and timestamp. kafka-python's consumer is one (ota/kafka_clients.GroupConsumer);
`ConfluentConsumer` puts confluent-kafka's (librdkafka) behind the same calls:

- The listener runs inside `poll`, on the polling thread, as kafka-python runs it. A seek
  asked for while partitions are being assigned becomes the start offset of their
  assignment (librdkafka cannot seek a partition before it is assigned).
- `commit()` with nothing consumed commits nothing (librdkafka calls that an error).
- `position` of a manually assigned partition not read yet is where reading will start
  (librdkafka reports no position until the first fetch).

`poll_paused` keeps a busy member in its group without reading (the gateway's downlink
while every publish slot is taken, the scheduler's consumers while a batch is applied);
`resume_all` ends it. `wait_for_partitions` holds a member back from joining until its
topics' metadata is known (one that joins before is assigned nothing until the next
metadata refresh). `read_to_end` reads assigned partitions from their first record to
where they ended when asked (the rebuilds).

librdkafka heartbeats on its own thread, so a consumer that stops polling stays in its
group until max.poll.interval.ms; every poll stamps the consumer's liveness beat
(ota/health.py) on both clients. A fatal librdkafka error (a static member fenced by a
newer one with its id, after its session ran out during a coordinator failover) raises
`FatalConsumerError` from `poll` and `commit`: the service exits and is restarted, rather
than polling a consumer that will never read again. A call librdkafka refuses raises a
`KafkaClientError` (errors: ota/kafka_errors.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata, OffsetAndTimestamp, TopicPartition

from ota.health import HEALTH, Beat
from ota.kafka_errors import (
    FatalConsumerError,
    KafkaClientError,
    carried_error,
    from_confluent,
    is_fatal,
    log_client_error,
)

log = logging.getLogger(__name__)

OFFSET_BEGINNING = -2  # librdkafka's logical offsets
OFFSET_END = -1
OFFSET_STORED = -1000  # the group's committed offset, else auto.offset.reset
_METADATA_TIMEOUT_S = 10.0
_METADATA_RETRY_S = 0.1  # how often wait_for_partitions asks again
_COMMITTED_PATIENCE_S = 60.0  # a coordinator failover takes Kafka's 9 s broker session
_COMMITTED_RETRY_S = 0.5


class Record(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


class Listener(Protocol):
    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None: ...
    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None: ...


Polled = dict[TopicPartition, list[Record]]


class RecordConsumer(Protocol):
    max_poll_records: int

    def subscribe(self, topics: list[str], listener: Any = None) -> None: ...
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Polled: ...
    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata] | None = None) -> None: ...
    def commit_async(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> Any: ...
    def committed(self, partition: TopicPartition) -> int | None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    def seek_to_beginning(self, *partitions: TopicPartition) -> None: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def paused(self) -> set[TopicPartition]: ...
    def assignment(self) -> set[TopicPartition]: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def assign_at(self, starts: dict[TopicPartition, int]) -> None: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]: ...
    def position(self, partition: TopicPartition) -> int: ...
    def close(self) -> None: ...


def poll_paused(consumer: RecordConsumer, timeout_ms: int) -> None:
    """One poll that reads nothing: the member answers rebalances and stays within
    max.poll.interval.ms while its caller is busy. Partitions a rebalance inside the poll
    assigned start unpaused: what they returned is sought back (read again once resumed)
    and they are paused too."""
    consumer.pause(*consumer.assignment())
    polled = consumer.poll(timeout_ms=timeout_ms)
    for tp, records in polled.items():
        if records:
            consumer.seek(tp, records[0].offset)
    consumer.pause(*consumer.assignment())


def resume_all(consumer: RecordConsumer) -> None:
    consumer.resume(*consumer.paused())


def read_to_end(
    consumer: RecordConsumer,
    partitions: list[TopicPartition],
    *,
    poll_ms: int = 500,
    max_records: int | None = None,
    since_ms: int | None = None,
    until: Mapping[TopicPartition, int] | None = None,
) -> Iterator[tuple[TopicPartition, list[Record]]]:
    """Assigns `partitions` and yields their records, polled batch by polled batch, from
    each one's first offset (or its first record stamped at or after `since_ms`) up to its
    end offset at the call, or `until[tp]` if lower (later records are left out)."""
    # Asked before `position`: ConfluentConsumer answers an unread partition's from them.
    ends = consumer.end_offsets(partitions)
    if since_ms is None:
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
    else:
        found = consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        # A partition with no record that late starts at its end: nothing read.
        consumer.assign_at({tp: ends[tp] if at is None else at.offset for tp, at in found.items()})
    if until is not None:
        ends = {tp: min(end, until.get(tp, end)) for tp, end in ends.items()}
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        for tp, records in consumer.poll(timeout_ms=poll_ms, max_records=max_records).items():
            below = [r for r in records if r.offset < ends[tp]]
            if below:
                yield tp, below


def wait_for_partitions(
    consumer: RecordConsumer,
    topics: Sequence[str],
    timeout_s: float,
    stopped: Callable[[], bool] = lambda: False,
) -> bool:
    """Whether every topic's partitions became known within `timeout_s` (False once
    `stopped()`)."""
    deadline = time.monotonic() + timeout_s
    while not stopped():
        if all(consumer.partitions_for_topic(topic) for topic in topics):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_METADATA_RETRY_S)
    return False


class _Record:
    __slots__ = ("key", "offset", "partition", "timestamp", "topic", "value")

    def __init__(self, message: Any) -> None:
        self.topic: str = message.topic()
        self.partition: int = message.partition()
        self.offset: int = message.offset()
        self.key: bytes | None = message.key()
        self.value: bytes | None = message.value()
        self.timestamp: int = message.timestamp()[1]


class ConfluentConsumer:
    def __init__(
        self,
        config: dict[str, Any],
        *,
        max_poll_records: int,
        group_id: str | None,
        leave: Callable[[], None] | None = None,
    ) -> None:
        from confluent_kafka import Consumer  # only where chosen: librdkafka starts threads

        self._fatal: str | None = None  # librdkafka's fatal error, once it reported one
        self.client = Consumer({**config, "error_cb": self._on_client_error})
        self._leave = leave  # takes a static member out of its group once closed
        self.max_poll_records = max_poll_records
        self._beat: Beat = HEALTH.beat(f"kafka-poll {group_id}")
        self._group_id = group_id
        # Registered by subscribe(); stamped after a poll while a member (`_member`).
        self._membership: Beat | None = None
        # An assignment arrived since the last revocation or loss. librdkafka reports these
        # callbacks on every rebalance and on a lost session (a fenced or timed-out member,
        # on_lost), while memberid() keeps its last id after a loss until the rejoin.
        self._member = False
        self._listener: Any = None
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._seeks: dict[TopicPartition, int] | None = None  # while partitions are assigned
        self._manual: dict[TopicPartition, int] | None = None  # start offsets of assign()
        self._keys: dict[tuple[str, int], TopicPartition] = {}
        # Watermarks last read (end_offsets): where an unread manual assignment starts.
        self._marks: dict[TopicPartition, tuple[int, int]] = {}

    def _on_client_error(self, error: Any) -> None:
        # librdkafka's error callback, and an error delivered as a consumed message: a Kafka
        # away passes (librdkafka reconnects by itself); a fatal one ends the consumer.
        log_client_error(error)
        self._note_fatal(error)

    def _note_fatal(self, error: Any) -> None:
        # The next poll or commit raises it.
        if is_fatal(error):
            self._fatal = f"{error.name()}: {error.str()}"

    def _check_alive(self) -> None:
        if self._fatal is not None:
            raise FatalConsumerError(self._fatal)

    # ------------------------------------------------------------------ group

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self._listener = listener
        if self._membership is None:
            self._membership = HEALTH.membership(str(self._group_id))
        self.client.subscribe(
            list(topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def _on_assign(self, client: Any, partitions: list[Any]) -> None:
        assigned = [TopicPartition(p.topic, p.partition) for p in partitions]
        self._member = True  # an empty assignment (more members than partitions) counts
        self._assigned = set(assigned)
        self._seeks = {}
        try:
            if self._listener is not None:
                self._listener.on_partitions_assigned(assigned)
        finally:
            seeks, self._seeks = self._seeks, None
        for p in partitions:
            p.offset = seeks.get(TopicPartition(p.topic, p.partition), p.offset)
        client.assign(partitions)
        # librdkafka keeps a partition's pause across a revocation and a new assignment,
        # while `_paused` forgot it at the revocation: nobody would ever resume it. An
        # assignment starts unpaused, as on kafka-python.
        client.resume(partitions)

    def _on_revoke(self, client: Any, partitions: list[Any]) -> None:
        revoked = [TopicPartition(p.topic, p.partition) for p in partitions]
        try:
            if self._listener is not None:
                self._listener.on_partitions_revoked(revoked)
        finally:
            self._member = False
            self._assigned.clear()
            self._paused.clear()
            client.unassign()

    def _on_lost(self, client: Any, partitions: list[Any]) -> None:
        log.warning(
            "kafka group membership lost; partitions revoked", extra={"count": len(partitions)}
        )
        self._on_revoke(client, partitions)

    # ------------------------------------------------------------------ reading

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Polled:
        self._check_alive()
        messages = self.client.consume(
            num_messages=max_records or self.max_poll_records, timeout=timeout_ms / 1000
        )
        self._beat()
        if self._member and self._membership is not None:
            self._membership()
        polled: Polled = {}
        keys = self._keys
        for message in messages:
            error = message.error()
            if error is not None:  # e.g. a static member fenced by a newer one with its id
                self._on_client_error(error)
                self._check_alive()
                continue
            place: Any = (message.topic(), message.partition())  # set on a consumed message
            tp = keys.get(place)
            if tp is None:
                tp = keys[place] = TopicPartition(*place)
            records = polled.get(tp)
            if records is None:
                records = polled[tp] = []
            records.append(_Record(message))
        return polled

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if self._seeks is not None:
            self._seeks[partition] = offset
        elif self._manual is not None and partition in self._manual:
            self._manual[partition] = offset
            self.client.assign([_ctp(tp, at) for tp, at in self._manual.items()])
        else:
            self._call(self.client.seek, _ctp(partition, offset))

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for partition in partitions or tuple(self.assignment()):
            self.seek(partition, OFFSET_BEGINNING)

    def pause(self, *partitions: TopicPartition) -> None:
        if partitions:
            self._call(self.client.pause, [_ctp(tp) for tp in partitions])
            self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        if partitions:
            self._call(self.client.resume, [_ctp(tp) for tp in partitions])
            self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def assignment(self) -> set[TopicPartition]:
        if self._manual is not None:
            return set(self._manual)
        return set(self._assigned)

    # ------------------------------------------------------------------ offsets

    def commit(self, offsets: dict[TopicPartition, OffsetAndMetadata] | None = None) -> None:
        try:
            if offsets is None:
                self.client.commit(asynchronous=False)
            elif offsets:
                self.client.commit(offsets=_offsets(offsets), asynchronous=False)
        except Exception as exc:
            error = carried_error(exc)
            if error is not None and error.name() == "_NO_OFFSET":
                return  # nothing consumed since the last commit
            if error is not None:
                self._note_fatal(error)
            self._check_alive()
            raise CommitFailedError(f"commit refused: {exc}") from exc

    def commit_async(self, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        if offsets:
            self._call(self.client.commit, offsets=_offsets(offsets), asynchronous=True)

    def committed(self, partition: TopicPartition) -> int | None:
        """The group's committed offset; asked again while the coordinator moves (as
        kafka-python does inside the call), for at most `_COMMITTED_PATIENCE_S`."""
        deadline = time.monotonic() + _COMMITTED_PATIENCE_S
        while True:
            try:
                [found] = self._call(
                    self.client.committed, [_ctp(partition)], timeout=_METADATA_TIMEOUT_S
                )
                return int(found.offset) if found.offset >= 0 else None
            except KafkaClientError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
                time.sleep(_COMMITTED_RETRY_S)

    def assign(self, partitions: list[TopicPartition]) -> None:
        self._manual = dict.fromkeys(partitions, OFFSET_STORED)
        self._call(self.client.assign, [_ctp(tp) for tp in partitions])

    def assign_at(self, starts: dict[TopicPartition, int]) -> None:
        """Take these partitions by hand, each read from its offset, in one assignment
        (librdkafka may keep fetching from an assignment's first offsets when a second
        one follows at once)."""
        self._manual = dict(starts)
        self._call(self.client.assign, [_ctp(tp, at) for tp, at in starts.items()])

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        metadata = self._call(self.client.list_topics, topic, timeout=_METADATA_TIMEOUT_S)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        return set(found.partitions)

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """One batched lookup for every partition (a watermark query per partition of an
        assigned consumer waits about 0.5 s each); keeps the first offsets too."""
        lows = self._offsets_at(partitions, OFFSET_BEGINNING)
        highs = self._offsets_at(partitions, OFFSET_END)
        for tp in partitions:
            self._marks[tp] = (lows[tp], highs[tp])
        return highs

    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """kafka-python's answer: each partition's first offset stamped at or after its
        time, None where no record is that late (the timestamp, which librdkafka does not
        give, is -1)."""
        found = self._call(
            self.client.offsets_for_times,
            [_ctp(tp, at) for tp, at in timestamps.items()],
            timeout=_METADATA_TIMEOUT_S,
        )
        return {
            TopicPartition(p.topic, p.partition): (
                OffsetAndTimestamp(int(p.offset), -1, -1) if p.offset >= 0 else None
            )
            for p in found
        }

    def _offsets_at(self, partitions: list[TopicPartition], at: int) -> dict[TopicPartition, int]:
        # Kafka's ListOffsets reads the timestamps -2 and -1 as the first and the end offset.
        found = self._call(
            self.client.offsets_for_times,
            [_ctp(tp, at) for tp in partitions],
            timeout=_METADATA_TIMEOUT_S,
        )
        return {TopicPartition(p.topic, p.partition): int(p.offset) for p in found}

    def position(self, partition: TopicPartition) -> int:
        [found] = self._call(self.client.position, [_ctp(partition)])
        if found.offset >= 0:
            return int(found.offset)
        start = (self._manual or {}).get(partition)
        known = self._marks.get(partition)  # asking the broker costs about 0.5 s
        if start is not None and start >= 0:
            return start  # sought to an offset, nothing read from it yet
        low, high = known if known is not None else self._watermarks(partition)
        return high if start == OFFSET_END else low

    def _watermarks(self, partition: TopicPartition) -> tuple[int, int]:
        low, high = self._call(
            self.client.get_watermark_offsets, _ctp(partition), timeout=_METADATA_TIMEOUT_S
        )
        self._marks[partition] = (int(low), int(high))
        return int(low), int(high)

    def close(self) -> None:
        HEALTH.retire(self._beat)
        if self._membership is not None:
            HEALTH.retire(self._membership)
        self.client.close()
        if self._leave is not None:
            self._leave()

    @staticmethod
    def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if carried_error(exc) is None:
                raise
            raise from_confluent(exc) from exc


def _ctp(partition: TopicPartition, offset: int | None = None) -> Any:
    from confluent_kafka import TopicPartition as Confluent

    if offset is None:
        return Confluent(partition.topic, partition.partition)
    return Confluent(partition.topic, partition.partition, offset)


def _offsets(offsets: dict[TopicPartition, OffsetAndMetadata]) -> list[Any]:
    return [_ctp(tp, meta.offset) for tp, meta in offsets.items()]
