"""One record producer for every service, on either Kafka client.

`RecordProducer` is what the services see: `send` hands a record over and returns its
`Delivery`, settled once Kafka acknowledged it (acks=all) or gave up on it; `flush` waits
for everything handed over; `knows(topic)` says without waiting whether a send to the
topic finds its metadata (else `send` and `partitions_for` block until it is fetched);
`wakeups()` lets a burst of sends share one wake-up of the client's network thread. Two
clients implement it (OTA_KAFKA_CLIENT):

- `confluent-kafka` (librdkafka, C): a record costs the calling thread about a tenth of
  what kafka-python's pure-Python batching does (bench/kafka_clients_bench.py). A thread of
  this module serves its delivery reports; its partitioner is murmur2, Kafka's Java
  default, so a key lands on the partition kafka-python and the workers' partitioner give.
- `kafka-python`: its own futures are already deliveries; errors are translated.

Errors (ota/kafka_errors.py) reach callers as `KafkaClientError`s for a refused `send`, a
`flush` that timed out (`FlushTimeoutError`) and a confluent-kafka delivery; a kafka-python
delivery fails with kafka-python's own error. `worth_retrying` answers for any of them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.partitioner import DefaultPartitioner
from kafka.partitioner.abc import Partitioner
from kafka.partitioner.default import murmur2

from ota.kafka_errors import FlushTimeoutError, KafkaClientError, from_confluent, translate

log = logging.getLogger(__name__)

_POLL_S = 0.05  # the delivery thread's longest wait: close() is noticed within it
# How often the delivery thread re-reads the partition counts of the topics asked about:
# a topic may gain partitions, and `partitions_for` must not wait on the network.
_PARTITIONS_REFRESH_S = 10.0
# Each refresh's wait for Kafka: short, since deliveries (and close) wait behind it, and
# while Kafka is down every refresh waits out its timeout.
_REFRESH_TIMEOUT_S = 1.0
_QUEUE_FULL_WAIT_S = 0.05  # a full librdkafka queue: serve deliveries this long, try again


class Delivery(Protocol):
    """A record's fate. Callbacks run on the client's thread (or at once if settled)."""

    is_done: bool
    exception: BaseException | None

    def failed(self) -> bool: ...
    def add_callback(self, fn: Callable[[Any], object]) -> object: ...
    def add_errback(self, fn: Callable[[BaseException], object]) -> object: ...
    def get(self, timeout: float | None = None) -> Any: ...


class Wakeups(Protocol):
    def hold(self) -> None: ...
    def release(self) -> None: ...


class RecordProducer(Protocol):
    # Whether the client maps a keyed record to its partition itself at no cost to the
    # caller (librdkafka, in C); else the caller may pass the partition it computed once.
    partitions_keys: bool

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> Delivery: ...
    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        on_done: Callable[[Any], object],
    ) -> None:
        """`send` without a Delivery, for hot paths: `on_done` gets the record's metadata
        or its exception once, on the client's thread. Raises as `send` does."""

    def flush(self, timeout: float | None = None) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...
    def partitions_for(self, topic: str) -> set[int] | None: ...
    def knows(self, topic: str) -> bool: ...
    def reachable(self, topic: str, timeout_s: float) -> bool: ...
    def wakeups(self) -> Wakeups: ...


# --- kafka-python ------------------------------------------------------------------------


class WakeupHold:
    """Between `hold()` and `release()`, the holding thread's sends do not wake the
    producer's sender thread; `release()` wakes it once if any of them asked to (a flush
    or a wait for metadata wakes it at once, held or not).

    kafka-python 3.0.12 wakes the sender (a socket write, then a pass of the sender
    thread competing for the GIL) on every send that starts a new batch, which is most
    of them when a burst spreads a few records over many partitions. A wake-up only makes
    the sender look at the new batches sooner, and a batch is not sent before linger_ms
    anyway: a release within the linger of the first held send delays no record. Other
    threads' wake-ups (close, another sender of the same producer) go through at once.
    """

    def __init__(self, producer: KafkaProducer) -> None:
        self._sender = producer._sender
        self._metadata = producer._metadata
        self._accumulator = producer._accumulator
        self._holder: int | None = None
        self._wanted = False

    def hold(self) -> None:
        self._holder = threading.get_ident()
        self._sender.wakeup = self._note  # shadows the method on this instance only

    def release(self) -> None:
        del self._sender.wakeup
        self._holder = None
        if self._wanted:
            self._wanted = False
            self._sender.wakeup()

    def _note(self) -> None:
        if (
            threading.get_ident() == self._holder
            and not self._metadata.need_update
            and not self._accumulator.flush_in_progress()
        ):
            self._wanted = True
        else:
            type(self._sender).wakeup(self._sender)


_HASHES_MAX = 200_000


class KeyHashPartitioner(Partitioner):  # type: ignore[misc]
    """Kafka's default partitioning of keyed records (murmur2 of the key modulo the topic's
    partition count) with each key's hash computed once: a service sends several records
    per device and kafka-python's partitioner is pure Python."""

    def __init__(self) -> None:
        self._fallback = DefaultPartitioner()
        self._hashes: dict[bytes, int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            result: int = self._fallback.partition(
                topic, key, serialized_key, value, serialized_value, cluster
            )
            return result
        hashed = self._hashes.get(serialized_key)
        if hashed is None:
            if len(self._hashes) >= _HASHES_MAX:
                self._hashes.clear()
            hashed = self._hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        # Kafka numbers a topic's partitions 0..n-1: the default partitioner's
        # sorted(partitions)[hash % n] is hash % n.
        return hashed % len(partitions)


class KafkaPythonProducer:
    """kafka-python's KafkaProducer; its FutureRecordMetadata is the delivery. A failed
    delivery's exception stays kafka-python's (it carries `retriable`); callers that need
    the name translate it (ota.kafka_errors.translate)."""

    partitions_keys = False  # its partitioner is pure Python, run per record

    def __init__(self, client: KafkaProducer) -> None:
        self.client = client

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> Delivery:
        try:
            delivery: Delivery = self.client.send(topic, value=value, key=key, partition=partition)
        except (KafkaError, ValueError) as exc:  # no metadata in time, closed, bad topic
            raise translate(exc) from exc
        return delivery

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        on_done: Callable[[Any], object],
    ) -> None:
        delivery = self.send(topic, value, key, partition)
        delivery.add_callback(on_done)
        delivery.add_errback(on_done)

    def flush(self, timeout: float | None = None) -> None:
        try:
            self.client.flush(timeout)
        except KafkaError as exc:
            raise FlushTimeoutError(f"flush: {exc}") from exc

    def close(self, timeout: float | None = None) -> None:
        self.client.close(timeout=timeout)

    def partitions_for(self, topic: str) -> set[int] | None:
        try:
            known: set[int] | None = self.client.partitions_for(topic)
        except KafkaError as exc:
            raise translate(exc) from exc
        return known

    def knows(self, topic: str) -> bool:
        """Whether a send to the topic finds its metadata (never waits: the client's own
        `partitions_for` and `send` block until they have it)."""
        return self.client._metadata.partitions_for_topic(topic) is not None

    def reachable(self, topic: str, timeout_s: float) -> bool:
        """Whether the client holds a connection to a broker now (kafka-python's sender
        thread owns the network: this reads its connection table, never waits)."""
        network = self.client._sender._client
        return any(network.connected(b.node_id) for b in self.client._metadata.brokers())

    def wakeups(self) -> Wakeups:
        return WakeupHold(self.client)


# --- confluent-kafka ---------------------------------------------------------------------


class ConfluentDelivery:
    """Settled once by librdkafka's delivery report, on the delivery thread."""

    __slots__ = ("_callbacks", "_done", "_errbacks", "_lock", "exception", "is_done", "value")

    def __init__(self) -> None:
        self.is_done = False
        self.exception: BaseException | None = None
        self.value: Any = None
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[Any], object]] = []
        self._errbacks: list[Callable[[BaseException], object]] = []
        self._done: threading.Event | None = None

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def report(self, error: Any, message: Any) -> None:
        """librdkafka's delivery report: `error` is a KafkaError or None."""
        if error is None:
            self.settle(message, None)
        else:
            self.settle(None, from_confluent(error))

    def settle(self, value: Any, exception: BaseException | None) -> None:
        with self._lock:
            self.value, self.exception, self.is_done = value, exception, True
            callbacks, errbacks = self._callbacks, self._errbacks
            self._callbacks, self._errbacks = [], []
            done = self._done
        if done is not None:
            done.set()
        if exception is None:
            for fn in callbacks:
                _call(fn, value)
        else:
            for errback in errbacks:
                _call(errback, exception)

    def add_callback(self, fn: Callable[[Any], object]) -> ConfluentDelivery:
        with self._lock:
            if not self.is_done:
                self._callbacks.append(fn)
                return self
        if self.exception is None:
            _call(fn, self.value)
        return self

    def add_errback(self, fn: Callable[[BaseException], object]) -> ConfluentDelivery:
        with self._lock:
            if not self.is_done:
                self._errbacks.append(fn)
                return self
        if self.exception is not None:
            _call(fn, self.exception)
        return self

    def get(self, timeout: float | None = None) -> Any:
        with self._lock:
            if not self.is_done and self._done is None:
                self._done = threading.Event()
            done = self._done
        if done is not None and not done.wait(timeout):
            raise KafkaClientError("no delivery report in time", retriable=True, name="Timeout")
        if self.exception is not None:
            raise self.exception
        return self.value


def _call(fn: Callable[[Any], object], value: Any) -> None:
    try:
        fn(value)
    except Exception:  # one caller's bug must not stop the delivery thread
        log.exception("delivery callback failed")


class _NoWakeups:
    """librdkafka's own thread batches by linger.ms; a send costs it no wake-up."""

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass


class ConfluentProducer:
    """confluent_kafka.Producer with a thread of its own serving delivery reports."""

    partitions_keys = True  # murmur2_random, in C

    def __init__(self, client: Any, *, queue_full_timeout_s: float = 60.0) -> None:
        self.client = client
        self._queue_full_timeout_s = queue_full_timeout_s
        self._partitions: dict[str, set[int]] = {}
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-deliveries", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        poll = self.client.poll
        refreshed = time.monotonic()
        while not self._closed.is_set():
            try:
                poll(_POLL_S)
            except Exception:  # a report that could not be handled must not end the thread
                log.exception("kafka delivery report failed")
            if time.monotonic() - refreshed > _PARTITIONS_REFRESH_S:
                for topic in list(self._partitions):
                    if self._closed.is_set():
                        break
                    with contextlib.suppress(KafkaClientError):
                        self._read_partitions(topic, timeout_s=_REFRESH_TIMEOUT_S)
                refreshed = time.monotonic()  # from the end: while Kafka is down, waits never chain

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        partition: int | None = None,
    ) -> Delivery:
        delivery = ConfluentDelivery()
        self._produce(topic, value, key, partition, delivery.report)
        return delivery

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        on_done: Callable[[Any], object],
    ) -> None:
        # No ConfluentDelivery (a lock and two lists) per record: the report goes to
        # `on_done` directly.
        def report(error: Any, message: Any) -> None:
            _call(on_done, message if error is None else from_confluent(error))

        self._produce(topic, value, key, partition, report)

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        partition: int | None,
        report: Callable[[Any, Any], None],
    ) -> None:
        waited = 0.0
        while True:
            try:
                if partition is None:
                    self.client.produce(topic, value, key, on_delivery=report)
                else:
                    self.client.produce(topic, value, key, partition=partition, on_delivery=report)
                return
            except BufferError as exc:  # librdkafka's queue is full: Kafka away or slow
                if waited >= self._queue_full_timeout_s:
                    raise KafkaClientError(
                        f"producer queue full for {waited:.0f} s", retriable=True, name="QueueFull"
                    ) from exc
                self._closed.wait(_QUEUE_FULL_WAIT_S)  # the delivery thread drains meanwhile
                waited += _QUEUE_FULL_WAIT_S
            except Exception as exc:  # KafkaException (closed, unknown topic), TypeError
                raise from_confluent(exc) from exc

    def flush(self, timeout: float | None = None) -> None:
        left = self.client.flush(-1 if timeout is None else timeout)
        if left:
            raise FlushTimeoutError(f"{left} records unacknowledged after {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        with contextlib.suppress(FlushTimeoutError):
            self.flush(timeout)
        self._closed.set()
        self._thread.join()

    def partitions_for(self, topic: str) -> set[int] | None:
        """The topic's partitions: asks Kafka the first time (blocking), then answers from
        what the delivery thread keeps up to date."""
        known = self._partitions.get(topic)
        return known if known is not None else self._read_partitions(topic)

    def knows(self, topic: str) -> bool:
        """Whether `partitions_for` answers without asking Kafka (produce never waits for
        metadata: librdkafka queues the record until it has it)."""
        return topic in self._partitions

    def reachable(self, topic: str, timeout_s: float) -> bool:
        """Whether Kafka answers a metadata request for `topic` within `timeout_s` (a
        round trip to a broker: librdkafka does not answer it from its cache)."""
        try:
            self.client.list_topics(topic, timeout=timeout_s)
        except Exception:  # KafkaException: _TRANSPORT, _TIMED_OUT, all brokers down
            return False
        return True

    def _read_partitions(self, topic: str, timeout_s: float = 10.0) -> set[int] | None:
        try:
            metadata = self.client.list_topics(topic, timeout=timeout_s)
        except Exception as exc:
            raise from_confluent(exc) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return None
        known = self._partitions[topic] = set(found.partitions)
        return known

    def wakeups(self) -> Wakeups:
        return _NoWakeups()
