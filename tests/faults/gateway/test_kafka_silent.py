"""Kafka stops acknowledging: the gateway stops acknowledging too, and loses nothing.

The local Kafka broker is paused with SIGSTOP for about three seconds and resumed with
SIGCONT: produce requests get no answer meanwhile. (A per-topic way does not exist on
this one-node Kafka 4.1: min.insync.replicas above the replication factor is capped to
it, so acks=all still succeeds; a missing topic blocks send() for max_block_ms instead
of leaving records unacknowledged.) Other engineers' clients on the shared broker only
see a few seconds of latency. While it lasts the gateway holds at most its in-flight
window unacknowledged; the broker keeps the rest for the gateway's session. Afterwards
every message arrives once, in the device's order.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from ota.metrics import REGISTRY
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
EVENT = "upgrade_progress_report"


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


def _received() -> float:
    value = REGISTRY.get_sample_value("ota_gateway_messages_in_total", {"type": EVENT})
    return value or 0.0


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
) -> None:
    stop_kafka, resume_kafka = kafka_pause
    inbox = readers(stack.topics.inbox)
    device_id = new_device("kdown")
    device = Device(stack, device_id)
    async with running_gateway(
        stack,
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
        before = _received()

        stop_kafka()
        try:
            for n in range(1, MESSAGES + 1):
                device.publish(up_topic(device_id), _payload(n))
            await _until(lambda: _received() - before >= 1, timeout_s=3.0)
            await asyncio.sleep(1.0)  # Kafka stays silent a while longer
            # Unacknowledged, the gateway is sent no more than its window (its receive
            # maximum): the broker holds the rest for its session. How much of the window
            # the broker fills while acknowledgements are held is the broker's choice (the
            # project's broker sends what was queued when it last polled; a full window
            # pauses the gateway's reading, which tests/unit/gateway covers).
            taken = _received() - before
            assert 1 <= taken <= IN_FLIGHT
            assert _paused() == (1.0 if taken == IN_FLIGHT else 0.0)
        finally:
            resume_kafka()

        wanted = [f"e{n}" for n in range(MESSAGES + 1)]
        records = await inbox.wait_for(
            lambda rs: len(_event_ids(rs, device_id)) >= len(wanted), timeout_s=60
        )
        await _until(lambda: _paused() == 0.0)
        assert _received() - before == MESSAGES
    await device.close()
    assert _event_ids(records, device_id) == wanted  # each once, in the device's order
