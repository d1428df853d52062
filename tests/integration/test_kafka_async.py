"""The services' asyncio producer (ota/kafka_async.py) and the scheduler's sends on it
(scheduler/bus.Producer) against a real Kafka, on both clients: a send is an awaitable
delivery result; a bounded send answers within its timeout while Kafka is away, the
event loop running meanwhile; a patient send resends, in order, what Kafka did not take
during an outage, and completes once Kafka is back; a record refused for good ends it at
once.

The outage tests stop a private Kafka (tests/kafka_kit.py), never the shared one."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

import ota.kafka_clients
import scheduler.bus
from ota.backoff import Backoff
from ota.kafka_async import AsyncProducer
from ota.kafka_clients import make_producer
from ota.kafka_errors import KafkaClientError
from ota.metrics import REGISTRY
from ota.settings import KAFKA_CLIENTS, CommonSettings
from scheduler.bus import Out, Producer
from tests.kafka_kit import PrivateKafka, running_kafka

PARTITIONS = 3
BOUND_S = 3.0  # the bounded sends' timeout here (the service's is 30 s)


def _settings(bootstrap: str, client: str) -> CommonSettings:
    return CommonSettings.from_env({"OTA_KAFKA_BOOTSTRAP": bootstrap, "OTA_KAFKA_CLIENT": client})


def _read_back(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        seen: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(seen) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen += [(r.key, r.value) for r in records]
        return seen
    finally:
        consumer.close()


def _send_retries() -> float:
    return REGISTRY.get_sample_value("ota_retries_total", {"operation": "scheduler.send"}) or 0.0


def _create_topic(bootstrap: str) -> str:
    topic = f"async-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="async-producer-test")
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        admin.close()
    return topic


class _LoopWatch:
    """The longest the event loop went without running this ticker: a blocked loop shows."""

    def __init__(self) -> None:
        self.longest_gap_s = 0.0
        self._task = asyncio.ensure_future(self._tick())

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            self.longest_gap_s = max(self.longest_gap_s, now - last)
            last = now

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateKafka]:
    with running_kafka(tmp_path_factory.mktemp("async-kafka"), partitions=PARTITIONS) as node:
        yield node


@pytest.fixture
async def kafka_back(private_kafka: PrivateKafka) -> AsyncIterator[PrivateKafka]:
    """The private Kafka, running again after the test whatever it stopped. kafka-python
    leaves a socket unclosed per connection Kafka refused while it was down: they are
    collected here with their ResourceWarning silenced, not in a later test."""
    yield private_kafka
    if private_kafka.process is None or private_kafka.process.poll() is not None:
        await asyncio.to_thread(private_kafka.start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.parametrize("client", KAFKA_CLIENTS)
async def test_send_is_an_awaitable_delivery_in_key_order(
    client: str, kafka_bootstrap: str, topic_factory: Callable[..., str]
) -> None:
    topic = topic_factory("async-send", partitions=PARTITIONS)
    kafka = await asyncio.to_thread(
        make_producer, _settings(kafka_bootstrap, client), client_id="async-send-test"
    )
    producer = AsyncProducer(kafka, asyncio.get_running_loop())
    try:
        await producer.learn_topic(topic)
        sent = [(f"device-{n % 7}".encode(), f"{n}".encode()) for n in range(300)]
        deliveries = [producer.send(topic, key, value) for key, value in sent]
        assert not any(d.done() for d in deliveries)  # settled by Kafka's answer, not here
        assert await asyncio.wait_for(asyncio.gather(*deliveries), 30) == [None] * len(sent)
    finally:
        await producer.close(10)
    seen = await asyncio.to_thread(_read_back, kafka_bootstrap, topic, len(sent))
    for key in {key for key, _ in sent}:  # one key, one partition: in the order sent
        assert [v for k, v in seen if k == key] == [v for k, v in sent if k == key]


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")  # see kafka_back
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
@pytest.mark.parametrize("topic_known", [True, False], ids=["topic-known", "topic-unknown"])
async def test_a_bounded_send_fails_in_time_while_kafka_is_away(
    client: str, topic_known: bool, kafka_back: PrivateKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler.bus, "SEND_TIMEOUT_S", BOUND_S)
    topic = await asyncio.to_thread(_create_topic, kafka_back.bootstrap)
    producer = await asyncio.to_thread(Producer, _settings(kafka_back.bootstrap, client))
    try:
        await producer.send([Out(topic, "device-1", b"while kafka answers")])
        if not topic_known:  # a topic the producer has never sent to: metadata to fetch
            topic = await asyncio.to_thread(_create_topic, kafka_back.bootstrap)
        await asyncio.to_thread(kafka_back.stop)
        watch = _LoopWatch()
        started = time.monotonic()
        with pytest.raises(KafkaClientError) as refused:
            await producer.send([Out(topic, "device-1", b"while kafka is away")])
        took = time.monotonic() - started
        await watch.stop()
        assert refused.value.retriable
        assert BOUND_S - 0.1 <= took < BOUND_S + 5, took
        assert watch.longest_gap_s < 1.0, "the send blocked the event loop"
    finally:
        # Once Kafka is back the records waiting in the producer are delivered on close.
        await asyncio.to_thread(kafka_back.start)
        await producer.close()


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")  # see kafka_back
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
async def test_a_patient_send_resends_in_order_what_kafka_did_not_take(
    client: str, kafka_back: PrivateKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Records give up after 3 s instead of 5 min, so the outage fails them: the patient
    # send, not the client, has to send them again.
    monkeypatch.setattr(ota.kafka_clients, "DELIVERY_TIMEOUT_MS", 3_000)
    monkeypatch.setattr(ota.kafka_clients, "REQUEST_TIMEOUT_MS", 1_000)
    monkeypatch.setattr(scheduler.bus, "SEND_RETRY", Backoff(0.05, 0.2))
    topic = await asyncio.to_thread(_create_topic, kafka_back.bootstrap)
    producer = await asyncio.to_thread(Producer, _settings(kafka_back.bootstrap, client))
    try:
        await producer.send([Out(topic, "device-1", b"0")])
        await asyncio.to_thread(kafka_back.stop)
        before = _send_retries()
        values = [f"{n}".encode() for n in range(1, 51)]
        sending = asyncio.ensure_future(
            producer.send([Out(topic, "device-1", v) for v in values], patient=True)
        )
        while _send_retries() == before:  # the deliveries failed and were resent
            assert not sending.done(), "the patient send ended while Kafka was away"
            await asyncio.sleep(0.1)
        await asyncio.to_thread(kafka_back.start)
        await asyncio.wait_for(sending, 120)
    finally:
        await producer.close()
    seen = await asyncio.to_thread(_read_back, kafka_back.bootstrap, topic, 1 + len(values))
    got = [v for _, v in seen]
    # Every record once, in order. A delivery that timed out while the restarted broker
    # was slow may have been written all the same: sent again, it is there twice (the
    # consumers deduplicate by record id), the second copy in order too.
    assert list(dict.fromkeys(got)) == [b"0", *values]
    again = got[1 + len(values) :]
    assert again == sorted(again, key=int), again


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")  # see kafka_back
@pytest.mark.parametrize("client", KAFKA_CLIENTS)
async def test_a_refusal_for_good_ends_a_patient_send_at_once_while_kafka_is_away(
    client: str, kafka_back: PrivateKafka
) -> None:
    topic = await asyncio.to_thread(_create_topic, kafka_back.bootstrap)
    producer = await asyncio.to_thread(Producer, _settings(kafka_back.bootstrap, client))
    try:
        await producer.send([Out(topic, "device-1", b"0")])
        await asyncio.to_thread(kafka_back.stop)
        before = _send_retries()
        waiting = Out(topic, "device-1", b"1")  # waits for Kafka (delivery timeout: 5 min)
        too_large = Out(topic, "device-2", b"x" * 2_000_000)  # above the 1 MB Kafka takes
        with pytest.raises(KafkaClientError) as refused:
            await asyncio.wait_for(producer.send([waiting, too_large], patient=True), 30)
        assert not refused.value.retriable
        assert _send_retries() == before  # not taken for a pause
    finally:
        await asyncio.to_thread(kafka_back.start)
        await producer.close()
