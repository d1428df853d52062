"""Kafka stops acknowledging: the gateway stops acknowledging too, and loses nothing.

The local Kafka broker is paused with SIGSTOP for about three seconds and resumed with
SIGCONT: produce requests get no answer meanwhile. (A per-topic way does not exist on
this one-node Kafka 4.1: min.insync.replicas above the replication factor is capped to
it, so acks=all still succeeds; a missing topic blocks send() for max_block_ms instead
of leaving records unacknowledged.) Other engineers' clients on the shared broker only
see a few seconds of latency. While it lasts the gateway holds at most its in-flight
window unacknowledged; the broker keeps the rest for the gateway's session. Afterwards
every message arrives once, in the device's order.

The gateway subscribes to every device's uplink, so on the shared broker it also takes
other devices' uplinks (a rollout benchmark's fleet, other tests' devices): the window is
read from the gateway's in-flight gauge, which counts them too, and this device's
deliveries are counted at the gateway's uplink handler, by topic.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from gateway.inbound import Inbound
from ota.metrics import REGISTRY
from ota.mqtt import Ack
from ota.protocol import up_topic
from ota.records import CommandRecord, DeviceEventRecord, encode
from tests.conftest import missing
from tests.integration.gateway.conftest import (
    REPO,
    Device,
    KafkaReader,
    Stack,
    new_device,
    running_gateway,
)

IN_FLIGHT = 10
MESSAGES = 60


def _kafka_pid() -> int:
    state = Path(os.environ.get("OTA_STATE_DIR", REPO / ".state"))
    pid_file = state / "kafka" / "kafka.pid"
    if not pid_file.exists():
        missing(f"no local Kafka pid file at {pid_file}")
    return int(pid_file.read_text().strip())


@pytest.fixture
def kafka_pause() -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """stop()/resume() for the broker process; always resumed at the end."""
    pid = _kafka_pid()
    yield (lambda: os.kill(pid, signal.SIGSTOP)), (lambda: os.kill(pid, signal.SIGCONT))
    os.kill(pid, signal.SIGCONT)


def _payload(n: int) -> bytes:
    return orjson.dumps(
        {
            "services": [
                {
                    "service_id": "$ota",
                    "event_type": "upgrade_progress_report",
                    "event_id": f"e{n}",
                    "paras": {"result_code": 0, "progress": n, "version": "2.0"},
                }
            ]
        }
    )


def _event_ids(records: list[Any], device_id: str) -> list[str | None]:
    return [
        r.device_event_id
        for r in records
        if isinstance(r, DeviceEventRecord) and r.device_id == device_id
    ]


def _paused() -> float | None:
    return REGISTRY.get_sample_value("ota_gateway_uplink_paused")


def _in_flight() -> float | None:
    return REGISTRY.get_sample_value("ota_gateway_in_flight", {"direction": "uplink"})


def counting(deliveries: Counter[str]) -> type[Inbound]:
    """The production uplink handler, counting the messages delivered to it by topic."""

    class CountingInbound(Inbound):
        def receive(self, topic: str, payload: bytes, qos: int, ack: Ack) -> None:
            deliveries[topic] += 1
            super().receive(topic, payload, qos, ack)

    return CountingInbound


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_kafka_not_answering_holds_acknowledgements_and_loses_nothing(
    stack: Stack,
    readers: Callable[[str], KafkaReader],
    kafka_producer: KafkaProducer,
    kafka_pause: tuple[Callable[[], None], Callable[[], None]],
    devices: Callable[[str], Device],
) -> None:
    stop_kafka, resume_kafka = kafka_pause
    inbox = readers(stack.topics.inbox)
    device_id = new_device("kdown")
    device = devices(device_id)
    deliveries: Counter[str] = Counter()

    def received() -> int:
        return deliveries[up_topic(device_id)]

    async with running_gateway(
        stack,
        counting(deliveries),
        OTA_GATEWAY_UPLINK_IN_FLIGHT=str(IN_FLIGHT),
        OTA_GATEWAY_PRESENCE_SOURCE="none",
    ):
        await device.connect()
        device.publish(up_topic(device_id), _payload(0))
        await inbox.wait_for(lambda rs: _event_ids(rs, device_id) == ["e0"])
        # A command through the gateway proves its command consumer is up too: Kafka must
        # not stop while that consumer is still starting (its start then blocks for the
        # request timeout and the test would measure that instead).
        query = CommandRecord(device_id=device_id, event_type="version_query", paras={}, at_ms=1)
        kafka_producer.send(stack.topics.commands, key=device_id.encode(), value=encode(query))
        kafka_producer.flush()
        await _until(lambda: len(device.received) == 1)
        before = received()

        stop_kafka()
        try:
            for n in range(1, MESSAGES + 1):
                device.publish(up_topic(device_id), _payload(n))
            await _until(lambda: (_in_flight() or 0.0) >= 1, timeout_s=3.0)
            await asyncio.sleep(1.0)  # Kafka stays silent a while longer
            # Unacknowledged, the gateway is sent no more than its window (its receive
            # maximum): the broker holds the rest for its session. How much of the window
            # the broker fills while acknowledgements are held is the broker's choice (the
            # project's broker sends what was queued when it last polled; a full window
            # pauses the gateway's reading, which tests/unit/gateway covers). Other
            # devices' uplinks may take some or all of it.
            held = _in_flight() or 0.0
            assert 1 <= held <= IN_FLIGHT
            assert received() - before <= held
            # Reading stops when the window is full and resumes once it is half empty (the
            # window may have filled with other devices' uplinks just before Kafka stopped).
            full, half_empty = held == IN_FLIGHT, held <= IN_FLIGHT // 2
            assert _paused() in ({1.0} if full else {0.0} if half_empty else {0.0, 1.0})
        finally:
            resume_kafka()

        wanted = [f"e{n}" for n in range(MESSAGES + 1)]
        records = await inbox.wait_for(
            lambda rs: len(_event_ids(rs, device_id)) >= len(wanted), timeout_s=60
        )
        await _until(lambda: _paused() == 0.0)
        assert received() - before == MESSAGES  # each delivered to the gateway once
    assert _event_ids(records, device_id) == wanted  # each once, in the device's order
