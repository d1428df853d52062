"""The uplink window drains: far more mixed messages than the window, through a gateway
process (under uvloop, as deployed), are all acknowledged and delivered.

The gateway asks the broker for a receive maximum equal to its window, so the broker never
has more than a window's worth of its messages unacknowledged: if any acknowledgement were
lost (a PUBACK not written, a message whose ack is never called), delivery would stop at
the window, as it did when PUBACKs were not written under uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from gateway.slots import slot_of
from ops.demo_env import free_port
from ota.protocol import up_topic
from ota.records import DeadLetterRecord, DeviceEventRecord
from tests.integration.gateway.conftest import (
    Device,
    KafkaReader,
    Stack,
    gateway_process,
    kill_hard,
    new_device,
    wait_log,
)

WINDOW = 8
ROUNDS = 12  # per device; each round publishes 5 messages
REPLICAS = 2


def _event(event_id: str) -> dict[str, Any]:
    return {
        "service_id": "$ota",
        "event_type": "version_report",
        "event_id": event_id,
        "paras": {"fw_version": "1.0", "sw_version": "s1"},
    }


def _devices(owned: bool, count: int) -> list[str]:
    found: list[str] = []
    while len(found) < count:
        device = new_device("win")
        if (slot_of(device, REPLICAS) == 0) == owned:
            found.append(device)
    return found


def _gauge(port: int, line_start: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _until(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_more_than_the_window_of_mixed_uplinks_all_acknowledged_and_delivered(
    stack: Stack, readers: Callable[[str], KafkaReader]
) -> None:
    inbox = readers(stack.topics.inbox)
    letters = readers(stack.topics.dead_letters)
    mine, theirs = _devices(True, 3), _devices(False, 2)
    metrics_port = free_port()
    process = gateway_process(
        stack,
        OTA_GATEWAY_UPLINK_IN_FLIGHT=str(WINDOW),
        OTA_GATEWAY_REPLICAS=str(REPLICAS),
        OTA_GATEWAY_INDEX="0",
        OTA_GATEWAY_PRESENCE_SOURCE="none",
        OTA_GATEWAY_SESSION_EXPIRY_S="5",
        OTA_GATEWAY_METRICS_PORT=str(metrics_port),
    )
    devices: list[Device] = []
    try:
        wait_log(process, "gateway started")
        assert process.stderr is not None
        # Keep reading its log so a full pipe never blocks the gateway.
        threading.Thread(target=process.stderr.read, daemon=True).start()
        expected: Counter[tuple[str, str]] = Counter()
        malformed: Counter[str] = Counter()
        for device_id in mine + theirs:
            device = Device(stack, device_id)
            await device.connect()
            devices.append(device)
        await asyncio.sleep(0)
        for n in range(ROUNDS):
            for device in devices:
                topic, ours = up_topic(device.device_id), device.device_id in mine
                single = orjson.dumps({"services": [_event(f"s{n}")]})
                device.publish(topic, single)
                device.publish(topic, single)  # a duplicate: delivered again, same id
                device.publish(
                    topic, orjson.dumps({"services": [_event(f"m{n}a"), _event(f"m{n}b")]})
                )
                device.publish(topic, orjson.dumps({"services": [_event(f"q{n}")]}), qos=0)
                device.publish(topic, b"{not json")
                if ours:
                    for event_id in (f"s{n}", f"s{n}", f"m{n}a", f"m{n}b", f"q{n}"):
                        expected[device.device_id, event_id] += 1
                    malformed[device.device_id] += 1
            await asyncio.sleep(0)  # let the devices' writes go out round by round

        def events(records: list[Any]) -> Counter[tuple[str, str]]:
            return Counter(
                (r.device_id, r.device_event_id or "")
                for r in records
                if isinstance(r, DeviceEventRecord) and r.device_id in mine + theirs
            )

        def letters_of(records: list[Any]) -> Counter[str]:
            return Counter(
                r.key or ""
                for r in records
                if isinstance(r, DeadLetterRecord) and r.key in mine + theirs
            )

        assert sum(expected.values()) + len(theirs) * ROUNDS * 5 > 10 * WINDOW
        got = await inbox.wait_for(lambda rs: events(rs) == expected, timeout_s=60)
        dead = await letters.wait_for(lambda rs: letters_of(rs) == malformed, timeout_s=30)
        assert events(got) == expected  # nothing of the other replica's devices
        assert all(r.reason == "invalid_json" for r in dead if r.key in mine)
        # The window returns to zero (other uplinks on the shared broker pass through too).
        gauge = 'ota_gateway_in_flight{direction="uplink"}'
        await _until(lambda: _gauge(metrics_port, gauge) == 0.0, timeout_s=30)
        foreign = _gauge(metrics_port, 'ota_gateway_messages_in_total{type="foreign"}')
        assert foreign is not None
        assert foreign >= len(theirs) * ROUNDS * 4  # their QoS 0 copies may be dropped

        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        for device in devices:
            with contextlib.suppress(Exception):
                await device.close()
        if process.poll() is None:
            kill_hard(process)
        elif process.stderr is not None:
            process.stderr.close()
