"""The uplink handler's contract, with a scripted stand-in for the Kafka bridge:
PUBACK (return) only after every record was acknowledged, retries on failure, and
reading pauses at the in-flight bound."""

from __future__ import annotations

import asyncio

import orjson

from gateway.inbound import Inbound
from gateway.kafka_bridge import ProduceError
from gateway.settings import GatewaySettings
from ota.backoff import Backoff
from ota.protocol import up_topic
from ota.records import decode


class ScriptedProducer:
    """Hands out futures the test resolves; records what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.futures: list[asyncio.Future[None]] = []

    def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, key, value))
        self.futures.append(future)
        return future


def _inbound(producer: ScriptedProducer, limit: int, calls: list[str]) -> Inbound:
    settings = GatewaySettings.from_env(
        {"OTA_GATEWAY_UPLINK_IN_FLIGHT": str(limit), "OTA_GATEWAY_PRESENCE_SOURCE": "mosquitto"}
    )
    return Inbound(
        settings,
        producer,  # type: ignore[arg-type]
        None,
        pause_reading=lambda: calls.append("pause"),
        resume_reading=lambda: calls.append("resume"),
        backoff=Backoff(0.001, 0.001),
    )


PAYLOAD = orjson.dumps(
    {"services": [{"service_id": "$ota", "event_type": "version_report", "paras": {}}]}
)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_returns_only_after_kafka_acknowledged() -> None:
    producer, calls = ScriptedProducer(), list[str]()
    inbound = _inbound(producer, 10, calls)
    handled = asyncio.create_task(inbound.handle(up_topic("d1"), PAYLOAD, 1))
    await _settle()
    assert not handled.done()
    assert [decode(v).kind for _, _, v in producer.sent] == ["device_event", "presence"]
    for future in producer.futures:
        future.set_result(None)
    assert await handled == 0
    assert inbound.idle.is_set()


async def test_failed_records_are_sent_again_with_the_same_id() -> None:
    producer, calls = ScriptedProducer(), list[str]()
    inbound = _inbound(producer, 10, calls)
    handled = asyncio.create_task(inbound.handle(up_topic("d1"), PAYLOAD, 1))
    await _settle()
    producer.futures[0].set_exception(ProduceError("KafkaTimeoutError", retriable=True))
    producer.futures[1].set_result(None)
    for _ in range(100):
        if len(producer.sent) == 3:
            break
        await asyncio.sleep(0.002)
    assert not handled.done()
    assert producer.sent[2] == producer.sent[0]  # only the failed record, unchanged
    producer.futures[2].set_result(None)
    assert await handled == 0


async def test_reading_pauses_at_the_bound_and_resumes_at_half() -> None:
    producer, calls = ScriptedProducer(), list[str]()
    inbound = _inbound(producer, 4, calls)
    tasks = [asyncio.create_task(inbound.handle(up_topic(f"d{n}"), PAYLOAD, 1)) for n in range(4)]
    await _settle()
    assert calls == ["pause"]
    assert inbound.in_flight == 4
    for future in producer.futures[:4]:  # two devices' records
        future.set_result(None)
    await _settle()
    assert calls == ["pause", "resume"]
    for future in producer.futures[4:]:
        future.set_result(None)
    assert await asyncio.gather(*tasks) == [0, 0, 0, 0]


async def test_foreign_slot_is_acknowledged_without_kafka() -> None:
    producer = ScriptedProducer()
    settings = GatewaySettings.from_env({"OTA_GATEWAY_REPLICAS": "2", "OTA_GATEWAY_INDEX": "0"})
    inbound = Inbound(settings, producer, None, lambda: None, lambda: None)  # type: ignore[arg-type]
    # crc32("devA") % 2 == 1: another replica's device.
    assert await inbound.handle(up_topic("devA"), PAYLOAD, 1) == 0
    assert producer.sent == []
